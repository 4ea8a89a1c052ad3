# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filter upgrade_model_revision: a model list with one model moved to a new revision."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: upgrade_model_revision
short_description: Set a new revision for one model of an hf_model or model_repository model list
version_added: "0.1.0"
description:
  - Used by the playbook C(onprem.triton.upgrade_model).
  - Without O(models_dir), the input is C(hf_model_models) and the entry named O(name) gets O(revision).
  - With O(models_dir), the input is C(model_repository_models) and every entry served from the synced
    copy C(<models_dir>/<name>) gets O(revision) (it goes into the engine fingerprint of TensorRT-LLM models).
  - The input is not modified; entries of other models are returned as they are.
positional: _input, name, revision
options:
  _input:
    description: The model list.
    type: list
    elements: dict
    required: true
  name:
    description: The name of the model in C(hf_model_models).
    type: str
    required: true
  revision:
    description: The new revision (branch, tag or commit sha).
    type: str
    required: true
  models_dir:
    description: The hf_model_dir, when the input is C(model_repository_models).
    type: str
"""

EXAMPLES = r"""
- name: Move llama to a new commit
  ansible.builtin.set_fact:
    hf_model_models: "{{ hf_model_models | onprem.triton.upgrade_model_revision('llama', '0123abcd') }}"
    model_repository_models: "{{ model_repository_models | onprem.triton.upgrade_model_revision('llama', '0123abcd', models_dir='/opt/models') }}"
"""

RETURN = r"""
_value:
  description: The model list with the new revision.
  type: list
  elements: dict
"""


def upgrade_model_revision(models, name, revision, models_dir=None):
    """Return models with the named model (or the models served from its synced copy) at revision."""
    if not isinstance(models, list) or not all(isinstance(model, dict) for model in models):
        raise AnsibleFilterError("upgrade_model_revision expects a list of model dicts")
    if not name or not revision:
        raise AnsibleFilterError("upgrade_model_revision needs the model name and the new revision")
    if models_dir is None:
        return [dict(model, revision=revision) if model.get("name") == name else model for model in models]
    synced_path = "%s/%s" % (models_dir.rstrip("/"), name)
    return [dict(model, revision=revision) if str(model.get("model_path", "")).rstrip("/") == synced_path else model
            for model in models]


class FilterModule:
    """onprem.triton day-2 filters."""

    def filters(self):
        return {"upgrade_model_revision": upgrade_model_revision}
