# SPDX-License-Identifier: Apache-2.0
"""playbooks/upgrade_triton.yml on a two-host fleet from 25.12 to 26.07, against this machine
(connection local, no container, no GPU: the driver is what the inventory would install): the
report names the image, the driver branch the target needs and nvidia_driver cannot install yet,
the models re-rendered or switched to the LLM-API layout, and the inventory values 26.07 refuses;
nothing on the hosts changed (every host task ok or skipped, check mode)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
INVENTORY = {
    "all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "triton_release": "25.12", "nvidia_driver_source": "cuda_repo",
                 "model_repository_gpus": [{"index": 0, "memory_total_mib": 81559}]},
        "children": {"triton_servers": {"children": {
            "triton_vllm": {"hosts": {"gpu-vllm-01": {
                "triton_server_backend": "vllm",
                "triton_models": [
                    {"name": "chat", "backend": "vllm", "hf_repo_id": "o/chat", "engine_args": {"max_model_len": 4096}},
                    # accepted by vLLM 0.11.1 (25.12), gone in 0.24.0 (26.07)
                    {"name": "old", "backend": "vllm", "hf_repo_id": "o/old", "engine_args": {"swap_space": 4},
                     "gpu_memory_utilization": 0.3}]}}},
            "triton_trtllm": {"hosts": {"gpu-trtllm-01": {
                "triton_server_backend": "trtllm",
                "triton_models": [{"name": "mistral", "backend": "tensorrtllm", "hf_repo_id": "o/m"}]}}},
        }}},
    }
}


def run(tmp_path, *extra):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump(INVENTORY), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".ansible" / "collections"), ANSIBLE_NOCOLOR="1",
               FLEET_REPORT_DIR=str(tmp_path / "reports"))
    result = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory),
                             str(REPO / "playbooks" / "upgrade_triton.yml")] + list(extra),
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    return result.returncode, result.stdout + result.stderr


def test_the_report_from_25_12_to_26_07(tmp_path):
    # As of 2026-11-30: R610, the lowest branch 26.07's vLLM image runs on, ended in August 2026.
    rc, out = run(tmp_path, "-e", "upgrade_triton_release=26.07", "-e", "upgrade_triton_today=2026-11-30")
    assert rc == 0, out
    report = (tmp_path / "reports" / "upgrade_triton-26.07.txt").read_text(encoding="utf-8")
    lines = report.splitlines()
    assert lines[0] == "HOST | KIND | WHAT | ACTION"
    expected = [
        "gpu-vllm-01 | image | 25.12-vllm-python-py3 -> 26.07-vllm-python-py3 |",
        # the branch the inventory installs is too old: the report names the one to set
        "gpu-vllm-01 | variable | nvidia_driver_branch=590 | refused by the nvidia_driver preflight: branch R590 is older"
        " than 610.43.02, the minimum for 26.07-vllm-python-py3 (CUDA 13.3.0); set nvidia_driver_branch to 615 and"
        " nvidia_driver_kernel_modules to open (the only modules branch 615 offers) (610: 2026-08 past its end of"
        " life on 2026-11-30)",
        "gpu-vllm-01 | model | chat | re-rendered and reloaded: model.json checked against vLLM 0.24.0 (was 0.11.1)",
        "gpu-vllm-01 | variable | triton_models[1].engine_args.swap_space | refused by the model_repository"
        " preflight",
        "gpu-trtllm-01 | image | 25.12-trtllm-python-py3 -> 26.07-trtllm-python-py3 |",
        "gpu-trtllm-01 | driver | nvidia_driver_branch 590 | ok (branch R590 meets 590.44.01",
        "gpu-trtllm-01 | model | mistral | re-rendered as layout llmapi (was inflight_batcher, the default of 25.12)",
    ]
    for start in expected:
        assert any(line.startswith(start) for line in lines), "%s\nnot in:\n%s" % (start, report)
    data = json.loads((tmp_path / "reports" / "upgrade_triton-26.07.json").read_text(encoding="utf-8"))
    assert data["gpu-vllm-01"]["current"] == "25.12" and data["gpu-vllm-01"]["target"] == "26.07"
    # nothing changed on the hosts: every recap line of a host says changed=0
    recap = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(gpu-\S+)\s*: ok=\d+\s+changed=(\d+)", out, re.M)}
    assert recap == {"gpu-vllm-01": 0, "gpu-trtllm-01": 0}, out


def test_an_unknown_target_lists_the_known_releases(tmp_path):
    rc, out = run(tmp_path, "-e", "upgrade_triton_release=27.01")
    assert rc != 0
    assert "upgrade_triton_release: Triton release '27.01' is not in the release table (known: 26.08, 26.07, 25.12" in out
