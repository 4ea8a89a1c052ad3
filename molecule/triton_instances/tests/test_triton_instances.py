# SPDX-License-Identifier: Apache-2.0
"""A four-GPU stand-in after serve.yml with model_repository_instances [{tp23, gpus [2, 3], models [big]}]:
two units, each container given only its GPUs (Docker's --gpus, the stand-in runtime hook's record),
each TP=2 engine on the host GPUs its plan says (what the vLLM stand-in logged from inside the
container), its own repository and ports, and both answer a prompt. Then the day-2 playbooks on it:
status shows both instances, undeploy (last) removes both."""

import json
import os
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


def test_undeploy_removes_every_server_instance_of_the_host(host):
    run = _playbook("undeploy", "-e", "undeploy_confirm=yes")
    assert run.returncode == 0, run.stdout[-3000:]
    for name, (unit, _port, repo, _model, _gpus) in INSTANCES.items():
        assert not host.file(f"/etc/systemd/system/{unit}").exists
        assert not host.file(repo).exists
        assert not host.file(f"/var/lib/triton-server/{name}").exists
        assert host.run(f"docker inspect triton-{name}").rc != 0
    # the synced weights stay unless asked
    assert host.file("/opt/models/big").exists
