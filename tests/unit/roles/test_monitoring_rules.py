# SPDX-License-Identifier: Apache-2.0
"""The monitoring role's alert rules and scrape configuration, rendered by Ansible as the
role renders them, then `promtool check rules` and `promtool test rules`
(monitoring/triton_rules_test.yml: every alert against synthetic series), `promtool check
config` with the targets built from an inventory. promtool comes from Debian's `prometheus`
package, which scripts/host.sh installs for the test command."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from role_render import checker
from role_render import render as render_role

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PROMTOOL, pytestmark = checker("promtool", "prometheus")


def render(tmp_path, name="rules.yml", template="triton.rules.yml.j2", **extra_vars):
    """Renders a template of the monitoring role with Ansible (monitoring/render.yml), for the
    monitoring host of monitoring/inventory.yml."""
    return render_role("monitoring", tmp_path / name, template=template, **extra_vars)


def promtool(*args, cwd=None):
    assert PROMTOOL, "promtool is missing: apt-get install prometheus (scripts/host.sh does it)"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, check=False)


def alerts(path):
    return {rule["alert"]: rule for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
            for rule in group["rules"] if "alert" in rule}


def test_default_rules_pass_promtool_check_and_unit_tests(tmp_path):
    rules = render(tmp_path)
    check = promtool("check", "rules", str(rules))
    assert check.returncode == 0 and "SUCCESS: 11 rules found" in check.stdout, check.stdout + check.stderr
    shutil.copy(HERE / "monitoring" / "triton_rules_test.yml", tmp_path)
    test = promtool("test", "rules", "triton_rules_test.yml", cwd=tmp_path)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_every_alert_says_what_to_do(tmp_path):
    rules = alerts(render(tmp_path))
    assert sorted(rules) == sorted([
        "TritonModelNotReady", "TritonGenerationFailing", "TritonWatchdogGaveUp", "TritonWatchdogNotRunning",
        "TritonMetricsDown", "TritonRequestFailureRatio", "TritonQueueTimeP95High", "TritonTTFTP95High",
        "TritonGPUMemoryNearFull", "TritonServerRestarting", "TritonDriftReported"])
    for name, rule in rules.items():
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80, name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name


def test_thresholds_durations_and_disabled_alerts_come_from_the_inventory(tmp_path):
    rules = render(tmp_path, monitoring_alert_failure_ratio=0.25, monitoring_alert_ttft_p95_ms=750,
                   monitoring_alert_rate_window="10m", monitoring_alert_for={"TritonModelNotReady": "1m"},
                   monitoring_alerts_disabled=["TritonDriftReported", "TritonGPUMemoryNearFull"])
    check = promtool("check", "rules", str(rules))
    assert check.returncode == 0, check.stdout + check.stderr
    rules = alerts(rules)
    assert "TritonDriftReported" not in rules and "TritonGPUMemoryNearFull" not in rules
    assert rules["TritonRequestFailureRatio"]["expr"].endswith("> 0.25")
    assert "[10m]" in rules["TritonRequestFailureRatio"]["expr"]
    assert rules["TritonTTFTP95High"]["expr"].endswith("> 750")
    assert rules["TritonModelNotReady"]["for"] == "1m"
    assert rules["TritonGenerationFailing"]["for"] == "5m"


def test_an_extra_rule_that_does_not_parse_is_caught_by_promtool(tmp_path):
    """What the role's `validate:` relies on: the file is refused before it is put in place."""
    rules = render(tmp_path, monitoring_extra_rule_groups=[
        {"name": "site", "rules": [{"alert": "Broken", "expr": "rate(nv_inference_count[5m] > 1"}]}])
    check = promtool("check", "rules", str(rules))
    assert check.returncode != 0 and "parse error" in (check.stdout + check.stderr)


def test_scrape_targets_are_built_from_the_inventory(tmp_path):
    config_path = render(tmp_path, "prometheus.yml", "prometheus.yml.j2")
    check = promtool("check", "config", "--syntax-only", str(config_path))
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job["static_configs"] for job in config["scrape_configs"]}
    assert jobs["triton"] == [
        {"targets": ["10.0.0.5:8102"], "labels": {"host": "gpu-a", "triton_instance": "big"}},
        {"targets": ["[fd00::7]:8002"], "labels": {"host": "gpu-b", "triton_instance": "main"}},
        {"targets": ["10.0.0.9:8002"], "labels": {"host": "gpu-c", "triton_instance": "main"}}]
    assert jobs["node"] == [{"targets": ["10.0.0.5:9100"], "labels": {"host": "gpu-a"}},
                            {"targets": ["[fd00::7]:9100"], "labels": {"host": "gpu-b"}},
                            {"targets": ["10.0.0.9:9100"], "labels": {"host": "gpu-c"}}]
    # DCGM exporter where the host has the GPU stack (the default) and it is not turned off
    assert jobs["dcgm"] == [{"targets": ["[fd00::7]:9400"], "labels": {"host": "gpu-b"}}]
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]


def test_with_the_openai_frontend_on_triton_is_scraped_on_its_openai_port(tmp_path):
    """The frontend opens no metrics port and serves /metrics on its own port (the launcher leaves
    /metrics unrestricted): the scrape target follows triton_server_openai_port (default 9000)."""
    config_path = render(tmp_path, "prometheus.yml", "prometheus.yml.j2", triton_server_openai_enabled=True)
    check = promtool("check", "config", "--syntax-only", str(config_path))
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {job["job_name"]: job["static_configs"] for job in yaml.safe_load(config_path.read_text(encoding="utf-8"))["scrape_configs"]}
    assert [target for config in jobs["triton"] for target in config["targets"]] == [
        "10.0.0.5:9010", "[fd00::7]:9000", "10.0.0.9:9000"]


def test_alertmanager_routes_pass_amtool(tmp_path):
    config_path = render(tmp_path, "alertmanager.yml", "alertmanager.yml.j2", monitoring_alertmanager_receivers=[
        {"name": "default"}, {"name": "oncall", "webhook_configs": [{"url": "http://127.0.0.1:19999/hook"}]}])
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool missing: apt-get install prometheus-alertmanager")
    check = subprocess.run([amtool, "check-config", str(config_path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "2 receivers" in check.stdout, check.stdout + check.stderr


def test_dcgm_exporter_unit_runs_nvidias_pinned_image_on_the_gpus(tmp_path):
    """It cannot run here (no GPU): the unit is rendered as the role renders it and checked by
    systemd-analyze; the flags are upstream's quickstart (NVIDIA/dcgm-exporter README)."""
    for mode, gpu_flag in (("cdi", "--device nvidia.com/gpu=all"), ("legacy", "--gpus all")):
        unit = render(tmp_path, f"dcgm-exporter-{mode}.service", "dcgm-exporter.service.j2",
                      triton_server_gpu_mode=mode, monitoring_dcgm_exporter_listen_address="fd00::7",
                      monitoring_dcgm_exporter_port=9500)
        text = unit.read_text(encoding="utf-8")
        run = " ".join(text.split("ExecStart=", 1)[1].split("ExecStop=")[0].replace("\\\n", " ").split())
        assert "run --rm --name dcgm-exporter --network host" in run
        assert gpu_flag in run and "--cap-add SYS_ADMIN" in run
        assert "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless --address [fd00::7]:9500" in run
        analyze = shutil.which("systemd-analyze")
        if analyze:
            # `verify` also wants docker.service and the binaries; only the unit's own syntax matters here
            done = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False)
            syntax = [line for line in done.stderr.splitlines()
                      if "Unknown" in line or "Invalid" in line or "Failed to parse" in line or "bad" in line.lower()]
            assert not syntax, done.stderr


def test_grafana_provisioning_files_point_at_this_prometheus_and_the_shipped_dashboards(tmp_path):
    datasources = yaml.safe_load(render(tmp_path, "datasources.yml", "grafana-datasources.yml.j2",
                                        monitoring_prometheus_port=19090).read_text(encoding="utf-8"))
    assert datasources["apiVersion"] == 1
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:19090"
    assert source["isDefault"] is False and source["access"] == "proxy"
    providers = yaml.safe_load(render(tmp_path, "dashboards.yml", "grafana-dashboards.yml.j2").read_text(encoding="utf-8"))
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards/onprem-triton"
    # every shipped dashboard picks a Prometheus data source through its variable, so the one
    # provisioned above is offered
    shipped = sorted((ROOT / "roles" / "monitoring" / "files" / "dashboards").glob("*.json"))
    # fleet overview, per-model latency/throughput/TTFT, GPU: three dashboards Grafana tells apart
    assert [path.name for path in shipped] == ["triton-fleet.json", "triton-gpu.json", "triton-models.json"]
    dashboards = [json.loads(path.read_text(encoding="utf-8")) for path in shipped]
    assert len({dashboard["uid"] for dashboard in dashboards}) == len({dashboard["title"] for dashboard in dashboards}) == 3
    # panel titles are unique across them (molecule/monitoring names the panels without data by title)
    titles = [panel["title"] for dashboard in dashboards for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles))
    for path, dashboard in zip(shipped, dashboards):
        assert dashboard["panels"] and len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
        assert {"name": "datasource", "type": "datasource", "query": "prometheus"}.items() <= dashboard[
            "templating"]["list"][0].items()
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (path.name, panel["title"])
