# SPDX-License-Identifier: Apache-2.0
"""Rolling update across three hosts: a good change rolls through all of them;
a bad one stops at the first batch, whose host is rolled back and serves again,
while the others never change. Runs the scenario's converge playbook (serial 1,
max_fail_percentage 0) exactly as a rollout would, then inspects every host."""

import json
import os
import subprocess
from pathlib import Path

import pytest

HOSTS = {"a": 18410, "b": 18420, "c": 18430}
REPO = "/srv/triton/repository"
REPO_KEY = "molecule-repository-key-0123456789"
CONVERGE = Path(__file__).resolve().parents[1] / "converge.yml"


def _docker(instance, *args):
    return subprocess.run(["docker", "exec", f"triton-fleet-debian12-{instance}", *args],
                          capture_output=True, text=True, check=False)


def _state(instance):
    """What a host serves: where current points, and when its container started."""
    link = _docker(instance, "readlink", f"{REPO}/current").stdout.strip()
    started = _docker(instance, "docker", "inspect", "-f", "{{.State.StartedAt}}", f"triton-fleet{instance}").stdout.strip()
    return {"current": link, "started": started,
            "gen3": _docker(instance, "test", "-e", f"{REPO}/generations/gen-3").returncode == 0}


def _rollout(change):
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_FORCE_COLOR="0")
    cfg = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.cfg"
    if cfg.exists():
        env["ANSIBLE_CONFIG"] = str(cfg)
    return subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(CONVERGE),
                           "-e", f"triton_fleet_change={change}"],
                          capture_output=True, text=True, env=env, check=False)


def _gate(instance):
    args = json.dumps({"url": f"127.0.0.1:{HOSTS[instance]}", "models": [{"name": "demo"}],
                       "prompt": "the quick brown fox", "expected_substring": "quick", "wait_timeout": 30,
                       "headers": {"triton-repository-key": REPO_KEY}})
    return subprocess.run(["ansible", "localhost", "-m", "onprem.triton.triton_check", "-a", args],
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def baseline():
    return {instance: _state(instance) for instance in HOSTS}


def test_baseline_serves_generation_1(baseline):
    for instance, state in baseline.items():
        assert state["current"] == f"{REPO}/generations/gen-1", instance
        assert state["started"], instance


def test_good_change_rolls_through_every_host_without_restarts(baseline):
    run = _rollout("good")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for instance in HOSTS:
        state = _state(instance)
        assert state["current"] == f"{REPO}/generations/gen-2", instance
        # the changed model was reloaded through the repository API, not restarted
        assert state["started"] == baseline[instance]["started"], instance
        last_good = json.loads(_docker(instance, "cat", f"/var/lib/triton-server/fleet{instance}/last-good.json").stdout)
        assert last_good["repository_target"] == f"{REPO}/generations/gen-2"
        log = _docker(instance, "journalctl", "-u", f"triton-fleet{instance}", "-o", "cat", "--no-pager").stdout
        assert log.count("successfully loaded 'demo'") == 2, instance


def test_bad_change_stops_at_the_first_batch_and_rolls_it_back():
    before = {instance: _state(instance) for instance in HOSTS}
    run = _rollout("bad")
    assert run.returncode != 0
    changed = [instance for instance in HOSTS if _state(instance)["gen3"]]
    assert len(changed) == 1, (changed, run.stdout[-4000:])
    first = changed[0]
    # the failure names the cause read from the server log, and the rollback
    output = run.stdout + run.stderr
    assert "cause bad_config" in output, output[-4000:]
    assert "failed to load 'demo' version 1" in output and "max_batch_size 8" in output
    assert f"rolled back to {REPO}/generations/gen-2" in output
    # the failed host serves the previous generation again
    state = _state(first)
    assert state["current"] == f"{REPO}/generations/gen-2"
    assert _docker(first, "systemctl", "is-active", f"triton-fleet{first}").stdout.strip() == "active"
    gate = _gate(first)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    # the other hosts were never touched
    for instance in HOSTS:
        if instance != first:
            assert _state(instance) == before[instance], instance
