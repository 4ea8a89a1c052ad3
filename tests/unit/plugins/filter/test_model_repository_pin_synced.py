"""Unit tests of the model_repository_pin_synced filter."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.triton.plugins.filter.model_repository_pin_synced import model_repository_pin_synced

SYNCED = {
    "tiny-llm": {"path": "/opt/models/tiny-llm", "commit_sha": "a" * 40,
                 "version_path": "/opt/models/.versions/tiny-llm@" + "a" * 40 + "-0123abcd"},
}


def test_a_synced_model_is_served_from_its_version_folder():
    models = [{"name": "tiny_llm", "backend": "vllm", "model_path": "/opt/models/tiny-llm/"}]
    pinned = model_repository_pin_synced(models, SYNCED)
    assert pinned == [{"name": "tiny_llm", "backend": "vllm", "model_path": SYNCED["tiny-llm"]["version_path"]}]
    assert models[0]["model_path"] == "/opt/models/tiny-llm/", "the input list must not be modified"


def test_models_not_synced_by_hf_model_are_unchanged():
    models = [{"name": "hub", "backend": "vllm", "hf_repo_id": "org/model"},
              {"name": "own", "backend": "vllm", "model_path": "/srv/own-model"}]
    assert model_repository_pin_synced(models, SYNCED) == models


def test_without_synced_models_nothing_changes():
    models = [{"name": "tiny_llm", "backend": "vllm", "model_path": "/opt/models/tiny-llm"}]
    assert model_repository_pin_synced(models, {}) == models
    # An older fact without version_path leaves the symlink in place.
    assert model_repository_pin_synced(models, {"tiny-llm": {"path": "/opt/models/tiny-llm"}}) == models


@pytest.mark.parametrize("models, synced", [("not a list", {}), ([{"name": "x"}], "not a dict"), (["x"], {})])
def test_bad_input_is_refused(models, synced):
    with pytest.raises(AnsibleFilterError):
        model_repository_pin_synced(models, synced)
