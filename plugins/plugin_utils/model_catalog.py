# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""The model catalog, triton_models: each model declared once, read by every role.

An entry names the model (its Triton name), where its weights come from (``weights``: a Hub
repository at a pinned revision that the hf_model role syncs; ``model_path``: a folder of your
own; ``hf_repo_id``: a Hub id the vLLM engine fetches itself) and how it is served (the settings
of the model_repository role). The schema below is the one declaration of those keys: the roles'
argument_specs are generated from it (scripts/model_catalog_specs.py, checked by a unit test) and
the functions here validate with it.

Pure Python: imported by filters on the controller and by the repository render module."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import re

from ansible_collections.onprem.triton.plugins.module_utils.variable_error import VariableError

CATALOG_VAR = "triton_models"
# The weights folder names hf_model installs (<hf_model_dir>/<dir>) and Triton model names.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_NAME = re.compile(NAME_PATTERN)
_REPO_ID = re.compile(r"^[^/\s]+/[^/\s]+$")

# Keys of ``weights``: what hf_model needs to sync one Hub repository.
WEIGHTS_OPTIONS = {
    "repo_id": {"type": "str", "required": True, "description": "Hub model id, owner/name."},
    "revision": {"type": "str", "default": "main",
                 "description": "Branch, tag or 40-character commit (pin a commit in production)."},
    "allow_patterns": {"type": "list", "elements": "str", "description": "Only the files matching these globs."},
    "ignore_patterns": {"type": "list", "elements": "str", "description": "Skip the files matching these globs."},
    "dir": {"type": "str", "description": "Folder name under hf_model_dir (default: the model's name)."},
}

# Keys of a catalog entry. Serving keys are model_repository's (its README has the details).
MODEL_OPTIONS = {
    "name": {"type": "str", "required": True,
             "description": "Triton model name (TensorRT-LLM in-flight batching: the ensemble's)."},
    "weights": {"type": "dict", "options": WEIGHTS_OPTIONS,
                "description": "Hub weights synced by hf_model; the repository serves the exact copy synced."},
    "model_path": {"type": "path", "description": "Weights in a folder of your own (not synced); not with weights."},
    "hf_repo_id": {"type": "str",
                   "description": "vLLM only: a Hub id the engine downloads itself (not pinned by hf_model)."},
    "revision": {"type": "str", "description": "Revision for hf_repo_id (weights carry their own)."},
    "serve": {"type": "bool", "default": True,
              "description": "False: weights synced on the hosts but not served (no backend needed)."},
    "backend": {"type": "str", "choices": ["vllm", "tensorrtllm"], "description": "Required when served."},
    "gpus": {"type": "list", "elements": "int", "description": "GPU indices; default all of the server's."},
    "tensor_parallel_size": {"type": "int", "description": "Default: the number of gpus."},
    "gpu_memory_utilization": {"type": "float", "description": "Fixed share of each of its GPUs."},
    "memory_mib": {"type": "int", "description": "Absolute need per GPU, MiB."},
    "engine_args": {"type": "dict", "description": "vLLM EngineArgs, checked against the pinned release."},
    "lora": {"type": "dict", "description": "vLLM: {adapters: {name: path}, max_lora_rank, max_loras}."},
    "report_custom_metrics": {"type": "bool", "description": "vLLM REPORT_CUSTOM_METRICS."},
    "inputs": {"type": "list", "elements": "str", "description": "vLLM: subset of the backend's input tensors."},
    "outputs": {"type": "list", "elements": "str", "description": "vLLM: subset of the backend's output tensors."},
    "parameters": {"type": "dict", "description": "Extra config.pbtxt parameters."},
    "instance_count": {"type": "int", "description": "Triton instance count."},
    "trtllm": {"type": "dict", "description": "TensorRT-LLM settings (layout, engine, batching, build)."},
    "load": {"type": "bool", "description": "Put it in the --load-model list (default true)."},
}
SOURCE_KEYS = ("weights", "model_path", "hf_repo_id")
# Keys that only say where weights come from: not a serving setting of the repository.
_CATALOG_ONLY = ("weights", "serve")


class ModelCatalogError(VariableError):
    """A bad catalog entry, naming the variable at fault."""


def _where(index, key=None, sub=None):
    where = "%s[%d]" % (CATALOG_VAR, index)
    for part in (key, sub):
        if part is not None:
            where += "." + part
    return where


def _str_list(value, where):
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ModelCatalogError(where, "must be a list of strings, got %r" % (value,))
    return list(value)


def _check_entry(entry, index):
    """Checks what the catalog itself decides (name, one source, weights); serving settings are
    the repository's to check. Returns the entry's weights with their defaults, or None."""
    if not isinstance(entry, dict):
        raise ModelCatalogError(_where(index), "must be a dict, got %s" % type(entry).__name__)
    unknown = sorted(set(entry) - set(MODEL_OPTIONS))
    if unknown:
        raise ModelCatalogError(_where(index, unknown[0]), "unknown setting (allowed: %s)" % ", ".join(sorted(MODEL_OPTIONS)))
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelCatalogError(_where(index, "name"), "must match %s, got %r" % (NAME_PATTERN, name))
    sources = [key for key in SOURCE_KEYS if entry.get(key) not in (None, "", {})]
    if len(sources) > 1:
        raise ModelCatalogError(_where(index, sources[1]), "set one of %s, not both %s and %s"
                                % (", ".join(SOURCE_KEYS), sources[0], sources[1]))
    if not sources:
        raise ModelCatalogError(_where(index), "%r says nowhere its weights come from: set weights (Hub, synced by "
                                "hf_model), model_path (a folder of your own) or hf_repo_id" % name)
    serve = entry.get("serve", True)
    if not isinstance(serve, bool):
        raise ModelCatalogError(_where(index, "serve"), "must be a boolean, got %r" % (serve,))
    if not serve and sources[0] != "weights":
        raise ModelCatalogError(_where(index, "serve"), "false only makes sense for synced weights (nothing else "
                                "happens to %r)" % name)
    if "weights" not in sources:
        return None
    raw = entry["weights"]
    if not isinstance(raw, dict):
        raise ModelCatalogError(_where(index, "weights"), "must be a dict {repo_id, revision, ...}, got %r" % (raw,))
    unknown = sorted(set(raw) - set(WEIGHTS_OPTIONS))
    if unknown:
        raise ModelCatalogError(_where(index, "weights", unknown[0]), "unknown setting (allowed: %s)"
                                % ", ".join(sorted(WEIGHTS_OPTIONS)))
    repo_id = raw.get("repo_id")
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ModelCatalogError(_where(index, "weights", "repo_id"), "must be a Hub id owner/name, got %r" % (repo_id,))
    revision = raw.get("revision", "main")
    if not isinstance(revision, str) or not revision:
        raise ModelCatalogError(_where(index, "weights", "revision"), "must be a branch, tag or commit, got %r"
                                % (revision,))
    folder = raw.get("dir", name)
    if not isinstance(folder, str) or not _NAME.match(folder):
        raise ModelCatalogError(_where(index, "weights", "dir"), "must match %s, got %r" % (NAME_PATTERN, folder))
    weights = {"name": folder, "repo_id": repo_id, "revision": revision}
    for key in ("allow_patterns", "ignore_patterns"):
        patterns = _str_list(raw.get(key), _where(index, "weights", key))
        if patterns is not None:
            weights[key] = patterns
    return weights


def check_catalog(models):
    """Checks the whole catalog; returns [(entry, weights or None)]. Raises ModelCatalogError."""
    if models is None:
        models = []
    if not isinstance(models, list):
        raise ModelCatalogError(CATALOG_VAR, "must be a list of models, got %s" % type(models).__name__)
    checked, names, folders = [], {}, {}
    for index, entry in enumerate(models):
        weights = _check_entry(entry, index)
        if entry["name"] in names:
            raise ModelCatalogError(_where(index, "name"), "%r is already the name of %s" % (entry["name"], names[entry["name"]]))
        names[entry["name"]] = _where(index)
        if weights is not None:
            # Two entries may serve the same weights (one folder): only if they are the same weights.
            other = folders.get(weights["name"])
            if other is not None and other[1] != weights:
                raise ModelCatalogError(_where(index, "weights"), "folder %r is already %s's, with other weights (%s@%s): "
                                        "give one of them weights.dir" % (weights["name"], other[0], other[1]["repo_id"],
                                                                          other[1]["revision"]))
            folders.setdefault(weights["name"], (_where(index), weights))
        checked.append((entry, weights))
    return checked


def catalog_problems(models):
    """Every problem of the catalog as messages (empty when it is valid): for preflight."""
    try:
        check_catalog(models)
    except ModelCatalogError as error:
        return [str(error)]
    return []


def weights_to_sync(models):
    """The list hf_model syncs: one {name, repo_id, revision, allow_patterns, ignore_patterns} per
    weights folder (name is the folder under hf_model_dir)."""
    result, seen = [], set()
    for _entry, weights in check_catalog(models):
        if weights is not None and weights["name"] not in seen:
            seen.add(weights["name"])
            result.append(weights)
    return result


def served_models(models, synced=None, models_dir="/opt/models"):
    """The list the repository renders, as (catalog index, model) pairs: each served entry with
    its serving settings and a model_path. Synced weights are looked up by their folder name: the exact version folder
    hf_model installed (synced[folder].version_path; a new revision is then a new repository
    generation and a rollback brings the previous weights back), else <models_dir>/<folder>.
    The weights' revision becomes the model's revision (TensorRT-LLM engine fingerprint)."""
    synced = synced or {}
    result = []
    for index, (entry, weights) in enumerate(check_catalog(models)):
        if not entry.get("serve", True):
            continue
        model = dict((key, copy.deepcopy(value)) for key, value in entry.items() if key not in _CATALOG_ONLY)
        if weights is not None:
            found = synced.get(weights["name"]) or {}
            model["model_path"] = found.get("version_path") or "%s/%s" % (models_dir.rstrip("/"), weights["name"])
            model["revision"] = weights["revision"]
        result.append((index, model))
    return result


def with_revision(models, name, revision):
    """The catalog with model ``name``'s weights at ``revision`` (what upgrade_model rolls out)."""
    if not isinstance(revision, str) or not revision:
        raise ModelCatalogError("upgrade_model_revision", "must be a branch, tag or commit, got %r" % (revision,))
    checked = check_catalog(models)
    named = [weights for entry, weights in checked if entry["name"] == name]
    if not named:
        raise ModelCatalogError("upgrade_model_name", "%r is not a model of %s (known: %s)"
                                % (name, CATALOG_VAR, ", ".join(entry["name"] for entry, _w in checked)))
    if named[0] is None:
        raise ModelCatalogError("upgrade_model_name", "%r has no weights synced from the Hub (no weights in %s)"
                                % (name, CATALOG_VAR))
    # Every entry served from the same folder moves with it (one folder holds one revision).
    result = []
    for entry, weights in checked:
        entry = copy.deepcopy(entry)
        if weights is not None and weights["name"] == named[0]["name"]:
            entry["weights"]["revision"] = revision
        result.append(entry)
    return result


def _spec(options):
    spec = {}
    for key in sorted(options):
        # The description first, as the roles' hand-written options read.
        option = dict([("description", options[key]["description"])] + [
            (field, value) for field, value in options[key].items() if field != "description"])
        if "options" in option:
            option["options"] = _spec(option["options"])
        spec[key] = option
    return spec


def argument_spec(description):
    """The argument_specs entry of triton_models, as the roles declare it."""
    # Not required here: a run limited to other stages (--tags preflight with triton_preflight_stages)
    # passes through the roles without a catalog; each role's preflight refuses an empty one.
    return {"description": description, "type": "list", "elements": "dict", "default": [],
            "options": _spec(MODEL_OPTIONS)}
