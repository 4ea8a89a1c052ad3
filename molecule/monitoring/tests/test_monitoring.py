# SPDX-License-Identifier: Apache-2.0
"""Monitoring of two GPU hosts: Prometheus scrapes every target built from the inventory, the
Triton counters of each server rise after a generation, an unloaded model fires TritonModelNotReady in
Alertmanager (asked through its API) for that host only and loading it back resolves it;
Grafana's provisioning files point at this Prometheus and the shipped dashboards; a wedged engine is
restarted by the watchdog within its bound, and when it stays wedged the watchdog gives up
and TritonWatchdogGaveUp fires. Every endpoint is on the host's loopback (host networking),
so the tests reach Prometheus and Alertmanager from here; what happens on the GPU host is
done there through testinfra. Every test takes `host`, so that pytest keeps them in file
order: the last one leaves the engine wedged for good."""

import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

import testinfra
import yaml

testinfra_hosts = ["ansible://monitoring-gpu"]

PROMETHEUS = "http://127.0.0.1:19090"
ALERTMANAGER = "http://127.0.0.1:19093"
TRITON = "http://127.0.0.1:19400"
# the second GPU host: the triton_server role's defaults for the watchdog (off)
TRITON2 = "http://127.0.0.1:19410"
UNIT = "triton-mon.service"
WATCHDOG = "triton-mon-watchdog.service"
REPO_KEY = "molecule-repository-key-0123456789"
HANG = "/srv/triton/repository/HANG"
DASHBOARD = Path(__file__).resolve().parents[3] / "roles" / "monitoring" / "files" / "dashboards" / "triton-fleet.json"
# Panels whose series cannot exist on these machines, and why.
NO_DATA_HERE = {
    "Time to first response p95 (ms, histogram_latencies)": "tritonserver 2.51 exports no first-response histogram",
    "GPU memory used (Triton)": "no GPU",
    "GPU memory used (DCGM exporter)": "no GPU, no DCGM exporter",
    "GPU utilization (DCGM exporter)": "no GPU, no DCGM exporter",
}


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read().decode())


def _post(url, body=None, headers=None, timeout=60):
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return answer.status, answer.read().decode()


def query(expr):
    return _get(f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))["data"]["result"]


def wait(what, check, timeout, step=2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last})")


def active_alerts(name):
    alerts = _get(f"{ALERTMANAGER}/api/v2/alerts?" + urllib.parse.urlencode({"filter": f'alertname="{name}"'}))
    return [a for a in alerts if a["status"]["state"] == "active"]


def generate(prompt="the quick brown fox", server=TRITON):
    body = {"text_input": prompt, "sampling_parameters": json.dumps({"max_tokens": 4}), "exclude_input_in_output": True}
    return json.loads(_post(f"{server}/v2/models/demo/generate", body, timeout=10)[1])


def other_host(name):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def watchdog_log(host, since):
    return host.check_output(f"journalctl -u {WATCHDOG} --since @{since} --no-pager -o cat")


def test_every_target_from_the_inventory_is_up(host):
    for gpu_host, port in ((host, 19100), (other_host("monitoring-gpu2"), 19110)):
        exporter = gpu_host.service("prometheus-node-exporter")
        assert exporter.is_running and exporter.is_enabled
        assert gpu_host.socket(f"tcp://127.0.0.1:{port}").is_listening

    def all_up():
        targets = _get(f"{PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
        jobs = {(t["labels"]["job"], t["scrapeUrl"], t["health"]) for t in targets}
        up = {job for job, _url, health in jobs if health == "up"}
        everyone = all(health == "up" for _job, _url, health in jobs)
        return jobs if everyone and up >= {"prometheus", "alertmanager", "triton", "node"} else None
    jobs = wait("every target up", all_up, 60)
    assert {("triton", "http://127.0.0.1:19402/metrics", "up"), ("triton", "http://127.0.0.1:19412/metrics", "up"),
            ("node", "http://127.0.0.1:19100/metrics", "up"), ("node", "http://127.0.0.1:19110/metrics", "up")} <= jobs
    # no GPU stack on these hosts: no DCGM exporter, nothing to scrape for it
    assert not any(job == "dcgm" for job, _url, _health in jobs)
    instances = {(r["metric"]["host"], r["metric"]["triton_instance"]) for r in query('up{job="triton"}')}
    assert instances == {("monitoring-gpu", "mon"), ("monitoring-gpu2", "mon2")}


def test_the_fleet_rules_are_loaded(host):
    del host  # taken only to keep the file order
    groups = _get(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    rules = {rule["name"] for group in groups if group["name"] == "onprem_triton" for rule in group["rules"]}
    assert len(rules) == 11 and "TritonModelNotReady" in rules and "TritonWatchdogGaveUp" in rules


def test_the_server_runs_with_the_metrics_options(host):
    unit = host.check_output(f"systemctl cat {UNIT}")
    assert "--metrics-config=summary_latencies=true" in unit and "--metrics-config=histogram_latencies=true" in unit


def test_request_counters_rise_after_a_generation(host):
    del host  # taken only to keep the file order
    for server, gpu_host in ((TRITON, "monitoring-gpu"), (TRITON2, "monitoring-gpu2")):
        def success(gpu_host=gpu_host):
            result = query(f'sum(nv_inference_request_success{{job="triton",model="demo",host="{gpu_host}"}})')
            return float(result[0]["value"][1]) if result else None
        before = wait(f"the success counter of {gpu_host} is scraped", lambda: success() is not None, 60) and success()
        assert generate(server=server)["text_output"].strip()
        wait(f"the success counter of {gpu_host} rises", lambda: success() > before, 30)
    # the queue quantiles that TritonQueueTimeP95High reads (summary_latencies=true)
    assert query('nv_inference_queue_summary_us{job="triton",model="demo",quantile="0.95"}')


def test_the_second_host_runs_the_role_defaults_no_watchdog_no_dcgm(host):
    del host  # taken only to keep the file order
    gpu2 = other_host("monitoring-gpu2")
    assert gpu2.service("triton-mon2.service").is_running
    assert not gpu2.file("/etc/systemd/system/triton-mon2-watchdog.timer").exists
    assert not gpu2.file("/etc/systemd/system/dcgm-exporter.service").exists


def test_grafana_provisioning_files_point_at_prometheus_and_the_dashboards(host):
    del host  # taken only to keep the file order
    prom = other_host("monitoring-prom")
    source = yaml.safe_load(prom.file("/etc/grafana/provisioning/datasources/onprem-triton.yml").content_string)
    [datasource] = source["datasources"]
    assert datasource["type"] == "prometheus"
    # the URL Grafana will call answers as Prometheus
    assert _get(datasource["url"] + "/api/v1/status/buildinfo")["status"] == "success"
    provider = yaml.safe_load(prom.file("/etc/grafana/provisioning/dashboards/onprem-triton.yml").content_string)
    folder = provider["providers"][0]["options"]["path"]
    assert prom.file(f"{folder}/triton-fleet.json").content_string == DASHBOARD.read_text(encoding="utf-8")
    assert oct(prom.file(f"{folder}/triton-fleet.json").mode) == "0o644"


def test_the_watchdog_runs_on_its_timer_and_reports(host):
    assert host.service("triton-mon-watchdog.timer").is_running
    assert host.service("triton-mon-watchdog.timer").is_enabled
    wait("the watchdog's generation_ok reaches Prometheus",
         lambda: query('triton_watchdog_generation_ok{job="node",model="demo",triton_instance="mon"} == 1'), 60)
    assert "triton-mon.service: ok: demo" in host.check_output(f"journalctl -u {WATCHDOG} --no-pager -o cat")


def test_every_dashboard_query_runs_and_returns_data(host):
    del host  # taken only to keep the file order
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    assert set(NO_DATA_HERE) <= {panel["title"] for panel in panels}
    empty = []
    for panel in panels:
        for target in panel["targets"]:
            answer = _get(f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": target["expr"]}))
            assert answer["status"] == "success", (panel["title"], answer)
            if not answer["data"]["result"] and panel["title"] not in NO_DATA_HERE:
                empty.append(panel["title"])
    assert not empty, f"panels without data: {empty}"


def test_unloading_a_model_fires_not_ready_and_loading_it_resolves(host):
    since = int(host.check_output("date +%s"))
    headers = {"triton-repository-key": REPO_KEY}
    assert _post(f"{TRITON}/v2/repository/models/demo/unload", headers=headers)[0] == 200
    try:
        alerts = wait("TritonModelNotReady active in Alertmanager", lambda: active_alerts("TritonModelNotReady"), 120)
        labels = alerts[0]["labels"]
        assert labels["model"] == "demo" and labels["host"] == "monitoring-gpu" and labels["severity"] == "critical"
        # only the host whose model is gone
        assert {alert["labels"]["host"] for alert in alerts} == {"monitoring-gpu"}
        assert "diagnose --limit monitoring-gpu" in alerts[0]["annotations"]["description"]
        # the watchdog reported it without counting it as a hang
        assert "restarting" not in watchdog_log(host, since)
        assert "not counted (a restart does not load a model; left to the alerts): demo not ready (HTTP" in watchdog_log(
            host, since)
    finally:
        assert _post(f"{TRITON}/v2/repository/models/demo/load", headers=headers, timeout=120)[0] == 200
    wait("TritonModelNotReady resolved", lambda: not active_alerts("TritonModelNotReady"), 120)


def test_a_wedged_engine_is_restarted_by_the_watchdog_and_generates_again(host):
    since = int(host.check_output("date +%s"))
    host.run_expect([0], f"touch {HANG}")
    try:
        # the stand-in engine wedges at the watchdog's next request and stays wedged until restarted
        wait("a first failed generation while ready",
             lambda: "generation failed while the server is ready (1/2)" in watchdog_log(host, since), 60)
    finally:
        host.run_expect([0], f"rm -f {HANG}")
    wait("the watchdog restarts the unit",
         lambda: "restarting after 2 consecutive failed generations (restart 1 of at most 2 an hour)"
         in watchdog_log(host, since), 60)
    wait("the server generates again", lambda: "ok: demo" in watchdog_log(host, since).split("restart 1 of")[-1], 120)
    assert generate()["text_output"].strip()
    # the rollout's gate (the triton_check module, run on the host as the triton_server role runs it) passes again
    # (with the repository key, as the role passes it: the gate reads the restricted repository index)
    gate = host.ansible("onprem.triton.triton_check", "url=127.0.0.1:19400 models=demo wait_timeout=60 headers='"
                        + json.dumps({"triton-repository-key": REPO_KEY}) + "'", check=False)
    assert not gate.get("failed") and gate["models"][0]["ready"] and gate["models"][0]["generation"]["text"].strip(), gate


def test_an_engine_broken_for_good_is_left_to_people_after_the_bound(host):
    since = int(host.check_output("date +%s"))
    host.run_expect([0], f"touch {HANG}")
    try:
        wait("the watchdog gives up", lambda: "GAVE UP" in watchdog_log(host, since), 240)
        log = watchdog_log(host, since)
        # one restart was left in this hour's budget of 2 (the previous test used one)
        assert log.count("restarting after") == 1 and "restart 2 of at most 2 an hour" in log
        alerts = wait("TritonWatchdogGaveUp active in Alertmanager", lambda: active_alerts("TritonWatchdogGaveUp"), 60)
        assert alerts[0]["labels"]["unit"] == UNIT
        metrics = host.file("/var/lib/prometheus/node-exporter/triton_watchdog_mon.prom").content_string
        assert 'triton_watchdog_gave_up{triton_instance="mon",unit="triton-mon.service"} 1' in metrics
        assert 'triton_watchdog_restarts_total{triton_instance="mon",unit="triton-mon.service"} 2' in metrics
        # it keeps its word: no further restart while the budget is spent
        time.sleep(25)
        assert watchdog_log(host, since).count("restarting after") == 1
        # still "ready" all along: what only a real generation sees
        with urllib.request.urlopen(f"{TRITON}/v2/models/demo/ready", timeout=5) as answer:
            assert answer.status == 200
    finally:
        host.run_expect([0], f"rm -f {HANG}")
