# SPDX-License-Identifier: Apache-2.0
"""One variable, triton_release, through real Ansible (no container, no GPU): the role defaults
derive the server image, the TensorRT-LLM image and the driver check's container from the
release table, and the model_repository preflight (the real render module, on the controller)
gives a TensorRT-LLM model the release's default layout and refuses what the release does not
offer, naming the variable, before anything changes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: The role defaults, as the roles see them
      ansible.builtin.include_vars:
        file: "{{ item }}"
      loop:
        - %(repo)s/roles/triton_server/defaults/main.yml
        - %(repo)s/roles/nvidia_driver/defaults/main.yml
    - name: Print what follows from the release
      ansible.builtin.debug:
        msg: "DERIVED {{ {'server': triton_server_image_tag, 'driver_check': nvidia_driver_triton_container_tag} | to_json }}"
    - name: Run the model_repository preflight
      ansible.builtin.include_role:
        name: onprem.triton.model_repository
        tasks_from: preflight.yml
        public: true
    - name: Print what the repository would load
      ansible.builtin.debug:
        msg: "RENDERED {{ {'load': model_repository_load_models, 'trtllm_image': model_repository_trtllm_image} | to_json }}"
"""
TRT = {"name": "m", "backend": "tensorrtllm", "hf_repo_id": "o/m"}


def _run(tmp_path, variables):
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY % {"repo": REPO}, encoding="utf-8")
    extra = tmp_path / "vars.json"
    base = {"ansible_python_interpreter": sys.executable, "model_repository_gpus": [{"index": 0, "memory_total_mib": 81559}],
            "triton_models": [TRT]}
    extra.write_text(json.dumps(dict(base, **variables)), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".ansible" / "collections"), ANSIBLE_NOCOLOR="1")
    run = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-c", "local", "-i", "localhost,",
                          str(playbook), "-e", "@" + str(extra)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180, check=False)
    return run.returncode, run.stdout + run.stderr


def _line(out, word):
    for line in out.splitlines():
        if '"msg": "%s ' % word in line:
            return json.loads(json.loads("{%s}" % line.strip().rstrip(","))["msg"][len(word) + 1:])
    raise AssertionError("no %s line in:\n%s" % (word, out))


@pytest.mark.parametrize("variables, server, driver, trtllm_image, load", [
    # Unset: the table's default release (25.12); TRT-LLM keeps the engine ensemble by default.
    ({}, "25.12-vllm-python-py3", "25.12-vllm-python-py3", "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3",
     ["m", "preprocessing", "m_tensorrt_llm", "postprocessing", "m_tensorrt_llm_bls"]),
    # 26.07: the engine backend is deprecated, so the LLM-API model is the default.
    ({"triton_release": "26.07"}, "26.07-vllm-python-py3", "26.07-vllm-python-py3",
     "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3", ["m"]),
    ({"triton_release": "26.07", "triton_server_backend": "trtllm"}, "26.07-trtllm-python-py3", "26.07-trtllm-python-py3",
     "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3", ["m"]),
    # A mirror: the image variables stay overrides.
    ({"triton_release": "26.07", "model_repository_trtllm_image": "mirror.example/tritonserver@sha256:" + "a" * 64},
     "26.07-vllm-python-py3", "26.07-vllm-python-py3", "mirror.example/tritonserver@sha256:" + "a" * 64, ["m"]),
])
def test_everything_follows_triton_release(tmp_path, variables, server, driver, trtllm_image, load):
    rc, out = _run(tmp_path, variables)
    assert rc == 0, out
    assert _line(out, "DERIVED") == {"server": server, "driver_check": driver}
    rendered = _line(out, "RENDERED")
    assert rendered["trtllm_image"] == trtllm_image
    assert sorted(rendered["load"]) == sorted(load)


@pytest.mark.parametrize("variables, expected", [
    ({"triton_release": "26.99"},
     ["model_repository_triton_release: Triton release '26.99' is not in the release table (known: 26.08, 26.07, 25.12"]),
    ({"triton_release": "26.07", "triton_models": [dict(TRT, trtllm={"layout": "inflight_batcher"})]},
     ["triton_models[0].trtllm.layout: layout 'inflight_batcher' is deprecated in TensorRT-LLM 1.2.1",
      "layouts offered: llmapi"]),
    ({"triton_release": "26.08"},
     ["triton_models[0].backend: trtllm is not offered by Triton release 26.08"]),
    ({"triton_release": "25.10", "triton_models": [{"name": "v", "backend": "vllm", "hf_repo_id": "o/v"}]},
     ["model_repository_triton_release: no vLLM table for Triton release '25.10'"]),
])
def test_what_the_release_does_not_offer_is_refused_by_name(tmp_path, variables, expected):
    rc, out = _run(tmp_path, variables)
    assert rc != 0, out
    for text in expected:
        assert text in out, out
    assert "RENDERED" not in out
