"""The GPU memory plan made on the GPUs real machines reported (tests/fixtures/nvidia/*)."""
import json
import os

import pytest

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "fixtures", "nvidia")
ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "model_repository")
SETTINGS = {"models_dir": "/opt/models", "server_models_dir": "/models", "engines_dir": "/opt/triton/engines",
            "server_engines_dir": "/engines",
            "vllm_contract": mr.load_vllm_contract(os.path.join(ROLE, "files", "vllm_contract"), "25.12")}


def recorded(name):
    with open(os.path.join(FIXTURES, name, "nvidia_gpu_info.json")) as handle:
        return json.load(handle)


def test_gpu_table_of_two_h200s():
    gpus = mr.gpu_table(recorded("h200x2"), None)
    assert [(gpu["index"], gpu["memory_total_mib"]) for gpu in gpus] == [(0, 143771), (1, 143771)]


def test_plan_on_two_h200s_two_pinned_models_and_one_sharing():
    gpus = mr.gpu_table(recorded("h200x2"), None)
    models = mr.normalize_models(
        [{"name": "a", "backend": "vllm", "hf_repo_id": "org/a", "gpus": [0], "gpu_memory_utilization": 0.5},
         {"name": "b", "backend": "vllm", "hf_repo_id": "org/b", "gpus": [1]},
         {"name": "c", "backend": "vllm", "hf_repo_id": "org/c", "gpus": [0], "memory_mib": 40000}],
        gpus, SETTINGS)
    plan = mr.plan_gpu_memory(models, gpus, 0.9)
    assert plan[0]["models"] == {"a": 0.5, "c": pytest.approx(40000 / 143771, abs=1e-4)}
    assert plan[1]["models"] == {"b": 0.9}
    assert plan[0]["total_share"] <= 0.9


def test_one_h100_refuses_a_second_model_past_the_budget():
    gpus = mr.gpu_table(recorded("h100"), None)
    models = mr.normalize_models(
        [{"name": "a", "backend": "vllm", "hf_repo_id": "org/a", "gpu_memory_utilization": 0.6},
         {"name": "b", "backend": "vllm", "hf_repo_id": "org/b", "memory_mib": 40000}],
        gpus, SETTINGS)
    with pytest.raises(mr.ModelRepositoryError, match="GPU 0 .* is overcommitted"):
        mr.plan_gpu_memory(models, gpus, 0.9)
