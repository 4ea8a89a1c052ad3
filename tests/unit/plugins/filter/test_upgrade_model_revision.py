"""Unit tests of the upgrade_model_revision filter."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.triton.plugins.filter.upgrade_model_revision import upgrade_model_revision

HF_MODELS = [{"name": "tiny-llm", "repo_id": "onprem-test/tiny-llm", "revision": "v1.0"},
             {"name": "other", "repo_id": "org/other", "revision": "main"}]
SERVING = [{"name": "tiny_llm", "backend": "vllm", "model_path": "/opt/models/tiny-llm", "revision": "v1.0"},
           {"name": "tiny_trt", "backend": "tensorrtllm", "model_path": "/opt/models/tiny-llm/"},
           {"name": "hub", "backend": "vllm", "hf_repo_id": "org/other", "revision": "main"}]


def test_the_named_hf_model_gets_the_revision_and_nothing_else_changes():
    upgraded = upgrade_model_revision(HF_MODELS, "tiny-llm", "next")
    assert upgraded == [dict(HF_MODELS[0], revision="next"), HF_MODELS[1]]
    assert HF_MODELS[0]["revision"] == "v1.0"


def test_every_model_served_from_the_synced_copy_gets_the_revision():
    upgraded = upgrade_model_revision(SERVING, "tiny-llm", "next", models_dir="/opt/models/")
    assert [model.get("revision") for model in upgraded] == ["next", "next", "main"]


def test_an_unknown_name_changes_nothing():
    assert upgrade_model_revision(HF_MODELS, "absent", "next") == HF_MODELS


@pytest.mark.parametrize("models, name, revision", [("x", "a", "b"), (HF_MODELS, "", "b"), (HF_MODELS, "a", "")])
def test_bad_input_is_refused(models, name, revision):
    with pytest.raises(AnsibleFilterError):
        upgrade_model_revision(models, name, revision)
