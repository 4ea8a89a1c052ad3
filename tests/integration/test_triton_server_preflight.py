# SPDX-License-Identifier: Apache-2.0
"""The triton_server role refuses bad input with a message naming the variable,
before it changes anything: it runs against this machine (connection local, check
mode) and must stop in its argument spec or preflight."""

import os
import re
import sys

import pytest

from tests.integration.role_check import (assert_host_refused_before_any_change, assert_refused_before_any_change,
                                          role_play, run_cases_as_hosts, run_role_check)

GOOD = {
    "model_repository_current_path": "/srv/triton/repository/current",
    "model_repository_load_models": ["demo"],
    "triton_server_repository_api_key": "integration-key-0123456789",
    "triton_server_gpus": "none",
}


INSTANCES = {"model_repository_instances": [{"name": "tp23", "gpus": [2, 3], "models": ["big"]}]}


def _run(tmp_path, overrides):
    # gathered facts (the host's addresses) come from this Python, not a pyenv shim interpreter discovery may pick
    variables = dict(GOOD, ansible_python_interpreter=sys.executable, **overrides)
    return run_role_check(tmp_path, "onprem.triton.triton_server", "localhost", variables,
                          ["-c", "local", "-i", "localhost,"], gather_facts=True)


BAD_VALUES = [
    ({"triton_server_backend": "tgi"}, "triton_server_backend"),
    # The release table: an unknown release lists the known ones; a backend the release has no
    # image for names the backend variable.
    ({"triton_release": "26.99"}, "triton_release: Triton release '26.99' is not in the release table (known: 26.08,"),
    ({"triton_server_release": "24.01"}, "triton_server_release: Triton release '24.01' is not in the release table"),
    ({"triton_release": "26.08", "triton_server_backend": "trtllm"},
     "triton_server_backend: trtllm is not offered by Triton release 26.08 (the release table confirms: vllm)"),
    ({"triton_server_image_tag": "latest"}, "triton_server_image_tag"),
    ({"triton_server_image_tag": "25.12-trtllm-python-py3"}, "triton_server_backend"),
    ({"triton_server_grpc_port": 8000}, "triton_server_http_port/grpc_port/metrics_port"),
    ({"triton_server_http_address": "localhost"}, "triton_server_http_address"),
    ({"model_repository_current_path": ""}, "triton_server_model_repository_path"),
    ({"model_repository_load_models": []}, "triton_server_models"),
    ({"triton_server_gpus": [0, 3], "nvidia_gpu_info": {"count": 2}}, "triton_server_gpus"),
    ({"triton_server_repository_api_key": "short"}, "triton_server_repository_api_key"),
    # Accepted before (found by trying one bad value at a time on a converged host): written
    # into the unit, the server restarted and failed the gate, or nothing complained at all.
    ({"triton_server_http_address": "999.1.1.1"}, "triton_server_http_address '999.1.1.1'"),
    ({"triton_server_grpc_address": "192.0.2.77"}, "triton_server_grpc_address '192.0.2.77' on localhost is not"),
    ({"triton_server_extra_args": "--foo"}, 'triton_server_extra_args on localhost is "--foo": it must be a list of --flag'),
    ({"triton_server_extra_args": ["log-info"]}, 'triton_server_extra_args on localhost is ["log-info"]'),
    ({"triton_server_restart_sec": -1}, "triton_server_restart_sec on localhost is -1: it must be >= 0."),
    ({"triton_server_ready_timeout": -5}, "triton_server_ready_timeout on localhost is -5: it must be >= 0"),
    ({"triton_server_gate_prompt": "  "}, 'triton_server_gate_prompt on localhost is "  ": it must be a prompt, not empty.'),
    ({"triton_server_metrics_config": ["summary latencies"]},
     'triton_server_metrics_config must be a list of key=value options of tritonserver --metrics-config, got ["summary latencies"]'),
    ({"triton_server_watchdog_timeout_sec": 90}, "triton_server_watchdog_interval_sec 60 (>= 10) must be longer than"),
    ({"triton_server_watchdog_max_restarts_per_hour": "two"}, "triton_server_watchdog_max_restarts_per_hour"),
    # Other server instances of the host (model_repository_instances): their ports follow the main one's.
    (dict(INSTANCES, triton_server_grpc_port=8010),
     "model_repository_instances on localhost: every port must be distinct and at most 65535, got main http 8000, "
     "main grpc 8010, main metrics 8002, tp23 http 8010"),
    (dict(INSTANCES, triton_server_metrics_port=65530), "tp23 metrics 65540"),
    (dict(INSTANCES, triton_server_gpus=[0, 2]), "triton_server_gpus [0, 2] must not hold the GPUs of another instance"),
]


SHORT_SECRET = "tooShortKey42"


def _case_host(index):
    return f"bad{index:02d}"


@pytest.fixture(scope="module")
def bad_value_runs(tmp_path_factory):
    """Every bad value of BAD_VALUES in one run (and a short secret, a port that is not a number, for
    the tests below): each is a host of its own (connection local), so each
    meets the role alone, as in a run of its own, and a host's failure stops only that host. The
    role reads only the host's addresses of its facts (network)."""
    tmp_path = tmp_path_factory.mktemp("bad_values")
    cases = {_case_host(index): dict(GOOD, **case[0]) for index, case in enumerate(BAD_VALUES)}
    cases["shortsecret"] = dict(GOOD, triton_server_repository_api_key=SHORT_SECRET)
    cases["portword"] = dict(GOOD, triton_server_http_port="80a0")
    return run_cases_as_hosts(tmp_path, role_play(
        tmp_path, "onprem.triton.triton_server", "all", gather_facts=True, gather_subset=["network"]), cases)


@pytest.mark.parametrize("index", range(len(BAD_VALUES)), ids=[case[1][:60] for case in BAD_VALUES])
def test_bad_input_is_refused_by_name_before_any_change(bad_value_runs, index):
    run, hosts = bad_value_runs
    host = _case_host(index)
    # the messages name the host the value was found on
    assert_host_refused_before_any_change(hosts[host], BAD_VALUES[index][1].replace("localhost", host),
                                          run.stdout + run.stderr)


def test_every_bad_value_of_the_role_is_reported_in_one_run(tmp_path):
    """The role's checks do not stop at the first problem: each bad value is named, with its value."""
    run = _run(tmp_path, {"triton_server_restart_sec": -1, "triton_server_gate_prompt": "",
                          "triton_server_http_address": "999.1.1.1", "triton_server_grpc_port": 8000,
                          "triton_server_metrics_config": ["summary latencies"]})
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    for expected in ("triton_server_restart_sec on localhost is -1", 'triton_server_gate_prompt on localhost is ""',
                     "triton_server_http_address '999.1.1.1'", "triton_server_http_port/grpc_port/metrics_port",
                     "triton_server_metrics_config must be a list"):
        assert expected in out, (expected, out[-3000:])
    # Reported together by the role's last check task, one item per problem.
    assert "Report every problem the checks found" in out or "Stop with every problem" in out, out[-3000:]


def test_a_refused_secret_is_not_echoed(bad_value_runs):
    run, hosts = bad_value_runs
    assert_host_refused_before_any_change(hosts["shortsecret"], "triton_server_repository_api_key", run.stdout)
    assert SHORT_SECRET not in run.stdout + run.stderr


# Ports given on the command line (-e triton_server_http_port=18000) arrive as strings: argument_specs
# checks that they convert to int but leaves the variable a string, so every use must take it as one.
STRING_PORTS = {"triton_server_http_port": "18000", "triton_server_grpc_port": "18001", "triton_server_metrics_port": "18002"}


def test_ports_given_as_strings_pass_the_checks(tmp_path):
    variables = dict(GOOD, ansible_python_interpreter=sys.executable, triton_server_preflight_before_stages=True,
                     **STRING_PORTS)
    run = run_role_check(tmp_path, "onprem.triton.triton_server", "localhost", variables,
                         ["-c", "local", "-i", "localhost,"], gather_facts=True, tasks_from="preflight")
    output = run.stdout + run.stderr
    # This machine may boot no systemd: then that is the one problem the checks report, none about the ports.
    problems = re.findall(r"^failed: \[localhost\] \(item=(.*)$", run.stdout, re.MULTILINE)
    assert "Report every problem the checks found" in output, output[-3000:]
    if os.path.isdir("/run/systemd/system"):
        assert run.returncode == 0 and not problems, output[-3000:]
    else:
        assert run.returncode != 0 and problems and all("/run/systemd/system does not exist" in p for p in problems), output[-3000:]
    assert "triton_server_http_port" not in "".join(problems) and "Traceback" not in output, output[-3000:]


def test_a_port_that_is_not_a_number_is_refused_by_name(bad_value_runs):
    hosts = bad_value_runs[1]
    assert_host_refused_before_any_change(hosts["portword"], "triton_server_http_port", hosts["portword"].text)
    assert "unable to convert to int" in hosts["portword"].text


def test_a_port_given_with_e_on_a_host_with_other_instances_is_refused_by_name(tmp_path):
    """An extra var outranks the per-instance value serve.yml gives each server instance (include vars):
    -e triton_server_http_port=8000 would put every instance of the host on port 8000."""
    run = _run(tmp_path, dict(INSTANCES, **STRING_PORTS))
    output = run.stdout + run.stderr
    assert_refused_before_any_change(run, "given as an extra var (-e)")
    message = next(line for line in output.splitlines() if "on localhost given as an extra var (-e)" in line)
    for name in STRING_PORTS:
        assert name in message, message
    assert "model_repository_instances tp23" in message and "Set it in the inventory" in output, message
