# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Action triton_model_repository_render (documentation: plugins/modules/triton_model_repository_render.py).

Renders and validates in the controller's own process: no module is sent anywhere, so there is
no delegate_to localhost and no interpreter to point at the controller's virtualenv."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase

from ansible_collections.onprem.triton.plugins.module_utils.variable_error import VariableError
from ansible_collections.onprem.triton.plugins.plugin_utils.model_repository import (
    build_plan,
    load_vllm_contract,
)

ARGUMENT_SPEC = dict(
    models=dict(type="list", elements="dict", required=True),
    synced=dict(type="dict", default={}),
    gpu_info=dict(type="dict", default={}),
    gpus=dict(type="list", elements="dict", default=[]),
    gpu_memory_budget=dict(type="float", default=0.9),
    templates_dir=dict(type="path", required=True),
    models_dir=dict(type="str", default="/opt/models"),
    server_models_dir=dict(type="str", default="/opt/models"),
    engines_dir=dict(type="str", default="/opt/triton/engines"),
    server_engines_dir=dict(type="str", default="/opt/triton/engines"),
    trtllm_all_models_dir=dict(type="str", default="/opt/triton/trtllm_all_models"),
    vllm_report_custom_metrics=dict(type="bool", default=True),
    triton_release=dict(type="str", default="25.12"),
    release_facts=dict(type="dict", default={}),
    vllm_contracts_dir=dict(type="path", required=True),
    instances=dict(type="list", elements="dict", default=[], options=dict(
        name=dict(type="str", required=True),
        gpus=dict(type="list", elements="int", required=True),
        models=dict(type="list", elements="str", required=True),
    )),
    main_instance=dict(type="str", default="main"),
)
_SETTINGS = ("models_dir", "server_models_dir", "engines_dir", "server_engines_dir", "gpu_memory_budget",
             "vllm_report_custom_metrics", "instances", "main_instance")


def render(params):
    """The repository plan of validated parameters (ARGUMENT_SPEC). Raises a VariableError (catalog, repository or release table)."""
    settings = dict((key, params[key]) for key in _SETTINGS)
    settings["release"] = params["release_facts"] or None
    if any(isinstance(model, dict) and model.get("backend") == "vllm" and model.get("serve", True)
           for model in params["models"]):
        settings["vllm_contract"] = load_vllm_contract(params["vllm_contracts_dir"], params["triton_release"])
    return build_plan(params["models"], params["gpu_info"], params["gpus"], settings, params["templates_dir"],
                      params["trtllm_all_models_dir"], synced=params["synced"])


def missing_requirements():
    """What the controller's Python lacks for the schema check, as a message (None when complete)."""
    try:
        import jinja2  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
        from tritonclient.grpc import model_config_pb2  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    except ImportError as error:
        return ("triton_model_repository_render needs jinja2 and tritonclient[grpc] in the controller's Python "
                "(requirements.txt): %s" % error)
    return None


class ActionModule(ActionBase):
    """Plans, renders and validates the repository on the controller."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # nothing is sent to a host
        _validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        missing = missing_requirements()
        if missing:
            result.update(failed=True, msg=missing)
            return result
        try:
            result.update(render(params))
        except VariableError as error:
            result.update(failed=True, msg=str(error), variable=error.variable)
            return result
        result["changed"] = False
        return result
