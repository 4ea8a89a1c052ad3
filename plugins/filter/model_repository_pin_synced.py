# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filter model_repository_pin_synced: serve the exact weights hf_model synced."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: model_repository_pin_synced
short_description: Point each model of a repository at the exact copy of its weights that hf_model synced
version_added: "0.1.0"
description:
  - The role M(onprem.triton.hf_model) installs each model as a symlink C(<hf_model_dir>/<name>) to
    C(<hf_model_dir>/.versions/<name>@<version>) and publishes the fact C(hf_model_synced).
  - For each model whose C(model_path) is such a symlink, this filter returns the model with C(model_path)
    set to the version folder. The repository generation
    then changes when the weights change (so the server reloads them instead of serving the old ones
    from memory), and a rollback to the previous generation also brings back the previous weights.
  - Models that are not synced by hf_model (a Hub id, a folder of your own) are returned unchanged.
positional: _input
options:
  _input:
    description: The model list of the model_repository role (C(model_repository_models)).
    type: list
    elements: dict
    required: true
  synced:
    description: The fact C(hf_model_synced) (model name to its C(path) and C(version_path)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Render the repository against the synced copies
  onprem.triton.triton_model_repository_render:
    models: "{{ model_repository_models | onprem.triton.model_repository_pin_synced(hf_model_synced | default({})) }}"
"""

RETURN = r"""
_value:
  description: The model list, with C(model_path) set to the version folder for the synced models.
  type: list
  elements: dict
"""


def _norm(path):
    return path.rstrip("/") if isinstance(path, str) and path not in ("", "/") else path


def model_repository_pin_synced(models, synced):
    """Return models with model_path pinned to the synced version folder."""
    if not isinstance(models, list) or not all(isinstance(model, dict) for model in models):
        raise AnsibleFilterError("model_repository_pin_synced expects a list of model dicts")
    if not isinstance(synced, dict):
        raise AnsibleFilterError("model_repository_pin_synced expects hf_model_synced (a dict) as its argument")
    by_path = {}
    for entry in synced.values():
        if isinstance(entry, dict) and entry.get("path") and entry.get("version_path"):
            by_path[_norm(entry["path"])] = entry
    pinned = []
    for model in models:
        entry = by_path.get(_norm(model.get("model_path")))
        if entry is None:
            pinned.append(model)
            continue
        pinned.append(dict(model, model_path=entry["version_path"]))
    return pinned


class FilterModule:
    """onprem.triton repository filters."""

    def filters(self):
        return {"model_repository_pin_synced": model_repository_pin_synced}
