# SPDX-License-Identifier: Apache-2.0
"""Rolling update across three hosts with playbooks/serve.yml itself (its serial,
max_fail_percentage and the rollback of its roles, not a copy of them): a bad change
stops at the first batch, whose host is rolled back and serves again, while the
others never change; in a batch of two (triton_rollout_serial=2), one failed host of
two stops the rollout before the next batch (max_fail_percentage 0: a one-host batch
would stop whatever the percentage, since Ansible ends a play when a whole batch
failed), while the good host of that batch takes its change by a model reload.
A good change rolling through every host one at a time is molecule fleet's (its
rolling restart and plan rounds), which serves the same playbook."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

HOSTS = {"a": 18410, "b": 18420, "c": 18430}
REPO = "/opt/triton/repository"
REPO_KEY = "molecule-repository-key-0123456789"
SERVE = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "serve.yml"
SERVE_PLAY = "PLAY [Model repository, Triton server and the generation gate]"
# The bad change (inventory/group_vars/all/triton_fleet.yml): a load failure only the engine sees.
BAD_ARG = "max_num_batched_tokens (16) is smaller than max_model_len (2048)"


def _docker(instance, *args):
    return subprocess.run(["docker", "exec", f"triton-fleet-debian12-{instance}", *args],
                          capture_output=True, text=True, check=False)


def _state(instance):
    """What a host serves and holds: the generation current points at, when its container
    started, and whether any generation on disk carries the bad change."""
    generation = _docker(instance, "readlink", "-f", f"{REPO}/current").stdout.strip()
    started = _docker(instance, "docker", "inspect", "-f", "{{.State.StartedAt}}", f"triton-fleet{instance}").stdout.strip()
    bad = _docker(instance, "grep", "-rlF", BAD_ARG, f"{REPO}/generations").stdout.split()
    return {"current": generation, "started": started, "bad_generations": bad}


def _last_good(instance):
    """What triton_server recorded as the host's last configuration that passed the gate."""
    return json.loads(_docker(instance, "cat", f"/var/lib/triton-server/fleet{instance}/last-good.json").stdout or "{}")


def _model_json(instance, generation):
    return json.loads(_docker(instance, "cat", f"{generation}/demo/1/model.json").stdout)


def _rollout(change, *extra):
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_FORCE_COLOR="0")
    cfg = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.cfg"
    if cfg.exists():
        env["ANSIBLE_CONFIG"] = str(cfg)
    return subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(SERVE),
                           "-e", f"triton_fleet_change={change}", *extra],
                          capture_output=True, text=True, env=env, check=False, timeout=1200)


def _serve_play_hosts(output):
    """The hosts the serving play ran a task on (a host of a batch never started has none).
    Not the PLAY RECAP: the read-only preflight play before it checks every host."""
    play = output[output.index(SERVE_PLAY):output.rindex("PLAY RECAP")]
    hosts = set(re.findall(r"^(?:ok|changed|fatal|skipping|failed): \[([^\] ]+)", play, re.MULTILINE))
    for names in re.findall(r"^included: .* for (.+)$", play, re.MULTILINE):
        hosts.update(name.strip() for name in names.split(","))
    return sorted(hosts)


def _gate(instance):
    args = json.dumps({"url": f"127.0.0.1:{HOSTS[instance]}", "models": [{"name": "demo"}],
                       "prompt": "the quick brown fox", "expected_substring": "quick", "wait_timeout": 30,
                       "headers": {"triton-repository-key": REPO_KEY}})
    return subprocess.run(["ansible", "localhost", "-m", "onprem.triton.triton_check", "-a", args],
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def baseline():
    return {instance: _state(instance) for instance in HOSTS}


def test_baseline_serves_the_first_generation(baseline):
    generations = {state["current"] for state in baseline.values()}
    assert len(generations) == 1, baseline
    (generation,) = generations
    assert generation.startswith(f"{REPO}/generations/"), generation
    for instance, state in baseline.items():
        assert state["started"], instance
        assert not state["bad_generations"], instance
        assert _model_json(instance, generation)["gpu_memory_utilization"] == 0.5


def test_bad_change_stops_at_the_first_batch_and_rolls_it_back():
    before = {instance: _state(instance) for instance in HOSTS}
    run = _rollout("bad")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    # serve.yml's max_fail_percentage 0 with serial: the first host fails, no other batch starts
    changed = [instance for instance in HOSTS if _state(instance)["bad_generations"]]
    assert changed == ["a"], (changed, output[-4000:])
    assert _serve_play_hosts(output) == ["triton-fleet-debian12-a"], output[-2000:]
    assert output.count(SERVE_PLAY) == 1, output[-4000:]
    # the failure names the cause read from the server log, and the rollback
    assert "cause bad_config" in output, output[-4000:]
    assert "failed to load 'demo' version 1" in output and BAD_ARG in output, output[-4000:]
    assert f"rolled back to {before['a']['current']}" in output, output[-4000:]
    # the failed host serves the previous generation again
    state = _state("a")
    assert state["current"] == before["a"]["current"]
    assert _docker("a", "systemctl", "is-active", "triton-fleeta").stdout.strip() == "active"
    gate = _gate("a")
    assert gate.returncode == 0, gate.stdout + gate.stderr
    # the other hosts were never touched
    for instance in ("b", "c"):
        assert _state(instance) == before[instance], instance


def test_one_failed_host_in_a_batch_stops_the_rollout_before_the_next_batch():
    before = {instance: _state(instance) for instance in HOSTS}
    run = _rollout("better", "-e", "triton_rollout_serial=2", "-e", "triton_fleet_bad_host=triton-fleet-debian12-a")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    # batch 1 is a (bad change) and b (good one); a failed: 50% > serve.yml's max_fail_percentage
    assert "cause bad_config" in output and f"rolled back to {before['a']['current']}" in output, output[-4000:]
    state = _state("a")
    assert state["current"] == before["a"]["current"] and state["bad_generations"], state
    assert _docker("a", "systemctl", "is-active", "triton-fleeta").stdout.strip() == "active"
    # ... so batch 2 (c) never started: c is not in the recap and did not change
    assert output.count(SERVE_PLAY) == 1, output[-4000:]
    assert _serve_play_hosts(output) == ["triton-fleet-debian12-a", "triton-fleet-debian12-b"], output[-2000:]
    assert _state("c") == before["c"]
    assert _model_json("c", _state("c")["current"])["gpu_memory_utilization"] == 0.5
    # b, in the same batch, took its good change in the task where a failed: a new generation,
    # reloaded through the repository API, no restart ...
    state = _state("b")
    assert state["current"] != before["b"]["current"] and not state["bad_generations"], state
    assert _model_json("b", state["current"])["gpu_memory_utilization"] == 0.7
    assert state["started"] == before["b"]["started"]
    log = _docker("b", "journalctl", "-u", "triton-fleetb", "-o", "cat", "--no-pager").stdout
    assert log.count("successfully loaded 'demo'") == 2
    # ... and finished its gate before a failed (Ansible ends the batch right after the task whose
    # failures pass max_fail_percentage): b's new generation is its last good one, a's is not.
    assert _last_good("b")["repository_target"] == state["current"], _last_good("b")
    assert _last_good("a")["repository_target"] == before["a"]["current"], _last_good("a")
    failed = re.search(r"^fatal: \[triton-fleet-debian12-a\]: FAILED!.*$", output, re.MULTILINE)
    assert failed and "did not bring its models up" in output[failed.start():], output[-4000:]
