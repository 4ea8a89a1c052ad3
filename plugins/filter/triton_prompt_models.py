# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filter triton_prompt_models: which served models a prompt can be sent to."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: triton_prompt_models
short_description: Names of the ready models that take a prompt, from a triton_check result
version_added: "0.1.0"
description:
  - Takes the C(models) list that M(onprem.triton.triton_check) returns (with each model's config) and
    returns the names of the models that are ready, declare a C(text_input) input and are not a
    composing model of an ensemble that is also listed (the TensorRT-LLM ensemble takes the prompt,
    its C(preprocessing), C(tensorrt_llm) and C(postprocessing) steps do not).
  - A C(tensorrt_llm_bls) model takes C(text_input) too and is kept.
positional: _input
options:
  _input:
    description: The C(models) list of a M(onprem.triton.triton_check) result.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Generate on every model that takes a prompt
  onprem.triton.triton_check:
    models: "{{ index.models | onprem.triton.triton_prompt_models | map('community.general.dict_kv', 'name') | list }}"
    generate: true
"""

RETURN = r"""
_value:
  description: Model names, in the order given.
  type: list
  elements: str
"""


def _inputs(config):
    return [entry.get("name") for entry in config.get("input") or [] if isinstance(entry, dict)]


def triton_prompt_models(models):
    """Return the names of the ready models that take text_input and are no ensemble step."""
    if not isinstance(models, list) or not all(isinstance(model, dict) for model in models):
        raise AnsibleFilterError("triton_prompt_models expects the models list of a triton_check result")
    composed = set()
    for model in models:
        steps = ((model.get("config") or {}).get("ensemble_scheduling") or {}).get("step") or []
        composed.update(step.get("model_name") for step in steps if isinstance(step, dict))
    names = []
    for model in models:
        config = model.get("config") or {}
        if model.get("ready") and "text_input" in _inputs(config) and model.get("name") not in composed:
            names.append(model["name"])
    return names


class FilterModule:
    """onprem.triton day-2 filters."""

    def filters(self):
        return {"triton_prompt_models": triton_prompt_models}
