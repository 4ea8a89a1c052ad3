# SPDX-License-Identifier: Apache-2.0
"""The watchdog (roles/triton_server/files/triton_watchdog.py) against a real tritonserver
(the Triton fixture as a process): a healthy model passes, a model that is not ready is
not counted, a wedged engine (FIXTURE_HANG_FILE) is counted while the server says ready
and restarted after N failing runs, at most M times an hour, then the watchdog gives up.
`systemctl` is a stand-in on PATH that records what it was asked (this machine has no
systemd); the real restart under systemd is the Molecule `monitoring` scenario's test. The
role's preflight refuses an hourly restart budget the unit's start limit cannot hold."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.triton.server import TritonServer, write_vllm_model
from tests.integration.role_check import assert_refused_before_any_change
from tests.integration.test_triton_server_preflight import _run as run_triton_server_role

ROOT = Path(__file__).resolve().parents[2]
WATCHDOG = ROOT / "roles" / "triton_server" / "files" / "triton_watchdog.py"
UNIT = "triton-wd.service"

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
case "$1" in
  show) echo NRestarts=3; echo ActiveEnterTimestamp=@1700000000 ;;
esac
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    hang = tmp_path_factory.mktemp("switch") / "hang"
    write_vllm_model(repo, "demo", parameters={"FIXTURE_HANG_FILE": str(hang)})
    srv = TritonServer(repo, http_port=18060, grpc_port=18061, metrics_port=18062, load_models=["demo"],
                       extra_args=["--exit-timeout-secs=2"])
    with srv:
        srv.wait_model_ready("demo")
        srv.hang_file = hang
        yield srv


@pytest.fixture
def watchdog(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL, encoding="utf-8")
    systemctl.chmod(0o755)
    config = {"unit": UNIT, "instance": "wd", "url": "http://127.0.0.1:18060", "models": ["demo"],
              "prompt": "the quick brown fox", "max_tokens": 4, "timeout_s": 2, "failures_before_restart": 2,
              "max_restarts_per_hour": 2, "state_file": str(tmp_path / "state.json"),
              "textfile": str(tmp_path / "triton_watchdog_wd.prom")}

    class Watchdog:
        calls_file = bin_dir / "calls"

        def __init__(self):
            self.config = config

        def run(self, **override):
            path = tmp_path / "watchdog.json"
            path.write_text(json.dumps(dict(config, **override)), encoding="utf-8")
            env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
            done = subprocess.run([sys.executable, str(WATCHDOG), str(path)], capture_output=True, text=True,
                                  env=env, timeout=60, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        def restarts(self):
            calls = self.calls_file.read_text(encoding="utf-8").splitlines() if self.calls_file.exists() else []
            return [call for call in calls if call.startswith("restart")]

        def metrics(self):
            values = {}
            for line in Path(config["textfile"]).read_text(encoding="utf-8").splitlines():
                if not line.startswith("#"):
                    name, value = line.rsplit(" ", 1)
                    values[name] = float(value)
            return values

    return Watchdog()


def _metric(metrics, name, model=None):
    labels = f'triton_instance="wd",unit="{UNIT}"' + (f',model="{model}"' if model else "")
    return metrics[f"{name}{{{labels}}}"]


def test_healthy_model_passes_and_metrics_are_written(server, watchdog):
    out = watchdog.run()
    assert f"<6>{UNIT}: ok: demo" in out
    metrics = watchdog.metrics()
    assert _metric(metrics, "triton_watchdog_server_ready") == 1
    assert _metric(metrics, "triton_watchdog_model_ready", "demo") == 1
    assert _metric(metrics, "triton_watchdog_generation_ok", "demo") == 1
    assert _metric(metrics, "triton_watchdog_consecutive_failures") == 0
    assert _metric(metrics, "triton_watchdog_gave_up") == 0
    assert _metric(metrics, "triton_watchdog_unit_restarts") == 3  # from systemctl show
    assert oct(Path(watchdog.config["state_file"]).stat().st_mode & 0o777) == "0o600"
    # node exporter must parse it: the textfile format, one HELP/TYPE per family
    text = Path(watchdog.config["textfile"]).read_text(encoding="utf-8")
    assert text.count("# TYPE triton_watchdog_generation_ok gauge") == 1


def test_model_not_ready_is_reported_not_counted(server, watchdog):
    out = watchdog.run(models=["demo", "absent"])
    metrics = watchdog.metrics()
    assert _metric(metrics, "triton_watchdog_model_ready", "absent") == 0
    assert _metric(metrics, "triton_watchdog_generation_ok", "absent") == 0
    assert _metric(metrics, "triton_watchdog_consecutive_failures") == 0
    assert "<4>triton-wd.service: not counted (a restart does not load a model; left to the alerts): absent not ready (HTTP 400)" in out
    assert "<6>triton-wd.service: ok: demo" in out
    assert not watchdog.restarts()


def test_server_down_is_not_counted(watchdog):
    out = watchdog.run(url="http://127.0.0.1:18069")  # nothing listens there
    assert "server not ready (HTTP 0): nothing probed" in out
    assert _metric(watchdog.metrics(), "triton_watchdog_server_ready") == 0
    assert not watchdog.restarts()


def test_wedged_engine_is_restarted_within_its_bound_then_left_to_people(server, watchdog):
    server.hang_file.touch()
    try:
        outputs = [watchdog.run() for _run in range(6)]
    finally:
        server.hang_file.unlink()
    # runs 1, 3, 5: first failure; 2 and 4: second failure -> restart; 6: budget (2) spent -> gave up
    assert "generation failed while the server is ready (1/2): demo: no answer within 2s" in outputs[0]
    assert "restarting after 2 consecutive failed generations (restart 1 of at most 2 an hour)" in outputs[1]
    assert "restart 2 of at most 2 an hour" in outputs[3]
    assert watchdog.restarts() == [f"restart {UNIT}"] * 2
    assert "GAVE UP: 2 restarts in the last hour already" in outputs[5]
    metrics = watchdog.metrics()
    assert _metric(metrics, "triton_watchdog_gave_up") == 1
    assert _metric(metrics, "triton_watchdog_restarts_last_hour") == 2
    assert _metric(metrics, "triton_watchdog_restarts_total") == 2
    assert _metric(metrics, "triton_watchdog_model_ready", "demo") == 1  # still "ready": the point of it
    assert _metric(metrics, "triton_watchdog_generation_ok", "demo") == 0
    state = json.loads(Path(watchdog.config["state_file"]).read_text(encoding="utf-8"))
    assert state["failures"] == 2 and len(state["restarts"]) == 2


def test_unusable_configuration_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"unit": UNIT}), encoding="utf-8")
    done = subprocess.run([sys.executable, str(WATCHDOG), str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "missing keys: instance, url" in done.stdout


@pytest.mark.parametrize("overrides", [
    # every start counts against StartLimitBurst (systemd.unit(5), StartLimitIntervalSec=):
    # 5 watchdog restarts after the start they follow is the 6th start in 30 min
    {"triton_server_watchdog_max_restarts_per_hour": 5},
    # an interval of two hours holds two hours of the watchdog's budget: 2 x 3 = 6 starts
    {"triton_server_watchdog_max_restarts_per_hour": 3, "triton_server_start_limit_interval_sec": 7200},
])
def test_a_restart_budget_the_start_limit_cannot_hold_is_refused(tmp_path, overrides):
    # the watchdog is on by default: nothing else set
    run = run_triton_server_role(tmp_path, overrides)
    assert_refused_before_any_change(
        run, f"triton_server_watchdog_max_restarts_per_hour {overrides['triton_server_watchdog_max_restarts_per_hour']} "
        "cannot hold with the unit's start limit (triton_server_start_limit_burst 5 starts in")


def test_the_defaults_hold_the_start_limit(tmp_path):
    """With nothing set the watchdog is on, and its budget fits in the unit's start limit
    (2 restarts an hour x ceil(1800 s / 1 h) = 2 < burst 5): the check runs and passes."""
    run = run_triton_server_role(tmp_path, {})
    task = "Check that the watchdog's restarts fit in the unit's start limit]"
    assert task in run.stdout, run.stdout[-3000:]
    result = run.stdout.split(task, 1)[1].split("TASK [", 1)[0]
    assert "ok: [localhost]" in result, result
    assert "cannot hold with the unit's start limit" not in run.stdout + run.stderr
