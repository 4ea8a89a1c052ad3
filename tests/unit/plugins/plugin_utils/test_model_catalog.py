# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""The model catalog (triton_models): one declaration per model, read by hf_model and model_repository."""

import copy
import pathlib
import subprocess
import sys

import pytest
import yaml

from ansible_collections.onprem.triton.plugins.plugin_utils import model_catalog as mc
from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr

ROOT = pathlib.Path(__file__).resolve().parents[4]
SHA1 = "a" * 40
SHA2 = "b" * 40

LLAMA = {"name": "llama3_8b", "backend": "vllm", "gpu_memory_utilization": 0.5,
         "weights": {"repo_id": "meta-llama/Llama-3.1-8B-Instruct", "revision": SHA1,
                     "allow_patterns": ["*.safetensors", "*.json"], "dir": "llama-3.1-8b-instruct"}}
GEMMA = {"name": "gemma_local", "backend": "vllm", "model_path": "/data/gemma", "gpu_memory_utilization": 0.3}


def test_weights_to_sync_is_one_entry_per_folder():
    shared = dict(LLAMA, name="llama_second")  # the same weights served twice
    weights = mc.weights_to_sync([LLAMA, GEMMA, shared])
    assert weights == [{"name": "llama-3.1-8b-instruct", "repo_id": "meta-llama/Llama-3.1-8B-Instruct",
                        "revision": SHA1, "allow_patterns": ["*.safetensors", "*.json"]}]


def test_weights_folder_defaults_to_the_name_and_revision_to_main():
    entry = {"name": "tiny", "serve": False, "weights": {"repo_id": "org/tiny"}}
    assert mc.weights_to_sync([entry]) == [{"name": "tiny", "repo_id": "org/tiny", "revision": "main"}]


@pytest.mark.parametrize("catalog, variable, words", [
    ("not a list", "triton_models", "must be a list"),
    ([["x"]], "triton_models[0]", "must be a dict"),
    ([dict(GEMMA, colour="red")], "triton_models[0].colour", "unknown setting"),
    ([dict(GEMMA, name="bad name")], "triton_models[0].name", "must match"),
    ([{"name": "x", "backend": "vllm"}], "triton_models[0]", "says nowhere its weights come from"),
    ([dict(LLAMA, model_path="/data/x")], "triton_models[0].model_path", "not both weights and model_path"),
    ([dict(GEMMA, serve=False)], "triton_models[0].serve", "only makes sense for synced weights"),
    ([dict(GEMMA, serve="no")], "triton_models[0].serve", "must be a boolean"),
    ([dict(LLAMA, weights="org/model")], "triton_models[0].weights", "must be a dict"),
    ([dict(LLAMA, weights={"repo_id": "org/m", "branch": "x"})], "triton_models[0].weights.branch", "unknown setting"),
    ([dict(LLAMA, weights={"repo_id": "just-a-name"})], "triton_models[0].weights.repo_id", "owner/name"),
    ([dict(LLAMA, weights={"repo_id": "org/m", "revision": ""})], "triton_models[0].weights.revision", "branch, tag"),
    ([dict(LLAMA, weights={"repo_id": "org/m", "dir": "../up"})], "triton_models[0].weights.dir", "must match"),
    ([dict(LLAMA, weights={"repo_id": "org/m", "allow_patterns": "*.json"})],
     "triton_models[0].weights.allow_patterns", "list of strings"),
    ([GEMMA, dict(GEMMA)], "triton_models[1].name", "already the name of triton_models[0]"),
    ([LLAMA, dict(LLAMA, name="other", weights=dict(LLAMA["weights"], revision=SHA2))],
     "triton_models[1].weights", "folder 'llama-3.1-8b-instruct' is already triton_models[0]'s"),
])
def test_bad_entries_name_the_variable(catalog, variable, words):
    with pytest.raises(mc.ModelCatalogError) as error:
        mc.check_catalog(catalog)
    assert error.value.variable == variable
    assert words in str(error.value)
    assert mc.catalog_problems(catalog) == [str(error.value)]


def test_a_valid_catalog_has_no_problems():
    assert mc.catalog_problems([LLAMA, GEMMA]) == []
    assert mc.catalog_problems(None) == []


def test_served_models_are_pinned_to_the_synced_copy_by_folder_name():
    synced = {"llama-3.1-8b-instruct": {"path": "/somewhere/else/llama-3.1-8b-instruct",
                                        "version_path": "/opt/models/.versions/llama-3.1-8b-instruct@" + SHA1}}
    served = mc.served_models([{"name": "tiny", "serve": False, "weights": {"repo_id": "org/tiny"}}, LLAMA, GEMMA],
                              synced, "/opt/models/")
    assert [index for index, _model in served] == [1, 2]  # catalog positions, for messages
    llama, gemma = [model for _index, model in served]
    # Looked up by the folder's name, not by comparing path strings (the path above differs).
    assert llama["model_path"] == "/opt/models/.versions/llama-3.1-8b-instruct@" + SHA1
    assert llama["revision"] == SHA1 and "weights" not in llama and "serve" not in llama
    assert gemma == GEMMA


def test_served_models_without_a_sync_read_the_folder():
    (_index, llama), = mc.served_models([LLAMA], {}, "/opt/models")
    assert llama["model_path"] == "/opt/models/llama-3.1-8b-instruct"


def test_with_revision_moves_one_model_and_its_folder_mates():
    catalog = [LLAMA, GEMMA, dict(LLAMA, name="llama_second")]
    before = copy.deepcopy(catalog)
    upgraded = mc.with_revision(catalog, "llama3_8b", SHA2)
    assert catalog == before  # the input is not modified
    assert [entry.get("weights", {}).get("revision") for entry in upgraded] == [SHA2, None, SHA2]
    assert upgraded[1] == GEMMA


@pytest.mark.parametrize("name, revision, words", [
    ("nope", SHA2, "'nope' is not a model of triton_models (known: llama3_8b, gemma_local)"),
    ("gemma_local", SHA2, "'gemma_local' has no weights synced from the Hub"),
    ("llama3_8b", "", "upgrade_model_revision: must be a branch"),
])
def test_with_revision_refuses(name, revision, words):
    with pytest.raises(mc.ModelCatalogError) as error:
        mc.with_revision([LLAMA, GEMMA], name, revision)
    assert words in str(error.value)


def test_repository_errors_name_the_catalog_position():
    """An entry that is not served still counts: the message names the entry the operator wrote."""
    catalog = [{"name": "tiny", "serve": False, "weights": {"repo_id": "org/tiny"}},
               dict(GEMMA, backend="onnx")]
    with pytest.raises(mr.VariableError) as error:
        models, indices = mr.serving_list(catalog, {}, "/opt/models")
        mr.normalize_models(models, [{"index": 0, "memory_total_mib": 81559}],
                            {"models_dir": "/opt/models", "server_models_dir": "/opt/models",
                             "catalog_indices": indices})
    assert error.value.variable == "triton_models[1].backend"


def test_repository_refuses_a_bad_catalog_naming_it():
    with pytest.raises(mr.VariableError) as error:
        mr.serving_list([dict(LLAMA, weights={"repo_id": "nope"})], {}, "/opt/models")
    assert error.value.variable == "triton_models[0].weights.repo_id"


def test_argument_specs_are_generated_from_the_schema():
    """The roles' argument_specs declare triton_models exactly as the schema does."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "model_catalog_specs.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    for role in ("hf_model", "model_repository"):
        specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
        option = specs["argument_specs"]["main"]["options"]["triton_models"]
        assert option["options"] == mc.argument_spec("")["options"]
        assert set(option["options"]["weights"]["options"]) == set(mc.WEIGHTS_OPTIONS)


def test_the_check_catches_a_hand_edit(tmp_path):
    """--check fails when a role's block differs from the schema (so the test above can fail)."""
    copy_root = tmp_path / "tree"
    for part in ("scripts/model_catalog_specs.py", "plugins/plugin_utils/model_catalog.py",
                 "plugins/module_utils/variable_error.py",
                 "roles/hf_model/meta/argument_specs.yml", "roles/model_repository/meta/argument_specs.yml"):
        (copy_root / part).parent.mkdir(parents=True, exist_ok=True)
        (copy_root / part).write_text((ROOT / part).read_text())
    specs = copy_root / "roles" / "hf_model" / "meta" / "argument_specs.yml"
    specs.write_text(specs.read_text().replace("description: Required when served.", "description: Edited."))
    result = subprocess.run([sys.executable, str(copy_root / "scripts" / "model_catalog_specs.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "hf_model" in result.stderr and "model_repository" not in result.stderr
