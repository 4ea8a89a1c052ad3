# SPDX-License-Identifier: Apache-2.0
"""The monitoring role refuses bad input with a message naming the variable before it
changes anything: a threshold that is not a number (argument spec), one out of range, an
unknown alert name to silence, an extra rule that does not parse (promtool on the
controller, before any host sees the file). It runs against this machine (connection
local, check mode) and must stop in its argument spec or preflight."""

import json
import os
import shutil
import sys

import pytest

from tests.integration.role_check import (assert_host_refused_before_any_change, assert_refused_before_any_change,
                                          role_play, run_cases_as_hosts, run_role_check)


SERVERS = {"triton_servers": {"hosts": {"gpu-a": {"ansible_host": "127.0.0.1", "triton_server_metrics_port": 8002}}}}


def _run(tmp_path, overrides, env_overrides=None):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"children": dict(SERVERS, triton_monitoring={"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}})}}), encoding="utf-8")
    return run_role_check(tmp_path, "onprem.triton.monitoring", "triton_monitoring", overrides, ["-i", str(inventory)],
                          env_overrides=env_overrides)


BAD_VALUES = [
    ({"monitoring_alert_failure_ratio": "five percent"}, "monitoring_alert_failure_ratio"),
    ({"monitoring_alert_ttft_p95_ms": "fast"}, "monitoring_alert_ttft_p95_ms"),
    ({"monitoring_alert_failure_ratio": 5}, "monitoring_alert_failure_ratio is 5: a ratio above 0 and at most 1"),
    ({"monitoring_alert_gpu_memory_ratio": 0}, "monitoring_alert_gpu_memory_ratio is 0: a ratio above 0"),
    ({"monitoring_alert_rate_window": "5 minutes"}, 'monitoring_alert_rate_window is "5 minutes"'),
    ({"monitoring_alerts_disabled": ["TritonModelNotReady", "TritonIsSlow"]},
     "monitoring_alerts_disabled is [\"TritonModelNotReady\", \"TritonIsSlow\"]: alert names of this role, and "
     "TritonIsSlow is not one"),
    ({"monitoring_alert_for": {"TritonIsSlow": "5m"}}, "monitoring_alert_for is {\"TritonIsSlow\": \"5m\"}"),
    ({"monitoring_extra_rule_groups": [{"name": "site", "rules": [{"alert": "NoExpr"}]}]},
     "monitoring_extra_rule_groups: each item must be a Prometheus rule group"),
    ({"monitoring_alertmanager_route": {"receiver": "pager"}},
     "monitoring_alertmanager_route.receiver ('pager') must name one of"),
    ({"monitoring_prometheus_port": 9093}, "monitoring_prometheus_port 9093 and monitoring_alertmanager_port 9093"),
    ({"monitoring_triton_group": "gpu_fleet"}, "The group monitoring_triton_group ('gpu_fleet') has no hosts"),
    ({"monitoring_grafana_provisioning_enabled": True, "monitoring_grafana_dashboards_dir": "dashboards"},
     "monitoring_grafana_dashboards_dir 'dashboards' must be absolute paths"),
]


@pytest.fixture(scope="module")
def bad_value_runs(tmp_path_factory):
    """Every bad value of BAD_VALUES in one run, each on a monitoring host of its own (badNN)."""
    tmp_path = tmp_path_factory.mktemp("monitoring_bad_values")
    cases = {f"bad{index:02d}": case[0] for index, case in enumerate(BAD_VALUES)}
    return run_cases_as_hosts(tmp_path, role_play(tmp_path, "onprem.triton.monitoring", "triton_monitoring"), cases,
                              group="triton_monitoring", other_groups=SERVERS)


@pytest.mark.parametrize("index", range(len(BAD_VALUES)), ids=[case[1][:60] for case in BAD_VALUES])
def test_bad_input_is_refused_by_name_before_any_change(bad_value_runs, index):
    run, hosts = bad_value_runs
    assert_host_refused_before_any_change(hosts[f"bad{index:02d}"], BAD_VALUES[index][1], run.stdout)


@pytest.mark.skipif(shutil.which("promtool") is None and os.environ.get("CI") != "true",
                    reason="promtool missing: apt-get install prometheus (the test command installs it)")
def test_a_rule_that_does_not_parse_is_refused_on_the_controller(tmp_path):
    run = _run(tmp_path, {"monitoring_extra_rule_groups": [
        {"name": "site", "rules": [{"alert": "Broken", "expr": "rate(nv_inference_count[5m] > 1"}]}]})
    assert_refused_before_any_change(
        run, "The alert rules do not pass promtool check rules (look at monitoring_extra_rule_groups")
    assert "parse error" in run.stdout + run.stderr


@pytest.mark.skipif(not os.path.exists("/usr/bin/promtool") and os.environ.get("CI") != "true",
                    reason="promtool missing: apt-get install prometheus (the test command installs it)")
def test_without_promtool_on_the_controller_the_hosts_own_refuses_the_rule(tmp_path):
    """The controller's PATH has no promtool (every other command of the system's PATH, and this
    venv): the host's promtool (this machine is the host, /usr/bin/promtool) checks the rules,
    reading them on stdin."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"):
        for command in (os.listdir(folder) if os.path.isdir(folder) else []):
            if command != "promtool" and not (bin_dir / command).exists():
                (bin_dir / command).symlink_to(os.path.join(folder, command))
    run = _run(tmp_path, {"monitoring_extra_rule_groups": [
        {"name": "site", "rules": [{"alert": "Broken", "expr": "rate(nv_inference_count[5m] > 1"}]}]},
        env_overrides={"PATH": f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}"})
    assert_refused_before_any_change(run, "The alert rules do not pass promtool check rules on localhost")
    assert "parse error" in run.stdout + run.stderr
    assert "Run the host's promtool check rules" in run.stdout


DCGM_REFUSALS = [
    # the default on a host with the GPU stack (triton_gpu_stack unset): this machine has no
    # NVIDIA container toolkit, so no CDI spec for the container to reach the GPUs through
    ({}, "monitoring_dcgm_exporter_enabled is true on localhost, which lacks"),
    ({"triton_server_gpu_mode": "legacy"}, "/usr/bin/nvidia-container-runtime-hook"),
    ({"monitoring_dcgm_exporter_image": "nvcr.io/nvidia/k8s/dcgm-exporter"},
     "monitoring_dcgm_exporter_image 'nvcr.io/nvidia/k8s/dcgm-exporter' (an image with its tag)"),
    ({"monitoring_dcgm_exporter_port": 9100}, "monitoring_dcgm_exporter_port 9100 (1-65535, not node exporter's)"),
]


@pytest.fixture(scope="module")
def dcgm_runs(tmp_path_factory):
    """The node_exporter entry point with each of DCGM_REFUSALS on a GPU host of its own (gpuN), one run."""
    tmp_path = tmp_path_factory.mktemp("monitoring_dcgm")
    cases = {f"gpu{index}": case[0] for index, case in enumerate(DCGM_REFUSALS)}
    return run_cases_as_hosts(tmp_path, role_play(tmp_path, "onprem.triton.monitoring", "all", gather_facts=True,
                                                  tasks_from="node_exporter"), cases)


@pytest.mark.parametrize("index", range(len(DCGM_REFUSALS)), ids=[case[1][:60] for case in DCGM_REFUSALS])
def test_dcgm_exporter_is_refused_where_it_cannot_run(dcgm_runs, index):
    run, hosts = dcgm_runs
    host = f"gpu{index}"
    assert_host_refused_before_any_change(hosts[host], DCGM_REFUSALS[index][1].replace("localhost", host), run.stdout)
