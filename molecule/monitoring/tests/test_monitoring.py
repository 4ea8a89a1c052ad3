# SPDX-License-Identifier: Apache-2.0
"""Monitoring of two GPU hosts: Prometheus scrapes every target built from the inventory, the
Triton counters of each server rise after a generation, an unloaded model fires TritonModelNotReady in
Alertmanager (asked through its API) for that host only and loading it back resolves it;
Grafana's provisioning files point at this Prometheus and the three shipped dashboards (every panel's
query runs); the watchdog runs on both hosts by the role's default and its metrics reach Prometheus
through node exporter's textfile folder; a wedged engine is restarted by the watchdog within its
bound, and when it stays wedged TritonGenerationFailing fires, the watchdog gives up and
TritonWatchdogGaveUp fires. Every endpoint is on the host's loopback (host networking),
so the tests reach Prometheus and Alertmanager from here; what happens on the GPU host is
done there through testinfra. Every test takes `host`, so that pytest keeps them in file
order: the last one leaves the engine wedged for good."""

import json
import os
import subprocess
import sys
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
# the second GPU host: the triton_server role's defaults for the watchdog (on, every 60 s)
TRITON2 = "http://127.0.0.1:19410"
UNIT = "triton-mon.service"
WATCHDOG = "triton-mon-watchdog.service"
REPO_KEY = "molecule-repository-key-0123456789"
HANG = "/srv/triton/repository/HANG"
ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = sorted((Path(__file__).resolve().parents[3] / "roles" / "monitoring" / "files" / "dashboards").glob("*.json"))
# Panels (titles are unique across the dashboards) whose series cannot exist on these machines, and why.
NO_DATA_HERE = {
    "Time to first response p95 (ms, histogram_latencies)": "tritonserver 2.51 exports no first-response histogram",
    "GPU memory used (Triton)": "no GPU",
    "GPU memory used (DCGM exporter)": "no GPU, no DCGM exporter",
    "GPU utilization (DCGM exporter)": "no GPU, no DCGM exporter",
}

# A catalog for the drift playbook (the scenario serves a repository published by plain tasks).
DRIFT_CATALOG = {
    "model_repository_root": "/srv/triton/repository",
    "triton_models": [{"name": "demo", "backend": "vllm", "model_path": "/opt/models/demo"}],
    "model_repository_gpus": [{"index": 0, "memory_total_mib": 24576}],
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


def textfile_dir(gpu_host):
    """The folder node exporter's textfile collector reads on that host (its own settings)."""
    args = gpu_host.file("/etc/default/prometheus-node-exporter").content_string
    return args.split("--collector.textfile.directory=", 1)[1].split()[0].strip('"')


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


def test_the_second_host_runs_the_role_defaults_watchdog_on_no_dcgm(host):
    del host  # taken only to keep the file order
    gpu2 = other_host("monitoring-gpu2")
    assert gpu2.service("triton-mon2.service").is_running
    assert not gpu2.file("/etc/systemd/system/dcgm-exporter.service").exists
    # the watchdog with nothing set for it: its timer at the role's default interval
    timer = gpu2.service("triton-mon2-watchdog.timer")
    assert timer.is_running and timer.is_enabled
    assert "OnUnitActiveSec=60" in gpu2.check_output("systemctl cat triton-mon2-watchdog.timer")
    # it writes where node exporter reads (monitoring_node_exporter_textfile_dir, one setting for both roles)...
    wait("the watchdog of mon2 wrote its textfile",
         lambda: gpu2.file(f"{textfile_dir(gpu2)}/triton_watchdog_mon2.prom").exists, 90)
    # ...and Prometheus reads it, labelled with the host: what the alert rules select on
    wait("the watchdog's generation_ok of mon2 reaches Prometheus",
         lambda: query('triton_watchdog_generation_ok{job="node",host="monitoring-gpu2",triton_instance="mon2",'
                       'model="demo"} == 1'), 60)
    assert query('triton_watchdog_model_ready{host="monitoring-gpu2",triton_instance="mon2",model="demo"} == 1')
    assert query('triton_watchdog_gave_up{host="monitoring-gpu2",unit="triton-mon2.service"} == 0')


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
    # the fleet overview, the per-model and the GPU dashboard, each copied as shipped
    assert [path.name for path in DASHBOARDS] == ["triton-fleet.json", "triton-gpu.json", "triton-models.json"]
    for path in DASHBOARDS:
        assert prom.file(f"{folder}/{path.name}").content_string == path.read_text(encoding="utf-8"), path.name
        assert oct(prom.file(f"{folder}/{path.name}").mode) == "0o644", path.name


def test_the_watchdog_runs_on_its_timer_and_reports(host):
    assert host.service("triton-mon-watchdog.timer").is_running
    assert host.service("triton-mon-watchdog.timer").is_enabled
    wait("the watchdog's generation_ok reaches Prometheus",
         lambda: query('triton_watchdog_generation_ok{job="node",model="demo",triton_instance="mon"} == 1'), 60)
    assert "triton-mon.service: ok: demo" in host.check_output(f"journalctl -u {WATCHDOG} --no-pager -o cat")


def test_every_dashboard_query_runs_and_returns_data(host):
    del host  # taken only to keep the file order
    panels = [(path.name, panel) for path in DASHBOARDS for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]]
    assert len(DASHBOARDS) == 3 and all(panel["targets"] for _name, panel in panels)
    assert set(NO_DATA_HERE) <= {panel["title"] for _name, panel in panels}
    empty = []
    for name, panel in panels:
        for target in panel["targets"]:
            answer = _get(f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": target["expr"]}))
            assert answer["status"] == "success", (name, panel["title"], answer)
            if not answer["data"]["result"] and panel["title"] not in NO_DATA_HERE:
                empty.append(f"{name}: {panel['title']}")
    assert not empty, f"panels without data: {empty}"


def test_drift_metrics_are_written_read_by_prometheus_and_fire_the_drift_alert(host, tmp_path):
    """playbooks/drift.yml -e drift_metrics=true on the second host, against a catalog that asks for
    another repository than the one served (the scenario publishes it without the model_repository
    role): a drifted host."""
    del host  # taken only to keep the file order
    gpu2 = other_host("monitoring-gpu2")
    served = gpu2.check_output("readlink /srv/triton/repository/current; systemctl show -p MainPID --value triton-mon2.service")
    extra = tmp_path / "drift.json"
    extra.write_text(json.dumps(DRIFT_CATALOG), encoding="utf-8")
    run = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         str(ROOT / "playbooks" / "drift.yml"), "--limit", "monitoring-gpu2,localhost", "-e", "drift_metrics=true",
         "-e", "@" + str(ROOT / "molecule" / "triton_server" / "vars" / "main.yml"), "-e", "@" + str(extra)],
        capture_output=True, text=True, check=False, timeout=600,
        env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", FLEET_REPORT_DIR=str(tmp_path)))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = (tmp_path / "drift.txt").read_text(encoding="utf-8").splitlines()
    assert [line for line in report if line.startswith("monitoring-gpu2 | model_repository | generation | ")], report
    # the series, one per component, in the folder node exporter reads
    written = gpu2.file(f"{textfile_dir(gpu2)}/triton_drift.prom")
    assert oct(written.mode) == "0o644"
    series = {line.split()[0]: float(line.split()[1]) for line in written.content_string.splitlines()
              if line.startswith("triton_drift_differences{")}
    assert series == {f'triton_drift_differences{{component="{component}"}}': value for component, value in (
        ("nvidia_driver", 0), ("nvidia_container_toolkit", 0), ("hf_model", 0), ("model_repository", 1),
        ("triton_server", 0))}, written.content_string
    # Prometheus reads them, labelled with the host, and the drifted component fires the alert
    wait("the drift series reach Prometheus",
         lambda: len(query('triton_drift_differences{job="node",host="monitoring-gpu2"}')) == 5, 60)
    alerts = wait("TritonDriftReported active in Alertmanager", lambda: active_alerts("TritonDriftReported"), 60)
    assert {(a["labels"]["host"], a["labels"]["component"]) for a in alerts} == {("monitoring-gpu2", "model_repository")}
    # check mode: the served repository and the server process are the same
    assert gpu2.check_output("readlink /srv/triton/repository/current; systemctl show -p MainPID --value triton-mon2.service") \
        == served


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
        # the generation fails while the model says ready: the alert people read first
        failing = wait("TritonGenerationFailing active in Alertmanager",
                       lambda: [a for a in active_alerts("TritonGenerationFailing")
                                if a["labels"]["host"] == "monitoring-gpu" and a["labels"]["model"] == "demo"], 60)
        assert failing[0]["labels"]["severity"] == "critical" and failing[0]["labels"]["unit"] == UNIT
        metrics = host.file(f"{textfile_dir(host)}/triton_watchdog_mon.prom").content_string
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
