# SPDX-License-Identifier: Apache-2.0
"""triton_model_repository_render as Ansible runs it: success returns the files
and facts; a bad variable fails naming it."""

import json
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.onprem.triton.plugins.modules import triton_model_repository_render as module

TEMPLATES = str(Path(__file__).resolve().parents[4] / "roles" / "model_repository" / "templates")
CONTRACTS = str(Path(__file__).resolve().parents[4] / "roles" / "model_repository" / "files" / "vllm_contract")


def run(capsys, **params):
    params.setdefault("vllm_contracts_dir", CONTRACTS)
    with patch_module_args(dict(templates_dir=TEMPLATES, **params)), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def test_renders_from_gpu_facts(capsys):
    out = run(capsys, gpu_info={"count": 1, "gpus": [{"index": 0, "memory_total_mib": 24564}]},
              models=[{"name": "gemma_local", "backend": "vllm", "model_path": "/opt/models/gemma_local"}])
    assert not out["changed"] and out["load_models"] == ["gemma_local"]
    assert json.loads(out["files"]["gemma_local/1/model.json"])["gpu_memory_utilization"] == 0.9
    assert out["configs"]["gemma_local"] == {"backend": "vllm", "max_batch_size": 0, "decoupled": True}


def test_bad_variable_fails_naming_it(capsys):
    out = run(capsys, gpus=[{"index": 0, "memory_total_mib": 24564}],
              models=[{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "gpus": [3]}])
    assert out["failed"] and out["variable"] == "triton_models[0].gpus"
    assert out["msg"].startswith("triton_models[0].gpus: GPU(s) [3] not on this host")


def test_engine_args_checked_against_the_pinned_release(capsys):
    out = run(capsys, gpus=[{"index": 0, "memory_total_mib": 24564}], triton_release="25.12",
              models=[{"name": "x", "backend": "vllm", "hf_repo_id": "o/x",
                       "engine_args": {"disable_log_requests": True}}])
    assert out["failed"] and out["variable"] == "triton_models[0].engine_args.disable_log_requests"
    assert "vLLM 0.11.1" in out["msg"] and "TypeError" in out["msg"]


def test_a_release_without_a_vllm_table_is_refused(capsys):
    out = run(capsys, gpus=[{"index": 0, "memory_total_mib": 24564}], triton_release="24.01",
              models=[{"name": "x", "backend": "vllm", "hf_repo_id": "o/x"}])
    assert out["failed"] and out["variable"] == "model_repository_triton_release"
    assert "known: 25.12" in out["msg"]
