# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filters over the model catalog triton_models (plugin_utils/model_catalog.py holds its schema)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.triton.plugins.plugin_utils.model_catalog import (
    ModelCatalogError,
    catalog_problems,
    weights_to_sync,
    with_revision,
)

DOCUMENTATION = r"""
name: model_catalog_weights
short_description: The Hub weights the model catalog asks the hf_model role to sync
version_added: "0.2.0"
description:
  - Reads the model catalog C(triton_models) and returns one entry per weights folder, in the form the
    hf_model role syncs, C({name, repo_id, revision, allow_patterns, ignore_patterns}); C(name) is the folder
    under C(hf_model_dir) (C(weights.dir), default the model's name).
  - Two catalog entries may share one folder when their weights are the same; the folder is listed once.
  - A bad catalog fails naming the entry and key, e.g. C(triton_models[1].weights.repo_id).
  - The filter C(model_catalog_problems) returns the same checks as a list of messages (empty when the catalog
    is valid), for preflight; C(model_catalog_revision) returns the catalog with one model's weights at a new
    revision (every entry served from that folder moves with it), for C(onprem.triton.upgrade_model);
    C(model_catalog_served) returns the entries a server serves (C(serve) is not false).
positional: _input
options:
  _input:
    description: The model catalog, C(triton_models).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: What hf_model syncs
  ansible.builtin.debug:
    msg: "{{ triton_models | onprem.triton.model_catalog_weights }}"

- name: Refuse a bad catalog, naming the entry
  ansible.builtin.assert:
    that: triton_models | onprem.triton.model_catalog_problems | length == 0
    fail_msg: "{{ triton_models | onprem.triton.model_catalog_problems | join('; ') }}"

- name: Move llama to a new commit
  ansible.builtin.set_fact:
    triton_models: "{{ triton_models | onprem.triton.model_catalog_revision('llama', '0123abcd') }}"
"""

RETURN = r"""
_value:
  description: The weights to sync, one per folder.
  type: list
  elements: dict
"""


def _call(function, *args):
    try:
        return function(*args)
    except ModelCatalogError as error:
        raise AnsibleFilterError(str(error))


def model_catalog_weights(models):
    """The hf_model sync list of the catalog."""
    return _call(weights_to_sync, models)


def model_catalog_served(models):
    """The entries a server serves (serve is not false), as the catalog lists them; not validated."""
    return [entry for entry in models or [] if not (isinstance(entry, dict) and entry.get("serve", True) is False)]


def model_catalog_problems(models):
    """The catalog's problems, as messages naming the variable."""
    return catalog_problems(models)


def model_catalog_revision(models, name, revision):
    """The catalog with model ``name``'s weights at ``revision``."""
    return _call(with_revision, models, name, revision)


class FilterModule:
    """onprem.triton model catalog filters."""

    def filters(self):
        return {
            "model_catalog_weights": model_catalog_weights,
            "model_catalog_problems": model_catalog_problems,
            "model_catalog_served": model_catalog_served,
            "model_catalog_revision": model_catalog_revision,
        }
