# SPDX-License-Identifier: Apache-2.0
"""triton_model_gpus: where each model really runs, from what a real two-H200 machine's driver said
(tests/fixtures/nvidia/placement_h200x2: nvidia-smi's GPUs and compute apps while three vLLM models
ran) and a process table laid out as that run's: each engine process a child of its model's Python
backend stub (pids from placements.jsonl), tritonserver itself holding a context on each GPU."""

import json
import os
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.onprem.triton.plugins.modules import triton_model_gpus as module

RECORDING = Path(__file__).resolve().parents[3] / "fixtures" / "nvidia" / "placement_h200x2"
STUB = "/opt/tritonserver/backends/python/triton_python_backend_stub"
REPOSITORY = "/opt/triton/repository/current"


def process(proc, pid, ppid, cmdline):
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cmdline").write_bytes(b"\0".join(part.encode() for part in cmdline) + b"\0")
    # the command may hold spaces and parentheses: the parent pid is read after the last ")"
    (proc / str(pid) / "stat").write_text("%d (%s) S %d 1 1 0 -1\n" % (pid, os.path.basename(cmdline[0])[:15], ppid))


@pytest.fixture(name="proc")
def fixture_proc(tmp_path):
    proc = tmp_path / "proc"
    process(proc, 873, 1, ["tritonserver", "--model-repository=" + REPOSITORY])
    for line in (RECORDING / "placements.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        process(proc, record["pid"], 873, [STUB, "%s/%s/1/model.py" % (REPOSITORY, record["model"]), "/%s_shm" %
                                           record["model"], "1048576", "1048576", "873", "/opt/python", "1", record["instance"],
                                           "/opt/tritonserver/backends/vllm"])
        process(proc, record["engine"]["pid"], record["pid"], ["/usr/bin/python3", "-c", "engine (with) spaces"])
    return proc


def rows(name):
    """The recorded CSV (with its header line, as --format=csv writes it)."""
    return module.parse_csv((RECORDING / name).read_text(encoding="utf-8"))


def test_each_model_is_found_on_the_gpu_its_engine_holds(proc):
    models, processes = module.attribute(rows("nvidia_smi_gpus.csv"), rows("nvidia_smi_compute_apps.csv"), str(proc))
    assert models == {"chat_gpu0": [0], "embed_gpu0": [0], "chat_gpu1": [1]}
    server = [p for p in processes if p["pid"] == 873]
    assert [(p["gpu"], p["model"]) for p in server] == [(0, None), (1, None)]
    chat = [p for p in processes if p["model"] == "chat_gpu0"][0]
    assert (chat["pid"], chat["stub_pid"], chat["used_mib"], chat["repository"]) == (1122, 1017, 72188, REPOSITORY)


def test_another_repository_is_left_out(proc):
    models, processes = module.attribute(rows("nvidia_smi_gpus.csv"), rows("nvidia_smi_compute_apps.csv"), str(proc),
                                         "/opt/triton/repository-tp23/current")
    assert models == {} and {p["pid"] for p in processes} == {873}


def test_a_process_gone_meanwhile_belongs_to_no_model(tmp_path):
    models, processes = module.attribute([["0", "GPU-a"]], [["4242", "GPU-a", "10"]], str(tmp_path))
    assert models == {} and processes[0]["model"] is None and processes[0]["gpu"] == 0


def run_module(capsys, **params):
    with patch_module_args(params), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def test_the_module_reads_nvidia_smi(tmp_path, proc, capsys):
    # nvidia-smi answering what the real one answered on that machine (noheader: header dropped)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$1\" in\n"
                   "  --query-gpu=index,uuid) tail -n +2 '%s' | cut -d, -f1,2 ;;\n"
                   "  --query-compute-apps=*) tail -n +2 '%s' ;;\n  *) exit 2 ;;\nesac\n"
                   % (RECORDING / "nvidia_smi_gpus.csv", RECORDING / "nvidia_smi_compute_apps.csv"))
    smi.chmod(0o755)
    result = run_module(capsys, nvidia_smi_path=str(smi), proc_root=str(proc), repository=REPOSITORY + "/")
    assert result["available"] and result["reason"] == "" and not result["changed"]
    assert result["models"] == {"chat_gpu0": [0], "embed_gpu0": [0], "chat_gpu1": [1]}


def test_without_a_driver_it_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = run_module(capsys)
    assert not result["available"] and "nvidia-smi not found" in result["reason"] and result["models"] == {}
    failing = tmp_path / "nvidia-smi"
    failing.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\n"
                       "exit 9\n")
    failing.chmod(0o755)
    result = run_module(capsys, nvidia_smi_path=str(failing))
    assert not result["available"] and "could not communicate" in result["reason"]
