# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""triton_model_repository_render as Ansible runs it: an action plugin in the controller's process.
Success returns the files and facts; a bad variable fails naming it; a wrong argument is refused
by the argument spec the documentation describes."""

import json
from pathlib import Path
from unittest.mock import MagicMock

import pytest
import yaml
from ansible.errors import AnsibleError

from ansible_collections.onprem.triton.plugins.action import triton_model_repository_render as action
from ansible_collections.onprem.triton.plugins.modules import triton_model_repository_render as docs

ROOT = Path(__file__).resolve().parents[4]
TEMPLATES = str(ROOT / "roles" / "model_repository" / "templates")
CONTRACTS = str(ROOT / "roles" / "model_repository" / "files" / "vllm_contract")


def run(**args):
    """ActionModule.run with the task's arguments, as the task executor calls it."""
    args.setdefault("vllm_contracts_dir", CONTRACTS)
    args.setdefault("templates_dir", TEMPLATES)
    task = MagicMock(args=args, async_val=0, check_mode=False, diff=False)
    plugin = action.ActionModule(task, MagicMock(), MagicMock(check_mode=False), MagicMock(), MagicMock(), MagicMock())
    return plugin.run(task_vars={})


def test_renders_from_gpu_facts():
    out = run(gpu_info={"count": 1, "gpus": [{"index": 0, "memory_total_mib": 24564}]},
              models=[{"name": "gemma_local", "backend": "vllm", "model_path": "/opt/models/gemma_local"}])
    assert not out.get("failed") and not out["changed"] and out["load_models"] == ["gemma_local"]
    assert json.loads(out["files"]["gemma_local/1/model.json"])["gpu_memory_utilization"] == 0.9
    assert out["configs"]["gemma_local"] == {"backend": "vllm", "max_batch_size": 0, "decoupled": True}


def test_synced_weights_are_served_from_their_version_folder():
    version = "/opt/models/.versions/tiny-llm@" + "c" * 40
    out = run(gpus=[{"index": 0, "memory_total_mib": 24564}],
              models=[{"name": "tiny_llm", "backend": "vllm", "weights": {"repo_id": "org/tiny", "dir": "tiny-llm"}},
                      {"name": "other", "serve": False, "weights": {"repo_id": "org/other"}}],
              synced={"tiny-llm": {"path": "/opt/models/tiny-llm", "version_path": version}})
    assert out["load_models"] == ["tiny_llm"]  # the unserved entry is not rendered
    assert json.loads(out["files"]["tiny_llm/1/model.json"])["model"] == version


def test_bad_variable_fails_naming_it():
    out = run(gpus=[{"index": 0, "memory_total_mib": 24564}],
              models=[{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "gpus": [3]}])
    assert out["failed"] and out["variable"] == "triton_models[0].gpus"
    assert out["msg"].startswith("triton_models[0].gpus: GPU(s) [3] not on this host")


def test_a_catalog_error_fails_naming_the_entry():
    """The catalog's own check (no weights source) reaches the task as it is, not re-wrapped."""
    out = run(gpus=[{"index": 0, "memory_total_mib": 24564}],
              models=[{"name": "x", "backend": "vllm"}])
    assert out["failed"] and out["variable"].startswith("triton_models[0]")
    assert out["msg"].startswith(out["variable"] + ": ")


def test_engine_args_checked_against_the_pinned_release():
    out = run(gpus=[{"index": 0, "memory_total_mib": 24564}], triton_release="25.12",
              models=[{"name": "x", "backend": "vllm", "hf_repo_id": "o/x",
                       "engine_args": {"disable_log_requests": True}}])
    assert out["failed"] and out["variable"] == "triton_models[0].engine_args.disable_log_requests"
    assert "vLLM 0.11.1" in out["msg"] and "TypeError" in out["msg"]


def test_a_release_without_a_vllm_table_is_refused():
    out = run(gpus=[{"index": 0, "memory_total_mib": 24564}], triton_release="24.01",
              models=[{"name": "x", "backend": "vllm", "hf_repo_id": "o/x"}])
    assert out["failed"] and out["variable"] == "model_repository_triton_release"
    assert "known: 25.12" in out["msg"]


def test_unknown_and_mistyped_arguments_are_refused():
    with pytest.raises(AnsibleError, match="colour"):
        run(models=[], colour="red")
    with pytest.raises(AnsibleError, match="gpu_memory_budget"):
        run(models=[], gpu_memory_budget="most")


def test_the_documentation_describes_the_argument_spec():
    """The options documented in the module file are exactly the action's argument spec."""
    documented = yaml.safe_load(docs.DOCUMENTATION)["options"]
    assert set(documented) == set(action.ARGUMENT_SPEC)
    for name, spec in action.ARGUMENT_SPEC.items():
        assert documented[name].get("type", "str") == spec.get("type", "str"), name
        assert documented[name].get("default") == spec.get("default"), name
        assert bool(documented[name].get("required")) == bool(spec.get("required")), name
