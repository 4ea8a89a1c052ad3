# SPDX-License-Identifier: Apache-2.0
"""A four-GPU stand-in after serve.yml with model_repository_instances [{tp23, gpus [2, 3], models [big]}]:
two units, each container given only its GPUs (Docker's --gpus, the stand-in runtime hook's record),
each TP=2 engine on the host GPUs its plan says (what the vLLM stand-in logged from inside the
container), its own repository and ports, and both answer a prompt. A setting reaching only tp23's
unit puts the host in serve.yml's roll (its plan, in check mode). A bad change to tp23's model alone
is rolled back on tp23, the main instance untouched. Then the day-2 playbooks on it: status shows
both instances, diagnose covers both, undeploy (last) removes both."""

import json
import os
import re
import subprocess
import sys

import requests

KEY = {"triton-repository-key": "molecule-repository-key-0123456789"}
INSTANCES = {
    # unit, HTTP port, repository, model, the host GPUs the plan gives it
    "main": ("triton-main.service", 18560, "/opt/triton/repository", "small", ["0", "1"]),
    "tp23": ("triton-tp23.service", 18570, "/opt/triton/repository-tp23", "big", ["2", "3"]),
}


def placements(host, unit):
    """The placement records the vLLM stand-in logged inside the container (journal of the unit):
    tritonserver's log writes the message as a quoted string, its quotes escaped ({\\"kind\\": ...}")."""
    log = host.check_output(f"journalctl --unit {unit} --output cat --no-pager")
    marker = "[vllm stand-in] placement "
    return [json.loads(json.loads('"' + line.split(marker, 1)[1].rstrip())) for line in log.splitlines() if marker in line]


def test_each_instance_is_a_running_unit(host):
    for unit, _port, _repo, _model, _gpus in INSTANCES.values():
        service = host.service(unit)
        assert service.is_running and service.is_enabled


def test_each_container_is_given_only_its_gpus(host):
    for name, (_unit, _port, _repo, _model, gpus) in INSTANCES.items():
        # dockerd adds it to the OCI spec at start (--gpus), not to the container's config: read the server's process
        pid = host.check_output(f"docker inspect --format '{{{{.State.Pid}}}}' triton-{name}")
        env = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()
        assert "NVIDIA_VISIBLE_DEVICES=%s" % ",".join(gpus) in env
        unit = host.file(f"/etc/systemd/system/triton-{name}.service").content_string
        assert "--gpus '\"device=%s\"'" % ",".join(gpus) in unit
    # what the runtime hook gave each container that started (the last start of each)
    records = [json.loads(line) for line in
               host.file("/var/log/nvidia-container-runtime-hook-standin.jsonl").content_string.splitlines()]
    containers = {host.check_output(f"docker inspect --format '{{{{.Id}}}}' triton-{name}"): name for name in INSTANCES}
    given = {containers[r["container"]]: r["devices"] for r in records if r["container"] in containers}
    assert given == {"main": [0, 1], "tp23": [2, 3]}


def test_each_engine_runs_on_the_gpus_of_its_plan(host):
    for _name, (unit, _port, _repo, model, gpus) in INSTANCES.items():
        (record,) = [r for r in placements(host, unit) if r["model"] == model][-1:]
        assert record["kind"] == "MODEL" and record["devices"] == ["0", "1"]
        assert record["host_gpus"] == gpus, record


def test_each_instance_has_its_own_repository_and_ports(host):
    for name, (unit, port, repo, model, _gpus) in INSTANCES.items():
        current = host.file(f"{repo}/current")
        assert current.is_symlink and current.linked_to.startswith(f"{repo}/generations/")
        assert sorted(host.file(f"{repo}/current").listdir()) == [model]
        unit_text = host.file(f"/etc/systemd/system/{unit}").content_string
        assert f"--model-repository={repo}/current" in unit_text and f"--http-port={port}" in unit_text
        assert f"--grpc-port={port + 1}" in unit_text and f"--metrics-port={port + 2}" in unit_text
        assert host.file(f"/var/lib/triton-server/{name}/last-good.json").exists


def test_each_instance_serves_its_model_only_and_generates(host):
    for _name, (_unit, port, _repo, model, _gpus) in INSTANCES.items():
        index = requests.post(f"http://127.0.0.1:{port}/v2/repository/index", json={}, headers=KEY, timeout=10).json()
        assert [(entry["name"], entry["state"]) for entry in index] == [(model, "READY")]
        answer = requests.post(f"http://127.0.0.1:{port}/v2/models/{model}/generate", timeout=30, json={
            "text_input": "the quick brown fox", "sampling_parameters": json.dumps({"max_tokens": 2})}).json()
        assert answer["text_output"] == "the quick brown fox the quick"


def _playbook(name, *args, reports=None):
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", os.environ["MOLECULE_INVENTORY_FILE"],
               os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks", name + ".yml"), *args]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", FLEET_REPORT_DIR=str(reports or "/nonexistent"))
    # No terminal: a playbook that asks (undeploy) must answer from its variables, never wait.
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600, env=env,
                          stdin=subprocess.DEVNULL)


def test_a_change_reaching_only_another_instances_unit_puts_the_host_in_the_roll(host):
    """serve.yml's plan compares each extra instance's unit too (issue 15): triton_server_instance_port_step
    moves only tp23's ports (the main instance keeps its own), so its unit alone would change. --check: the
    plan names tp23's unit as the host's one reason to roll, and nothing on the host changes."""
    before = {name: _served(host, name) for name in INSTANCES}
    units = {name: host.file(f"/etc/systemd/system/{unit}").content_string for name, (unit, *_rest) in INSTANCES.items()}
    run = _playbook("serve", "--check", "-e", "triton_server_instance_port_step=20")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    plan = re.findall(r'"msg": "(triton-instances-debian12: (?:rolls|steady).*)"', output)
    assert plan == ["triton-instances-debian12: rolls (tp23: systemd unit)"], plan
    # check mode: both units as they were, neither server restarted, the same generations served
    assert {name: host.file(f"/etc/systemd/system/{unit}").content_string
            for name, (unit, *_rest) in INSTANCES.items()} == units
    assert {name: _served(host, name) for name in INSTANCES} == before


# The models of molecule.yml's host_vars, with the bad change on the other instance's model only: a load
# failure only the engine sees (the vLLM stand-in's FIXTURE_LOAD_FAILURE knob, as molecule/triton_fleet's
# bad change), so model_repository renders and installs it and tp23's gate is the first to fail.
BAD_LOAD = "ValueError: max_num_batched_tokens (16) is smaller than max_model_len (2048)."
BAD_MODELS = {"triton_models": [
    {"name": "small", "backend": "vllm", "model_path": "/opt/models/small", "gpus": [0, 1], "tensor_parallel_size": 2,
     "gpu_memory_utilization": 0.5},
    {"name": "big", "backend": "vllm", "model_path": "/opt/models/big", "gpus": [2, 3], "tensor_parallel_size": 2,
     "gpu_memory_utilization": 0.85, "parameters": {"FIXTURE_LOAD_FAILURE": BAD_LOAD}},
]}


def _served(host, name):
    """The generation an instance's current points at, and the PID of its server process."""
    _unit, _port, repo, _model, _gpus = INSTANCES[name]
    return {"current": host.check_output(f"readlink -f {repo}/current"),
            "pid": host.check_output(f"docker inspect --format '{{{{.State.Pid}}}}' triton-{name}")}


def test_a_bad_change_to_another_instance_is_rolled_back_and_the_main_one_untouched(host, tmp_path):
    before = {name: _served(host, name) for name in INSTANCES}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(BAD_MODELS))
    run = _playbook("serve", "-e", f"@{bad}")
    output = run.stdout + run.stderr  # the failure's message is on stderr
    assert run.returncode != 0, output[-4000:]
    # serve.yml's plan (issue 15) sends the host through the rolling batches for tp23's repository alone
    plan = re.findall(r'"msg": "(triton-instances-debian12: (?:rolls|steady).*)"', output)
    assert len(plan) == 1 and plan[0].startswith("triton-instances-debian12: rolls (tp23: repository generation "), plan
    assert "(models big)" in plan[0] and "main:" not in plan[0], plan
    # the failure names the instance, the cause read from its log and the rollback
    assert "triton-tp23.service on triton-instances-debian12 did not bring its models up" in output, output[-4000:]
    assert BAD_LOAD in output, output[-4000:]
    assert f"rolled back to {before['tp23']['current']}" in output and "passed the gate again" in output, output[-4000:]
    # the bad generation was installed, then current went back to the one before
    assert host.run("grep -rlF FIXTURE_LOAD_FAILURE /opt/triton/repository-tp23/generations").stdout.strip()
    after = {name: _served(host, name) for name in INSTANCES}
    assert after["tp23"]["current"] == before["tp23"]["current"], after
    # the main instance was not restarted, nor its repository changed
    assert after["main"] == before["main"], (before, after)
    # and the rolled back instance serves again
    _unit, port, _repo, model, _gpus = INSTANCES["tp23"]
    answer = requests.post(f"http://127.0.0.1:{port}/v2/models/{model}/generate", timeout=30, json={
        "text_input": "the quick brown fox", "sampling_parameters": json.dumps({"max_tokens": 2})}).json()
    assert answer["text_output"] == "the quick brown fox the quick", answer


def test_status_shows_each_server_instance_of_the_host(host, tmp_path):
    del host  # a host test like the others, so that it runs before the undeploy below
    run = _playbook("status", reports=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    table = (tmp_path / "status.txt").read_text()
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith("triton-instances-debian12")}
    assert set(rows) == {"triton-instances-debian12", "triton-instances-debian12/tp23"}, table
    assert " small " in rows["triton-instances-debian12"] and " READY " in rows["triton-instances-debian12"], table
    assert " big " in rows["triton-instances-debian12/tp23"] and " READY " in rows["triton-instances-debian12/tp23"], table
    assert table.rstrip().endswith("1 of 1 host(s) serving every model"), table
    statuses = json.loads((tmp_path / "status.json").read_text())
    assert sorted((s["instance"], s["unit"]) for s in statuses) == [("main", "triton-main.service"), ("tp23", "triton-tp23.service")]


def test_diagnose_covers_every_server_instance_and_collects_on_the_failing_one(host, tmp_path):
    """tp23's model is unloaded (its watchdog stopped first, so that nothing repairs it meanwhile): diagnose
    names that instance, collects into diagnose/<host>/tp23/ and leaves the serving main instance alone."""
    _unit, port, _repo, model, _gpus = INSTANCES["tp23"]
    host.check_output("systemctl stop triton-tp23-watchdog.timer")
    unloaded = requests.post(f"http://127.0.0.1:{port}/v2/repository/models/{model}/unload", json={}, headers=KEY, timeout=30)
    assert unloaded.status_code == 200, unloaded.text
    run = _playbook("diagnose", reports=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "triton-instances-debian12/tp23: " in run.stdout, run.stdout[-3000:]
    assert "1 of 1 host(s) do not serve every model (server instances: triton-instances-debian12/tp23)" in run.stdout, \
        run.stdout[-3000:]
    folder = tmp_path / "diagnose" / "triton-instances-debian12"
    for collected in ("unit-status.txt", "journal.txt", "container.log", "mounts.txt", "disk.txt", "gpu.txt", "summary.txt"):
        assert (folder / "tp23" / collected).is_file(), collected
    assert "triton-tp23.service" in (folder / "tp23" / "unit-status.txt").read_text()
    assert "ok       /opt/triton/repository-tp23/current" in (folder / "tp23" / "mounts.txt").read_text()
    summary = (folder / "tp23" / "summary.txt").read_text()
    assert "instance:      tp23" in summary and "unit:          triton-tp23.service" in summary, summary
    # the main instance serves: nothing collected for it
    assert not (folder / "summary.txt").exists()
    # every instance on request, each in its own folder
    # the variable's name before issue 14 moved diagnose to triton_ops: refused, naming the new one
    run = _playbook("diagnose", "-e", "triton_server_diagnose_all=true", reports=tmp_path / "old")
    assert run.returncode != 0 and "set triton_ops_diagnose_all instead" in run.stdout + run.stderr, run.stdout[-3000:]
    assert not (tmp_path / "old").exists()
    run = _playbook("diagnose", "-e", "triton_ops_diagnose_all=true", reports=tmp_path / "all")
    assert run.returncode == 0, run.stdout[-3000:]
    folder = tmp_path / "all" / "diagnose" / "triton-instances-debian12"
    assert "unit:          triton-main.service" in (folder / "summary.txt").read_text()
    assert "unit:          triton-tp23.service" in (folder / "tp23" / "summary.txt").read_text()


def test_undeploy_removes_every_server_instance_of_the_host(host, tmp_path):
    # not confirmed (no terminal to ask on): nothing removed
    run = _playbook("undeploy")
    assert run.returncode != 0 and "undeploy not confirmed, nothing removed" in run.stdout + run.stderr, run.stdout[-3000:]
    for _name, (unit, _port, _repo, _model, _gpus) in INSTANCES.items():
        assert host.file(f"/etc/systemd/system/{unit}").exists
    # tp23 no longer in the inventory: found on the host (its state folder) and removed all the same
    unlisted = tmp_path / "unlisted.json"
    unlisted.write_text(json.dumps({"model_repository_instances": []}))
    run = _playbook("undeploy", "-e", "undeploy_confirm=yes", "-e", f"@{unlisted}")
    assert run.returncode == 0, run.stdout[-3000:]
    for name, (unit, _port, repo, _model, _gpus) in INSTANCES.items():
        assert not host.file(f"/etc/systemd/system/{unit}").exists
        assert not host.file(repo).exists
        assert not host.file(f"/var/lib/triton-server/{name}").exists
        assert host.run(f"docker inspect triton-{name}").rc != 0
    # the synced weights stay unless asked
    assert host.file("/opt/models/big").exists
