# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filters over triton_models: what hf_model syncs, preflight's problems, upgrade_model's revision."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.triton.plugins.filter.model_catalog import FilterModule

FILTERS = FilterModule().filters()
CATALOG = [{"name": "tiny_llm", "backend": "vllm", "weights": {"repo_id": "onprem-test/tiny-llm", "revision": "v1.0",
                                                               "dir": "tiny-llm"}}]


def test_weights_and_revision():
    assert FILTERS["model_catalog_weights"](CATALOG) == [{"name": "tiny-llm", "repo_id": "onprem-test/tiny-llm",
                                                         "revision": "v1.0"}]
    upgraded = FILTERS["model_catalog_revision"](CATALOG, "tiny_llm", "v2.0")
    assert upgraded[0]["weights"]["revision"] == "v2.0" and CATALOG[0]["weights"]["revision"] == "v1.0"


def test_problems_are_messages_and_errors_are_filter_errors():
    bad = [{"name": "tiny_llm", "weights": {"repo_id": "no-owner"}}]
    assert FILTERS["model_catalog_problems"](bad) == [
        "triton_models[0].weights.repo_id: must be a Hub id owner/name, got 'no-owner'"]
    with pytest.raises(AnsibleFilterError, match=r"triton_models\[0\]\.weights\.repo_id"):
        FILTERS["model_catalog_weights"](bad)
    with pytest.raises(AnsibleFilterError, match="upgrade_model_name: 'other' is not a model"):
        FILTERS["model_catalog_revision"](CATALOG, "other", "v2.0")


def test_served_skips_only_entries_marked_not_served():
    catalog = [{"name": "a", "model_path": "/a"}, {"name": "b", "serve": False, "weights": {"repo_id": "o/b"}},
               {"name": "c", "serve": True, "model_path": "/c"}]
    assert [entry["name"] for entry in FILTERS["model_catalog_served"](catalog)] == ["a", "c"]
    assert FILTERS["model_catalog_served"](None) == []
