# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Triton model repository: model list normalisation, GPU memory plan,
rendering of the role's Jinja templates and validation against Triton's own
ModelConfig schema. Runs on the controller (triton_model_repository_render);
pure Python plus jinja2, tritonclient and protobuf, each imported lazily so
this file imports anywhere."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
import os
import re

from ansible_collections.onprem.triton.plugins.plugin_utils.model_catalog import (
    CATALOG_VAR,
    served_models,
)
from ansible_collections.onprem.triton.plugins.module_utils.triton_release import (
    MODEL_BACKEND_IMAGE,
    TritonReleaseError,
    check_layout,
    default_layout,
    image,
)
from ansible_collections.onprem.triton.plugins.module_utils.variable_error import VariableError

VAR = CATALOG_VAR
BACKENDS = ("vllm", "tensorrtllm")
TRTLLM_LAYOUTS = ("inflight_batcher", "llmapi")
BATCHING_STRATEGIES = ("V1", "inflight_batching", "inflight_fused_batching")
SCHEDULER_POLICIES = ("max_utilization", "guaranteed_no_evict")
MIN_AUTO_SHARE = 0.05  # below this, no engine has room for weights and cache
TRTLLM_PARTS = ("preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls")
PYTHON_PARTS = ("preprocessing", "postprocessing", "tensorrt_llm_bls")
# TRT-LLM 1.1.0 tensorrt_llm_bls/1/model.py hands the literal names "preprocessing" and
# "postprocessing" to its TritonDecoder (no parameter changes them): these two parts keep
# upstream's names, so one server holds at most one in-flight batching model.
FIXED_PART_NAMES = {"preprocessing": "preprocessing", "postprocessing": "postprocessing"}
# What the upstream 1.1.0 code reads from each part's config.pbtxt (see the role README):
# parameters looked up without a default, tensors whose data_type is looked up at load, and
# tensors other parts request or send. A config without one fails on the real image.
TRTLLM_REQUIRED = {
    # preprocessing/1/model.py initialize(): parameters['multimodal_model_path'] and the
    # data_type of these inputs/outputs; BLS lib/triton_decoder.py requests every output listed.
    "preprocessing": {
        "parameters": ("tokenizer_dir", "multimodal_model_path"),
        "inputs": ("QUERY", "REQUEST_OUTPUT_LEN", "BAD_WORDS_DICT", "STOP_WORDS_DICT", "EMBEDDING_BIAS_WORDS",
                   "EMBEDDING_BIAS_WEIGHTS", "END_ID", "PAD_ID"),
        "outputs": ("INPUT_ID", "DECODER_INPUT_ID", "REQUEST_INPUT_LEN", "REQUEST_DECODER_INPUT_LEN", "BAD_WORDS_IDS",
                    "STOP_WORDS_IDS", "EMBEDDING_BIAS", "REQUEST_OUTPUT_LEN", "OUT_END_ID", "OUT_PAD_ID",
                    "OUT_PROMPT_TABLE_EXTRA_IDS", "PIXEL_VALUES", "IMAGE_SIZES", "IS_VIDEO_INPUT", "VISION_INPUT_ID",
                    "ATTENTION_MASK", "IMAGE_GRID_THW"),
    },
    # postprocessing/1/model.py: only these two inputs ("unknown input" otherwise), output OUTPUT.
    "postprocessing": {"parameters": ("tokenizer_dir",), "inputs": ("TOKENS_BATCH", "SEQUENCE_LENGTH"),
                       "outputs": ("OUTPUT",), "only_inputs": True},
    # C++ backend model_instance_state.cc getGuidedDecodingConfigFromParams(): no fallback for
    # these three; BLS lib/triton_decoder.py sends/request the tensors below.
    "tensorrt_llm": {
        "parameters": ("gpt_model_path", "gpt_model_type", "tokenizer_dir", "xgrammar_tokenizer_info_path",
                       "guided_decoding_backend"),
        "inputs": ("input_ids", "input_lengths", "request_output_len", "decoder_input_ids", "decoder_input_lengths",
                   "embedding_bias", "end_id", "pad_id", "stop_words_list", "bad_words_list", "seed",
                   "return_log_probs", "return_context_logits", "return_generation_logits", "streaming",
                   "exclude_input_in_output", "stop"),
        "outputs": ("output_ids", "sequence_length", "cum_log_probs", "output_log_probs", "context_logits",
                    "generation_logits", "batch_index", "sequence_index", "kv_cache_alloc_new_blocks",
                    "kv_cache_reused_blocks", "kv_cache_alloc_total_blocks", "arrival_time_ns",
                    "first_scheduled_time_ns", "first_token_time_ns", "last_token_time_ns", "acceptance_rate",
                    "total_accepted_draft_tokens", "total_draft_tokens", "num_input_tokens", "num_output_tokens"),
    },
    "tensorrt_llm_bls": {"parameters": ("tensorrt_llm_model_name",), "inputs": ("text_input", "max_tokens", "seed"),
                         "outputs": ("text_output",)},
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PLACEHOLDER = re.compile(r"\$\{[A-Za-z0-9_]+\}")

# The vLLM backend's inputs/outputs (triton-inference-server/vllm_backend):
# name -> (data type, dims, optional).
VLLM_INPUTS = {
    "text_input": ("TYPE_STRING", [1], False),
    "image": ("TYPE_STRING", [-1], True),
    "stream": ("TYPE_BOOL", [1], True),
    "sampling_parameters": ("TYPE_STRING", [1], True),
    "exclude_input_in_output": ("TYPE_BOOL", [1], True),
    "return_finish_reason": ("TYPE_BOOL", [1], True),
    "return_cumulative_logprob": ("TYPE_BOOL", [1], True),
    "return_logprobs": ("TYPE_BOOL", [1], True),
    "return_num_input_tokens": ("TYPE_BOOL", [1], True),
    "return_num_output_tokens": ("TYPE_BOOL", [1], True),
}
VLLM_OUTPUTS = {
    "text_output": ("TYPE_STRING", [-1], False),
    "finish_reason": ("TYPE_STRING", [-1], False),
    "cumulative_logprob": ("TYPE_FP32", [-1], False),
    "logprobs": ("TYPE_STRING", [-1], False),
    "num_input_tokens": ("TYPE_UINT32", [1], False),
    "num_output_tokens": ("TYPE_UINT32", [-1], False),
}
# What the vLLM inside each Triton release accepts (engine_args keys, quantization methods,
# LoRA ranks) is DATA, one table per release: roles/model_repository/files/vllm_contract/<release>.json,
# generated from the vLLM wheel by tests/fixtures/triton/vllm_contract_from_wheel.py. A new release
# adds a table. The renderer gets the loaded table as settings["vllm_contract"].
VLLM_CONTRACT_KEYS = ("engine_args", "quantization_methods", "max_lora_ranks")


def load_vllm_contract(directory, release):
    """The vLLM table of a Triton release (e.g. "25.12"), from <directory>/<release>.json."""
    variable = "model_repository_triton_release"
    path = os.path.join(directory, "%s.json" % release)
    if not re.match(r"^[0-9]{2}\.[0-9]{2}$", str(release)) or not os.path.isfile(path):
        known = sorted(name[:-5] for name in os.listdir(directory) if name.endswith(".json")) \
            if os.path.isdir(directory) else []
        raise ModelRepositoryError(variable, "no vLLM table for Triton release %r (known: %s); add %s/<release>.json "
                                   "with tests/fixtures/triton/vllm_contract_from_wheel.py from that image's vLLM wheel"
                                   % (release, ", ".join(known) or "none", directory))
    with open(path) as handle:
        contract = json.load(handle)
    missing = [key for key in VLLM_CONTRACT_KEYS if not contract.get(key)]
    if missing:
        raise ModelRepositoryError(variable, "%s lacks %s" % (path, ", ".join(missing)))
    return contract


TRTLLM_DEFAULTS = {
    "layout": "inflight_batcher",
    "engine_dir": None,
    "tokenizer_dir": None,
    "max_batch_size": 8,
    "decoupled": True,
    "batching_strategy": "inflight_fused_batching",
    "batch_scheduler_policy": "guaranteed_no_evict",
    "max_queue_delay_microseconds": 0,
    "max_queue_size": 0,
    "max_tokens_in_paged_kv_cache": None,
    "max_attention_window_size": None,
    "enable_kv_cache_reuse": False,
    "enable_chunked_context": False,
    "exclude_input_in_output": True,
    "max_beam_width": 1,
    "instance_count": 1,
    "logits_datatype": "TYPE_FP32",
    "encoder_input_features_data_type": "TYPE_FP16",
    "prompt_embedding_table_data_type": "TYPE_FP16",
    "decoding_mode": "",
    "add_special_tokens": True,
    "skip_special_tokens": True,
    "accumulate_tokens": False,
    # engine build (convert_checkpoint + trtllm-build in the TRT-LLM container)
    "build": False,
    "model_family": "llama",
    "dtype": "float16",
    "quantization": None,
    "max_input_len": 2048,
    "max_seq_len": 4096,
    "convert_args": [],
    "build_args": [],
    # LLM-API layout: keys passed to the LLM API in 1/model.yaml
    "llmapi_args": {},
    # MiB each of its GPUs holds before the KV cache: weights / tensor_parallel_size plus
    # activations (turns the plan's share into kv_cache_free_gpu_mem_fraction, see plan_gpu_memory)
    "weights_mib": None,
}
# LLM-API layout (TRT-LLM 1.1.0 all_models/llmapi/tensorrt_llm): the inputs its config.pbtxt
# declares and 1/helpers.py reads (sampling_param_<SamplingParams field>, return_*) -> data type.
# An input of another name is ignored upstream; the role refuses to render one.
LLMAPI_INPUTS = {
    "text_input": "TYPE_STRING", "image_url": "TYPE_STRING", "streaming": "TYPE_BOOL",
    "sampling_param_best_of": "TYPE_INT32", "sampling_param_temperature": "TYPE_FP32",
    "sampling_param_top_k": "TYPE_INT32", "sampling_param_top_p": "TYPE_FP32",
    "sampling_param_frequency_penalty": "TYPE_FP32", "sampling_param_presence_penalty": "TYPE_FP32",
    "sampling_param_max_tokens": "TYPE_INT32", "sampling_param_stop": "TYPE_STRING",
    "sampling_param_seed": "TYPE_UINT64", "sampling_param_exclude_input_from_output": "TYPE_BOOL",
    "sampling_param_return_perf_metrics": "TYPE_BOOL", "return_finish_reason": "TYPE_BOOL",
    "return_stop_reason": "TYPE_BOOL", "return_cumulative_logprob": "TYPE_BOOL", "stop": "TYPE_BOOL",
    "lora_id": "TYPE_UINT64", "lora_name": "TYPE_STRING", "lora_path": "TYPE_STRING", "lora_ckpt_source": "TYPE_STRING",
}
# Engine build: each family's convert_checkpoint.py (TRT-LLM 1.1.0 examples/models/core/<dir>)
# and the flags it takes. llama and qwen: --model_dir --output_dir --dtype --tp_size; mistral is
# converted by the llama script; gemma: --model-dir --output-model-dir --world-size (no
# --tp_size) and --ckpt-type (no default: hf for a Hugging Face folder).
TRTLLM_FAMILIES = {
    "llama": {"dir": "llama", "model_dir": "--model_dir", "output_dir": "--output_dir", "parallel": "--tp_size",
              "extra": []},
    "mistral": {"dir": "llama", "model_dir": "--model_dir", "output_dir": "--output_dir", "parallel": "--tp_size",
                "extra": []},
    "qwen": {"dir": "qwen", "model_dir": "--model_dir", "output_dir": "--output_dir", "parallel": "--tp_size",
             "extra": []},
    "gemma": {"dir": "gemma", "model_dir": "--model-dir", "output_dir": "--output-model-dir", "parallel": "--world-size",
              "extra": ["--ckpt-type", "hf"]},
}
TRTLLM_QUANTIZATIONS = ("int8_weight_only", "int4_weight_only", "int4_awq", "w4a8_awq", "fp8",
                        "smoothquant")


class ModelRepositoryError(VariableError):
    """A bad input, always naming the variable at fault."""


def _var(index, key=None):
    base = "%s[%d]" % (VAR, index)
    return base if key is None else "%s.%s" % (base, key)


def _bool(value, variable):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ModelRepositoryError(variable, "must be a boolean, got %r" % (value,))


def _int(value, variable, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ModelRepositoryError(variable, "must be an integer, got %r" % (value,))
    try:
        number = int(value)
    except ValueError:
        raise ModelRepositoryError(variable, "must be an integer, got %r" % (value,))
    if minimum is not None and number < minimum:
        raise ModelRepositoryError(variable, "must be at least %d, got %d" % (minimum, number))
    return number


def _fraction(value, variable):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelRepositoryError(variable, "must be a number between 0 and 1, got %r" % (value,))
    if not 0.0 < number <= 1.0:
        raise ModelRepositoryError(variable, "must be a number in (0, 1], got %r" % (value,))
    return number


def server_path(path, host_dir, server_dir):
    """The path the server (inside its container) sees for a host path under
    host_dir, which triton_server mounts at server_dir."""
    host_dir = host_dir.rstrip("/")
    if host_dir and server_dir and (path == host_dir or path.startswith(host_dir + "/")):
        return server_dir.rstrip("/") + path[len(host_dir):]
    return path


def gpu_table(gpu_info, gpu_override):
    """[{index, memory_total_mib, name}] from the override (a list, or a count)
    or from the host stack's nvidia_gpu_info fact."""
    source, variable = gpu_override, "model_repository_gpus"
    if source in (None, "", []):
        source, variable = (gpu_info or {}).get("gpus") or [], "nvidia_gpu_info.gpus"
    if not isinstance(source, list):
        raise ModelRepositoryError(variable, "must be a list of GPUs ({index, memory_total_mib})")
    table = []
    for position, gpu in enumerate(source):
        where = "%s[%d]" % (variable, position)
        if not isinstance(gpu, dict):
            raise ModelRepositoryError(where, "must be a dict with index and memory_total_mib")
        table.append({
            "index": _int(gpu.get("index", position), where + ".index", 0),
            "memory_total_mib": _int(gpu.get("memory_total_mib", 0), where + ".memory_total_mib", 1),
            "name": str(gpu.get("name", "GPU")),
        })
    if not table:
        raise ModelRepositoryError(
            "model_repository_gpus",
            "no GPU known: nvidia_gpu_info (from the host stack) lists none; set model_repository_gpus "
            "to [{index: 0, memory_total_mib: N}, ...] on hosts without GPU facts")
    return table


def _check_keys(model, index, allowed):
    unknown = sorted(set(model) - set(allowed))
    if unknown:
        raise ModelRepositoryError(_var(index, unknown[0]), "unknown setting (allowed: %s)" % ", ".join(sorted(allowed)))


INSTANCES_VAR = "model_repository_instances"
INSTANCE_KEYS = ("name", "gpus", "models")
# triton_server_name's rule: the instance's unit is triton-<name>.service.
_INSTANCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,40}$")


def plan_instances(instances, models, gpus, main_name="main"):
    """The server instances of a host: the main one and those of model_repository_instances,
    each a container that sees only its GPUs, so that a model with tensor_parallel_size x
    pipeline_parallel_size > 1 on a subset of the host's GPUs still starts on them (the vLLM
    backend starts such a model as KIND_MODEL on cuda:0..N-1 of what the container sees).
    Returns (views, owner): views [{name, gpus, all, main}], the main instance first (it sees
    the GPUs no other instance takes; every GPU when there are none), owner {model name: instance}."""
    host = sorted(gpu["index"] for gpu in gpus)
    if instances in (None, ""):
        instances = []
    if not isinstance(instances, list):
        raise ModelRepositoryError(INSTANCES_VAR, "must be a list of {name, gpus, models}")
    declared = [model.get("name") for model in models if isinstance(model, dict)]
    owner, taken, views = {}, {}, []
    for position, raw in enumerate(instances):
        where = "%s[%d]" % (INSTANCES_VAR, position)
        if not isinstance(raw, dict):
            raise ModelRepositoryError(where, "must be a dict with name, gpus and models")
        unknown = sorted(set(raw) - set(INSTANCE_KEYS))
        if unknown:
            raise ModelRepositoryError("%s.%s" % (where, unknown[0]), "unknown setting (allowed: %s)"
                                       % ", ".join(INSTANCE_KEYS))
        name = raw.get("name")
        if not isinstance(name, str) or not _INSTANCE_NAME.match(name):
            raise ModelRepositoryError(where + ".name", "must match %s (its unit is triton-<name>.service), got %r"
                                       % (_INSTANCE_NAME.pattern, name))
        if name == main_name or name in [view["name"] for view in views]:
            raise ModelRepositoryError(where + ".name", "%r is already the name of another server instance on this "
                                       "host (the main one is triton_server_name %r)" % (name, main_name))
        chosen = raw.get("gpus")
        if not isinstance(chosen, list) or not chosen:
            raise ModelRepositoryError(where + ".gpus", "must be a non-empty list of GPU indices")
        chosen = [_int(gpu, where + ".gpus", 0) for gpu in chosen]
        for gpu in chosen:
            if gpu not in host:
                raise ModelRepositoryError(where + ".gpus", "GPU %d is not on this host (known: %s)" % (gpu, host))
            if gpu in taken:
                raise ModelRepositoryError(where + ".gpus", "GPU %d is already given to server instance %r: each GPU "
                                           "belongs to one instance" % (gpu, taken[gpu]))
            taken[gpu] = name
        served = raw.get("models")
        if not isinstance(served, list) or not served:
            raise ModelRepositoryError(where + ".models", "must be a non-empty list of names of served models of %s" % VAR)
        for model_name in served:
            if model_name not in declared:
                raise ModelRepositoryError(where + ".models", ("%r is not a served model of " + VAR + " (known: %s)")
                                           % (model_name, ", ".join(str(d) for d in declared)))
            if model_name in owner:
                raise ModelRepositoryError(where + ".models", "%r is already served by instance %r"
                                           % (model_name, owner[model_name]))
            owner[model_name] = name
        views.append({"name": name, "gpus": sorted(chosen), "all": False, "main": False})
    rest = [gpu for gpu in host if gpu not in taken]
    if views and not rest:
        raise ModelRepositoryError(INSTANCES_VAR, "its instances take every GPU of the host (%s): none is left for the "
                                   "main instance %r" % (host, main_name))
    if views and all(name in owner for name in declared):
        raise ModelRepositoryError(INSTANCES_VAR, "lists every model: the main instance %r would serve none (keep at "
                                   "least one model outside model_repository_instances)" % main_name)
    views.insert(0, {"name": main_name, "gpus": rest, "all": not views, "main": True})
    return views, owner


MODEL_KEYS = ("name", "backend", "model_path", "hf_repo_id", "revision", "gpus", "tensor_parallel_size",
              "gpu_memory_utilization", "memory_mib", "engine_args", "lora", "report_custom_metrics",
              "inputs", "outputs", "parameters", "instance_count", "trtllm", "load")


def normalize_models(models, gpus, settings):
    """Checks every model and fills the defaults; returns a list of dicts.
    settings: models_dir, server_models_dir, engines_dir, server_engines_dir,
    vllm_report_custom_metrics, vllm_contract (load_vllm_contract)."""
    if not isinstance(models, list) or not models:
        raise ModelRepositoryError(VAR, "must be a non-empty list of models")
    views, owner = plan_instances(settings.get("instances"), models, gpus, settings.get("main_instance") or "main")
    views = dict((view["name"], view) for view in views)
    main = [view for view in views.values() if view["main"]][0]
    seen = {}
    result = []
    # Positions in the catalog (triton_models), which also holds entries that are not served.
    indices = settings.get("catalog_indices") or list(range(len(models)))
    for position, raw in enumerate(models):
        index = indices[position]
        if not isinstance(raw, dict):
            raise ModelRepositoryError(_var(index), "must be a dict, got %s" % type(raw).__name__)
        _check_keys(raw, index, MODEL_KEYS)
        model = copy.deepcopy(raw)
        name = model.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ModelRepositoryError(_var(index, "name"), "must match %s, got %r" % (_NAME.pattern, name))
        backend = model.get("backend")
        if backend not in BACKENDS:
            raise ModelRepositoryError(_var(index, "backend"), "must be one of %s, got %r" % (", ".join(BACKENDS), backend))
        _check_release_backend(settings.get("release"), backend, index)
        if model.get("model_path") and model.get("hf_repo_id"):
            raise ModelRepositoryError(_var(index, "model_path"), "set model_path or hf_repo_id, not both")
        if not model.get("model_path") and not model.get("hf_repo_id"):
            raise ModelRepositoryError(_var(index, "model_path"), "one of model_path (a local directory) or hf_repo_id is required")
        if model.get("model_path") and not str(model["model_path"]).startswith("/"):
            raise ModelRepositoryError(_var(index, "model_path"), "must be an absolute path, got %r" % model["model_path"])
        # The GPUs of the server instance that serves it (its container sees only those).
        view = views[owner.get(name, main["name"])]
        model["instance"] = view["name"]
        model["position"] = index
        known_gpus = view["gpus"]
        model_settings = dict(settings, _gpu_indices=known_gpus)
        assigned = model.get("gpus")
        model["gpus_defaulted"] = assigned is None
        if assigned is None:
            assigned = list(known_gpus)
        if not isinstance(assigned, list) or not assigned:
            raise ModelRepositoryError(_var(index, "gpus"), "must be a non-empty list of GPU indices")
        assigned = [_int(gpu, _var(index, "gpus"), 0) for gpu in assigned]
        missing = [gpu for gpu in assigned if gpu not in known_gpus]
        if missing:
            if view["all"]:
                raise ModelRepositoryError(_var(index, "gpus"), "GPU(s) %s not on this host (known: %s)"
                                           % (missing, known_gpus))
            raise ModelRepositoryError(_var(index, "gpus"), "GPU(s) %s not seen by server instance %r, which serves "
                                       "%r and sees only GPU(s) %s (model_repository_instances)"
                                       % (missing, view["name"], name, known_gpus))
        if len(set(assigned)) != len(assigned):
            raise ModelRepositoryError(_var(index, "gpus"), "lists a GPU twice: %s" % assigned)
        model["gpus"] = assigned
        tp_size = _int(model.get("tensor_parallel_size", len(assigned)), _var(index, "tensor_parallel_size"), 1)
        if tp_size > len(assigned):
            raise ModelRepositoryError(_var(index, "tensor_parallel_size"),
                                       "is %d but only %d GPU(s) are assigned (gpus: %s)" % (tp_size, len(assigned), assigned))
        model["tensor_parallel_size"] = tp_size
        for key in ("gpu_memory_utilization",):
            if model.get(key) is not None:
                model[key] = _fraction(model[key], _var(index, key))
        if model.get("memory_mib") is not None:
            model["memory_mib"] = _int(model["memory_mib"], _var(index, "memory_mib"), 1)
        model["load"] = _bool(model.get("load", True), _var(index, "load"))
        params = model.get("parameters") or {}
        if not isinstance(params, dict):
            raise ModelRepositoryError(_var(index, "parameters"), "must be a dict of config.pbtxt parameters")
        model["parameters"] = dict((str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items())
        model["instance_count"] = _int(model.get("instance_count", 1), _var(index, "instance_count"), 1)
        if name in seen:
            raise ModelRepositoryError(_var(index, "name"), "%r is already used by %s" % (name, _var(seen[name])))
        seen[name] = index
        source = model.get("model_path") or model.get("hf_repo_id")
        model["source"] = source
        model["server_model"] = server_path(source, settings["models_dir"], settings["server_models_dir"]) \
            if model.get("model_path") else source
        if backend == "vllm":
            _normalize_vllm(model, index, model_settings)
        else:
            _normalize_trtllm(model, index, model_settings)
        # The device numbers inside the instance's container: a container given GPUs 2 and 3 calls
        # them 0 and 1 (CUDA numbers what it sees). The main instance without others sees them all.
        model["device_gpus"] = list(model["gpus"]) if view["all"] else [known_gpus.index(gpu) for gpu in model["gpus"]]
        result.append(model)
    for instance in views:
        batchers = [position for position, model in enumerate(result) if model["instance"] == instance
                    and model["backend"] == "tensorrtllm" and model["trtllm"]["layout"] == "inflight_batcher"]
        _one_batcher_per_server(result, batchers)
    # TRT-LLM parts are separate Triton models: their names must not collide.
    for model in result:
        for part in model.get("parts", {}).values():
            if part in seen and part != model["name"]:
                raise ModelRepositoryError(_var(seen[part], "name"), "%r collides with a part of TRT-LLM model %r"
                                           % (part, model["name"]))
    return result


def _one_batcher_per_server(result, batchers):
    """The upstream BLS model calls models named "preprocessing"/"postprocessing": one
    in-flight batching TRT-LLM model per server instance (repository)."""
    if len(batchers) > 1:
        raise ModelRepositoryError(
            _var(batchers[1]), "%r is a second TensorRT-LLM in-flight batching model (layout inflight_batcher) after %r "
            "(%s) in server instance %r: TRT-LLM 1.1.0's tensorrt_llm_bls calls models literally named preprocessing and "
            "postprocessing, so one server holds only one; serve it from another instance (model_repository_instances) "
            "or use trtllm.layout llmapi"
            % (result[batchers[1]]["name"], result[batchers[0]]["name"], _var(batchers[0]), result[batchers[0]]["instance"]))


def _check_release_backend(release, backend, index):
    """The pinned release (settings["release"], an entry of the release table) must offer the
    model's backend: an image in the table (the TensorRT-LLM layout is checked in _normalize_trtllm)."""
    if not release:
        return
    try:
        image(release, MODEL_BACKEND_IMAGE[backend], _var(index, "backend"))
    except TritonReleaseError as error:
        raise ModelRepositoryError(error.variable, "%s (model_repository_triton_release)" % error.message)


def _normalize_vllm(model, index, settings):
    if model.get("trtllm"):
        raise ModelRepositoryError(_var(index, "trtllm"), "is for backend tensorrtllm; this model uses vllm")
    engine_args = model.get("engine_args") or {}
    if not isinstance(engine_args, dict):
        raise ModelRepositoryError(_var(index, "engine_args"), "must be a dict of vLLM engine arguments")
    for key in ("model", "tensor_parallel_size", "gpu_memory_utilization", "enable_lora"):
        if key in engine_args:
            raise ModelRepositoryError(_var(index, "engine_args.%s" % key),
                                       "is set by the role; use the model's %s setting instead" %
                                       {"model": "model_path/hf_repo_id", "enable_lora": "lora"}.get(key, key))
    if "hf_token" in engine_args:
        raise ModelRepositoryError(_var(index, "engine_args.hf_token"),
                                   "secrets never go into model.json (a world-readable file); the server gets HF_TOKEN "
                                   "from the triton_server role")
    _check_vllm_engine_args(engine_args, index, settings)
    _place_vllm(model, index, engine_args, settings)
    if model.get("revision") and model.get("hf_repo_id"):
        engine_args.setdefault("revision", model["revision"])
    model["engine_args"] = engine_args
    inputs = model.get("inputs") or list(VLLM_INPUTS)
    outputs = model.get("outputs") or list(VLLM_OUTPUTS)
    for key, chosen, known in (("inputs", inputs, VLLM_INPUTS), ("outputs", outputs, VLLM_OUTPUTS)):
        if not isinstance(chosen, list):
            raise ModelRepositoryError(_var(index, key), "must be a list of names")
        unknown = [item for item in chosen if item not in known]
        if unknown:
            raise ModelRepositoryError(_var(index, key), "unknown %s %s (the vLLM backend knows: %s)"
                                       % (key, unknown, ", ".join(known)))
    if "text_input" not in inputs:
        raise ModelRepositoryError(_var(index, "inputs"), "must contain text_input")
    if "text_output" not in outputs:
        raise ModelRepositoryError(_var(index, "outputs"), "must contain text_output")
    model["inputs"] = [dict(name=item, data_type=VLLM_INPUTS[item][0], dims=VLLM_INPUTS[item][1],
                            optional=VLLM_INPUTS[item][2]) for item in inputs]
    model["outputs"] = [dict(name=item, data_type=VLLM_OUTPUTS[item][0], dims=VLLM_OUTPUTS[item][1])
                        for item in outputs]
    model["report_custom_metrics"] = _bool(model.get("report_custom_metrics", settings.get("vllm_report_custom_metrics", True)),
                                           _var(index, "report_custom_metrics"))
    lora = model.get("lora") or {}
    if lora:
        if not isinstance(lora, dict) or not isinstance(lora.get("adapters"), dict) or not lora["adapters"]:
            raise ModelRepositoryError(_var(index, "lora.adapters"), "must be a non-empty dict adapter name -> local path")
        for adapter, path in lora["adapters"].items():
            if not _NAME.match(str(adapter)) or not str(path).startswith("/"):
                raise ModelRepositoryError(_var(index, "lora.adapters.%s" % adapter),
                                           "needs a simple name and an absolute local path, got %r" % (path,))
        lora = {
            "adapters": dict((str(k), server_path(str(v), settings["models_dir"], settings["server_models_dir"]))
                             for k, v in sorted(lora["adapters"].items())),
            "max_lora_rank": _lora_rank(lora.get("max_lora_rank", 16), _var(index, "lora.max_lora_rank"),
                                        settings),
            "max_loras": _int(lora.get("max_loras", len(lora["adapters"])), _var(index, "lora.max_loras"), 1),
        }
    model["lora"] = lora
    model["parts"] = {}
    model["load_models"] = [model["name"]]


def _vllm_contract(settings):
    contract = settings.get("vllm_contract")
    if not contract:
        raise ModelRepositoryError("model_repository_triton_release", "no vLLM table loaded for the pinned Triton "
                                   "release (load_vllm_contract)")
    return contract


def _lora_rank(value, variable, settings):
    # vllm/config/lora.py: LoRAConfig.max_lora_rank is a Literal (pydantic refuses any other value).
    contract = _vllm_contract(settings)
    rank = _int(value, variable, 1)
    if rank not in contract["max_lora_ranks"]:
        raise ModelRepositoryError(variable, "must be one of %s for vLLM %s (LoRAConfig.max_lora_rank), got %d"
                                   % (", ".join(str(r) for r in contract["max_lora_ranks"]),
                                      contract.get("vllm_version", "?"), rank))
    return rank


def _check_vllm_engine_args(engine_args, index, settings):
    """Every key must be a field of the pinned vLLM's EngineArgs/AsyncEngineArgs: the backend
    passes model.json whole to AsyncEngineArgs(**json), so any other key is a TypeError at load."""
    contract = _vllm_contract(settings)
    version = contract.get("vllm_version", "?")
    accepted = set(contract["engine_args"])
    for key in sorted(engine_args):
        if key not in accepted:
            raise ModelRepositoryError(_var(index, "engine_args.%s" % key),
                                       "is not an argument of vLLM %s (Triton %s): AsyncEngineArgs(**model.json) would "
                                       "fail the load with a TypeError (the accepted names: %s)"
                                       % (version, contract.get("triton_release", "?"),
                                          contract["sources"]["engine_args"] if contract.get("sources") else
                                          "the release's vllm_contract table"))
    quantization = engine_args.get("quantization")
    if quantization is not None and quantization not in contract["quantization_methods"]:
        raise ModelRepositoryError(_var(index, "engine_args.quantization"),
                                   "must be one of vLLM %s's quantization methods (%s), got %r"
                                   % (version, ", ".join(contract["quantization_methods"]), quantization))
    if "max_lora_rank" in engine_args:
        _lora_rank(engine_args["max_lora_rank"], _var(index, "engine_args.max_lora_rank"), settings)


def _place_vllm(model, index, engine_args, settings):
    """Where the vLLM backend really starts the model (vllm_backend src/model.py,
    _validate_device_config): with instance_group KIND_GPU it sets CUDA_VISIBLE_DEVICES to the
    GPU Triton assigned, and refuses KIND_GPU when tensor_parallel_size x pipeline_parallel_size > 1;
    with KIND_MODEL vLLM takes cuda:0..N-1 of what the server sees (here: the whole GPU table)."""
    known = sorted(settings["_gpu_indices"])
    pp_size = _int(engine_args.get("pipeline_parallel_size", 1), _var(index, "engine_args.pipeline_parallel_size"), 1)
    tp_size = model["tensor_parallel_size"]
    world = tp_size * pp_size
    if model.get("gpus_defaulted") and world < len(model["gpus"]):
        # No gpus given: the first GPUs, where vLLM would start anyway.
        model["gpus"] = known[:world]
    gpus = model["gpus"]
    model["pipeline_parallel_size"] = pp_size
    if world == 1:
        # One GPU per engine: pin it. Triton puts `count` instances on EACH listed GPU.
        # A server that sees a single GPU needs no pin (cuda:0 is that GPU).
        model["instance_kind"] = "KIND_MODEL" if gpus == known and len(known) == 1 else "KIND_GPU"
        return
    if len(gpus) != world:
        raise ModelRepositoryError(_var(index, "gpus"), "lists %d GPU(s) %s but tensor_parallel_size x "
                                   "pipeline_parallel_size is %d x %d = %d: vLLM would use exactly %d"
                                   % (len(gpus), gpus, tp_size, pp_size, world, world))
    if sorted(gpus) != known:
        raise ModelRepositoryError(
            _var(index, "gpus"), "is %s, a subset of the GPUs this server sees (%s): a vLLM model with "
            "tensor_parallel_size x pipeline_parallel_size = %d must run as KIND_MODEL (the vLLM backend refuses "
            "KIND_GPU for it), and the backend would start it on the first %d GPUs the container sees (%s), not on "
            "%s. Serve it from a server instance of its own that sees only those GPUs (model_repository_instances: "
            "[{name: ..., gpus: %s, models: [%s]}]), or give it all of them"
            % (gpus, known, world, world, known[:world], gpus, gpus, model["name"]))
    model["instance_kind"] = "KIND_MODEL"


def _normalize_trtllm(model, index, settings):
    for key in ("engine_args", "lora", "inputs", "outputs"):
        if model.get(key):
            raise ModelRepositoryError(_var(index, key), "is a vLLM setting; TRT-LLM settings go under trtllm")
    raw = model.get("trtllm") or {}
    if not isinstance(raw, dict):
        raise ModelRepositoryError(_var(index, "trtllm"), "must be a dict")
    unknown = sorted(set(raw) - set(TRTLLM_DEFAULTS))
    if unknown:
        raise ModelRepositoryError(_var(index, "trtllm.%s" % unknown[0]),
                                   "unknown TRT-LLM setting (allowed: %s)" % ", ".join(sorted(TRTLLM_DEFAULTS)))
    trt = copy.deepcopy(TRTLLM_DEFAULTS)
    release = settings.get("release")
    if release and "layout" not in raw:
        # The release's default: the LLM-API layout where the engine backend is deprecated or gone.
        trt["layout"] = default_layout(release) or trt["layout"]
    trt.update(raw)

    def where(key):
        return _var(index, "trtllm.%s" % key)

    if trt["layout"] not in TRTLLM_LAYOUTS:
        raise ModelRepositoryError(where("layout"), "must be one of %s, got %r" % (", ".join(TRTLLM_LAYOUTS), trt["layout"]))
    if release:
        check_layout(release, trt["layout"], where("layout"), "model_repository_triton_release")
    if trt["layout"] == "llmapi" and _bool(trt["build"], where("build")):
        raise ModelRepositoryError(where("build"), "the LLM-API layout loads the checkpoint itself: no engine is built "
                                   "for it (build is for layout inflight_batcher)")
    if trt["batching_strategy"] not in BATCHING_STRATEGIES:
        raise ModelRepositoryError(where("batching_strategy"), "must be one of %s, got %r"
                                   % (", ".join(BATCHING_STRATEGIES), trt["batching_strategy"]))
    if trt["batch_scheduler_policy"] not in SCHEDULER_POLICIES:
        raise ModelRepositoryError(where("batch_scheduler_policy"), "must be one of %s, got %r"
                                   % (", ".join(SCHEDULER_POLICIES), trt["batch_scheduler_policy"]))
    if trt["quantization"] is not None and trt["quantization"] not in TRTLLM_QUANTIZATIONS:
        raise ModelRepositoryError(where("quantization"), "must be one of %s, got %r"
                                   % (", ".join(TRTLLM_QUANTIZATIONS), trt["quantization"]))
    for key in ("max_batch_size", "max_input_len", "max_seq_len", "max_beam_width", "instance_count"):
        trt[key] = _int(trt[key], where(key), 1)
    for key in ("max_queue_delay_microseconds", "max_queue_size"):
        trt[key] = _int(trt[key], where(key), 0)
    for key in ("max_tokens_in_paged_kv_cache", "max_attention_window_size"):
        if trt[key] is not None:
            trt[key] = _int(trt[key], where(key), 1)
    for key in ("decoupled", "enable_kv_cache_reuse", "enable_chunked_context", "exclude_input_in_output",
                "add_special_tokens", "skip_special_tokens", "accumulate_tokens", "build"):
        trt[key] = _bool(trt[key], where(key))
    for key in ("convert_args", "build_args"):
        if not isinstance(trt[key], list):
            raise ModelRepositoryError(where(key), "must be a list of extra command-line arguments")
        trt[key] = [str(arg) for arg in trt[key]]
    if not isinstance(trt["llmapi_args"], dict):
        raise ModelRepositoryError(where("llmapi_args"), "must be a dict of LLM API arguments")
    if "triton_config" in trt["llmapi_args"]:
        raise ModelRepositoryError(where("llmapi_args.triton_config"), "is rendered from trtllm.decoupled (the model's "
                                   "auto_complete_config takes the decoupled policy from it; config.pbtxt must agree)")
    if trt["model_family"] not in TRTLLM_FAMILIES:
        raise ModelRepositoryError(where("model_family"), "no convert_checkpoint.py flags known for %r (known: %s)"
                                   % (trt["model_family"], ", ".join(sorted(TRTLLM_FAMILIES))))
    trt["converter"] = copy.deepcopy(TRTLLM_FAMILIES[trt["model_family"]])
    if trt["weights_mib"] is not None:
        trt["weights_mib"] = _int(trt["weights_mib"], where("weights_mib"), 1)
    if trt["max_input_len"] > trt["max_seq_len"]:
        raise ModelRepositoryError(where("max_input_len"), "(%d) exceeds max_seq_len (%d)"
                                   % (trt["max_input_len"], trt["max_seq_len"]))
    name = model["name"]
    engine_dir = trt["engine_dir"] or "%s/%s" % (settings["engines_dir"].rstrip("/"), name)
    if not str(engine_dir).startswith("/"):
        raise ModelRepositoryError(where("engine_dir"), "must be an absolute path, got %r" % engine_dir)
    trt["engine_dir"] = engine_dir
    trt["server_engine_dir"] = server_path(engine_dir, settings["engines_dir"], settings["server_engines_dir"])
    tokenizer = trt["tokenizer_dir"] or model["source"]
    trt["server_tokenizer_dir"] = server_path(tokenizer, settings["models_dir"], settings["server_models_dir"]) \
        if str(tokenizer).startswith("/") else tokenizer
    trt["tokenizer_dir"] = tokenizer
    if trt["build"] and not model.get("model_path"):
        raise ModelRepositoryError(_var(index, "model_path"), "an engine build needs the checkpoint in a local directory")
    model["trtllm"] = trt
    if trt["layout"] == "llmapi":
        model["parts"] = {}
        model["load_models"] = [name]
    else:
        model["parts"] = dict((part, FIXED_PART_NAMES.get(part, "%s_%s" % (name, part))) for part in TRTLLM_PARTS)
        # The ensemble pulls in its composing models; the BLS model is listed too.
        model["load_models"] = [name] + [model["parts"][part] for part in TRTLLM_PARTS]


def plan_gpu_memory(models, gpus, budget):
    """Gives each model its share of every GPU it uses, so that the shares on
    one GPU add up to at most `budget`. A model's share is its
    gpu_memory_utilization, else memory_mib / the smallest assigned GPU, else an
    equal split of what is left on its most crowded GPU. A vLLM model with
    instance_count N runs N engines on each of its GPUs, each taking the share:
    it counts N times. Raises ModelRepositoryError naming the models and the
    numbers on overcommit."""
    budget = _fraction(budget, "model_repository_gpu_memory_budget")

    def engines(model):
        # vllm_backend: every instance builds its own engine with the same gpu_memory_utilization.
        return model["instance_count"] if model["backend"] == "vllm" else 1
    by_index = dict((gpu["index"], gpu) for gpu in gpus)
    fixed, free = {}, []
    for position, model in enumerate(models):
        smallest = min(by_index[gpu]["memory_total_mib"] for gpu in model["gpus"])
        if model.get("gpu_memory_utilization") is not None:
            fixed[model["name"]] = model["gpu_memory_utilization"]
        elif model.get("memory_mib") is not None:
            share = round(float(model["memory_mib"]) / smallest, 4)
            if share > 1.0:
                raise ModelRepositoryError(_var(position, "memory_mib"), "%d MiB does not fit on GPU(s) %s (%d MiB each)"
                                           % (model["memory_mib"], model["gpus"], smallest))
            fixed[model["name"]] = share
        else:
            free.append(model)
    shares = dict(fixed)
    for model in free:
        worst = None
        for gpu in model["gpus"]:
            users = [m for m in models if gpu in m["gpus"]]
            taken = sum(fixed.get(m["name"], 0.0) * engines(m) for m in users)
            open_models = sum(engines(m) for m in users if m["name"] not in fixed)
            candidate = (budget - taken) / open_models
            worst = candidate if worst is None else min(worst, candidate)
        shares[model["name"]] = round(max(worst, 0.0), 4)
        if shares[model["name"]] < MIN_AUTO_SHARE:
            raise ModelRepositoryError(
                VAR, "no room left for %s on GPU(s) %s: the models there already take the budget %.2f "
                "(model_repository_gpu_memory_budget); lower their gpu_memory_utilization / memory_mib or move %s "
                "to other gpus" % (model["name"], model["gpus"], budget, model["name"]))
    plan = []
    for gpu in gpus:
        users = [m for m in models if gpu["index"] in m["gpus"]]
        total = round(sum(shares[m["name"]] * engines(m) for m in users), 4)
        detail = ", ".join("%s %.2f%s (%d MiB)" % (m["name"], shares[m["name"]],
                                                   " x %d instances" % engines(m) if engines(m) > 1 else "",
                                                   int(shares[m["name"]] * engines(m) * gpu["memory_total_mib"]))
                           for m in users)
        if users and (total > budget + 1e-9 or any(shares[m["name"]] <= 0.0 for m in users)):
            raise ModelRepositoryError(
                VAR, "GPU %d (%s, %d MiB) is overcommitted: %s add up to %.2f (%d MiB) but the budget is %.2f (%d MiB, "
                "model_repository_gpu_memory_budget); give these models fewer GPUs' memory (gpu_memory_utilization / "
                "memory_mib) or other gpus" % (gpu["index"], gpu["name"], gpu["memory_total_mib"], detail, total,
                                               int(total * gpu["memory_total_mib"]), budget,
                                               int(budget * gpu["memory_total_mib"])))
        plan.append({"index": gpu["index"], "memory_total_mib": gpu["memory_total_mib"], "total_share": total,
                     "models": dict((m["name"], shares[m["name"]]) for m in users),
                     "instances": dict((m["name"], engines(m)) for m in users)})
    for position, model in enumerate(models):
        model["gpu_memory_share"] = shares[model["name"]]
        if model["backend"] == "vllm":
            model["gpu_memory_utilization"] = shares[model["name"]]
        else:
            smallest = min(by_index[gpu]["memory_total_mib"] for gpu in model["gpus"])
            model["trtllm"]["kv_cache_free_gpu_mem_fraction"] = kv_cache_fraction(
                shares[model["name"]], smallest, model["trtllm"]["weights_mib"], _var(position, "trtllm.weights_mib"))
    return plan


def kv_cache_fraction(share, gpu_mib, weights_mib, where="weights_mib"):
    """TRT-LLM's kv_cache_free_gpu_mem_fraction (and the LLM API's
    kv_cache_config.free_gpu_memory_fraction) is a share of the memory FREE once the
    weights and activations are loaded, not of the whole GPU. For the model to stay within
    `share` of a GPU of `gpu_mib` holding `weights_mib` of weights and activations:
        weights + fraction * (gpu - weights) <= share * gpu
        fraction = (share * gpu - weights) / (gpu - weights)
    The free memory is taken as if the model loaded first (gpu - weights): a model loaded
    after others sees less free memory and takes less, never more. Without weights_mib the
    weights are unknown and the fraction is the share itself (the model then takes up to
    weights * (1 - share) more than its share)."""
    if weights_mib is None:
        return share
    if weights_mib >= share * gpu_mib:
        raise ModelRepositoryError(where, "%d MiB of weights and activations leave no KV cache in its share %.2f of a "
                                   "%d MiB GPU (%d MiB): give it a larger share or more GPUs"
                                   % (weights_mib, share, gpu_mib, int(share * gpu_mib)))
    return round((share * gpu_mib - weights_mib) / float(gpu_mib - weights_mib), 4)


# --- rendering ---------------------------------------------------------------

def _pbtxt_string(value):
    """A protobuf text-format string literal."""
    return '"%s"' % str(value).replace("\\", "\\\\").replace('"', '\\"')


def _to_json(value, indent=2):
    return json.dumps(value, indent=indent, sort_keys=True)


def _bool_text(value):
    return "true" if value else "false"


def template_files(model):
    """(template, destination relative to the repository) of one model."""
    name = model["name"]
    if model["backend"] == "vllm":
        files = [("vllm/config.pbtxt.j2", "%s/config.pbtxt" % name), ("vllm/model.json.j2", "%s/1/model.json" % name)]
        if model["lora"]:
            files.append(("vllm/multi_lora.json.j2", "%s/1/multi_lora.json" % name))
        return files
    if model["trtllm"]["layout"] == "llmapi":
        return [("tensorrtllm/llmapi/config.pbtxt.j2", "%s/config.pbtxt" % name),
                ("tensorrtllm/llmapi/model.yaml.j2", "%s/1/model.yaml" % name)]
    files = [("tensorrtllm/ensemble/config.pbtxt.j2", "%s/config.pbtxt" % name)]
    for part, part_name in sorted(model["parts"].items()):
        files.append(("tensorrtllm/%s/config.pbtxt.j2" % part, "%s/config.pbtxt" % part_name))
    # The ensemble's version folder must exist, even empty.
    files.append(("tensorrtllm/ensemble/keep.j2", "%s/1/.keep" % name))
    files.append(("tensorrtllm/tensorrt_llm/keep.j2", "%s/1/.keep" % model["parts"]["tensorrt_llm"]))
    return files


def python_model_copies(model, all_models_dir):
    """TRT-LLM's python model code (from the pinned container's
    /app/all_models/inflight_batcher_llm, copied out on the host):
    destination folder -> source folder, both on the target."""
    if model["backend"] != "tensorrtllm" or model["trtllm"]["layout"] == "llmapi":
        return {}
    return dict(("%s/1" % model["parts"][part], "%s/inflight_batcher_llm/%s/1" % (all_models_dir.rstrip("/"), part))
                for part in PYTHON_PARTS)


def llmapi_copies(model, all_models_dir):
    if model["backend"] == "tensorrtllm" and model["trtllm"]["layout"] == "llmapi":
        return {"%s/1" % model["name"]: "%s/llmapi/tensorrt_llm/1" % all_models_dir.rstrip("/")}
    return {}


def render(models, templates_dir):
    """{relative path: content} for every model, from the role's templates."""
    try:
        import jinja2
    except ImportError:
        raise ModelRepositoryError("jinja2", "the controller's Python lacks jinja2")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update({"pbtxt_string": _pbtxt_string, "to_json": _to_json, "bool_text": _bool_text})
    files = {}
    for model in models:
        for template, dest in template_files(model):
            files[dest] = env.get_template(template).render(model=model)
    return files


# --- validation --------------------------------------------------------------

def parse_config(text, where):
    """A config.pbtxt parsed with Triton's own ModelConfig schema."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ModelRepositoryError("tritonclient", "the controller's Python needs tritonclient[grpc] (Triton's ModelConfig "
                                   "schema) to validate the repository")
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ModelRepositoryError(where, "config.pbtxt does not parse with Triton's ModelConfig schema: %s" % error)
    return config


def _param(config, key):
    return config.parameters[key].string_value if key in config.parameters else None


def _require(condition, where, message):
    if not condition:
        raise ModelRepositoryError(where, message)


def validate(models, files):
    """Parses every config.pbtxt and checks what each backend requires; returns
    {model directory: parsed summary}."""
    configs = {}
    for path, text in files.items():
        if path.endswith("/config.pbtxt"):
            directory = path.split("/")[0]
            config = parse_config(text, path)
            _require(config.name == directory, path, "name %r differs from its directory %r" % (config.name, directory))
            leftover = _PLACEHOLDER.findall(text)
            _require(not leftover, path, "unfilled template placeholders %s" % leftover)
            configs[directory] = config
        elif path.endswith(".json"):
            try:
                json.loads(files[path])
            except ValueError as error:
                raise ModelRepositoryError(path, "is not valid JSON: %s" % error)
    for index, model in enumerate(models):
        where = _var(model.get("position", index))
        if model["backend"] == "vllm":
            _validate_vllm(model, configs[model["name"]], files, where)
        elif model["trtllm"]["layout"] == "llmapi":
            _validate_llmapi(model, configs[model["name"]], files, where)
        else:
            _validate_trtllm(model, configs, where)
    return dict((name, {"backend": config.backend or config.platform, "max_batch_size": config.max_batch_size,
                        "decoupled": config.model_transaction_policy.decoupled}) for name, config in configs.items())


def _validate_llmapi(model, config, files, where):
    """What TRT-LLM 1.1.0's llmapi/tensorrt_llm/1/model.py needs of config.pbtxt and model.yaml."""
    _require(config.backend == "python", where, "the LLM-API model must use the python backend")
    from tritonclient.grpc import model_config_pb2
    for tensor in config.input:
        type_name = model_config_pb2.DataType.Name(tensor.data_type)
        _require(tensor.name in LLMAPI_INPUTS, where, "input %s is not read by the LLM-API model (TRT-LLM 1.1.0 "
                 "llmapi/tensorrt_llm/1/helpers.py reads sampling_param_<name>)" % tensor.name)
        _require(type_name == LLMAPI_INPUTS[tensor.name], where, "input %s is %s, upstream declares %s"
                 % (tensor.name, type_name, LLMAPI_INPUTS[tensor.name]))
    # auto_complete_config sets the decoupled policy from model.yaml's triton_config.
    import yaml
    args = yaml.safe_load(files["%s/1/model.yaml" % model["name"]])
    triton_config = args.get("triton_config") or {}
    _require(bool(triton_config.get("decoupled")) == config.model_transaction_policy.decoupled, where,
             "model.yaml triton_config.decoupled %s differs from config.pbtxt's decoupled %s (the load fails: trying "
             "to change decoupled property)" % (triton_config.get("decoupled"), config.model_transaction_policy.decoupled))
    _require(int(triton_config.get("max_batch_size", -1)) == config.max_batch_size, where,
             "model.yaml triton_config.max_batch_size differs from config.pbtxt's")


def _validate_vllm(model, config, files, where):
    _require(config.backend == "vllm", where, "backend must be vllm, got %r" % config.backend)
    _require(config.max_batch_size == 0, where, "the vLLM backend needs max_batch_size 0")
    _require(config.model_transaction_policy.decoupled, where, "the vLLM backend needs the decoupled transaction policy")
    _require("text_input" in [i.name for i in config.input], where, "text_input input missing")
    kinds = [group.kind for group in config.instance_group]
    from tritonclient.grpc import model_config_pb2
    engine = json.loads(files["%s/1/model.json" % model["name"]])
    # vllm_backend src/model.py _validate_device_config: KIND_GPU only for tp x pp == 1.
    world = int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))
    if world > 1:
        _require(model_config_pb2.ModelInstanceGroup.KIND_GPU not in kinds, where,
                 "KIND_GPU is refused by the vLLM backend with tensor_parallel_size x pipeline_parallel_size > 1")
    if model["instance_kind"] == "KIND_GPU":
        groups = [(group.kind, list(group.gpus), group.count) for group in config.instance_group]
        _require(groups == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, model["device_gpus"], model["instance_count"])],
                 where, "instance_group %s does not pin the model's gpus %s (devices %s of its server instance)"
                 % (groups, model["gpus"], model["device_gpus"]))
    _require(engine.get("model"), where, "model.json has no model")
    if model["lora"]:
        _require(str(engine.get("enable_lora")).lower() == "true", where, "LoRA adapters without enable_lora")
        _require("%s/1/multi_lora.json" % model["name"] in files, where, "multi_lora.json missing")


def _validate_trtllm(model, configs, where):
    parts = model["parts"]
    trt = model["trtllm"]
    llm = configs[parts["tensorrt_llm"]]
    _require(llm.backend == "tensorrtllm", where, "tensorrt_llm must use the tensorrtllm backend")
    _require(_param(llm, "gpt_model_path") == trt["server_engine_dir"], where, "gpt_model_path (engine_dir) not filled")
    _require(_param(llm, "gpt_model_type") in BATCHING_STRATEGIES, where, "gpt_model_type (batching_strategy) invalid")
    _require(llm.model_transaction_policy.decoupled == trt["decoupled"], where, "decoupled mode differs from trtllm.decoupled")
    for part in ("preprocessing", "postprocessing"):
        _require(_param(configs[parts[part]], "tokenizer_dir"), where, "%s has no tokenizer_dir" % part)
    for part, required in sorted(TRTLLM_REQUIRED.items()):
        config = configs[parts[part]]
        for key in required["parameters"]:
            _require(key in config.parameters, where, "%s lacks parameter %s (TRT-LLM 1.1.0 reads it without a default)"
                     % (parts[part], key))
        declared_in = [i.name for i in config.input]
        declared_out = [o.name for o in config.output]
        for kind, names, declared in (("input", required["inputs"], declared_in),
                                      ("output", required["outputs"], declared_out)):
            missing = [name for name in names if name not in declared]
            _require(not missing, where, "%s does not declare %s(s) %s (TRT-LLM 1.1.0 needs them)"
                     % (parts[part], kind, missing))
        if required.get("only_inputs"):
            extra = [name for name in declared_in if name not in required["inputs"]]
            _require(not extra, where, "%s declares inputs %s that upstream refuses (\"unknown input\")"
                     % (parts[part], extra))
    _require(_param(configs[parts["tensorrt_llm_bls"]], "tensorrt_llm_model_name") == parts["tensorrt_llm"], where,
             "tensorrt_llm_bls must name %s in tensorrt_llm_model_name" % parts["tensorrt_llm"])
    ensemble = configs[model["name"]]
    _require(ensemble.platform == "ensemble", where, "the ensemble must use platform ensemble")
    steps = [step.model_name for step in ensemble.ensemble_scheduling.step]
    expected = [parts["preprocessing"], parts["tensorrt_llm"], parts["postprocessing"]]
    _require(steps == expected, where, "ensemble steps %s, expected %s" % (steps, expected))
    for name in [model["name"]] + list(parts.values()):
        _require(configs[name].max_batch_size == trt["max_batch_size"], where,
                 "%s max_batch_size %d differs from trtllm.max_batch_size %d"
                 % (name, configs[name].max_batch_size, trt["max_batch_size"]))
    # Every tensor an ensemble step maps must exist on the composing model.
    for step in ensemble.ensemble_scheduling.step:
        composing = configs[step.model_name]
        names_in = set(i.name for i in composing.input)
        names_out = set(o.name for o in composing.output)
        for key in step.input_map:
            _require(key in names_in, where, "ensemble maps unknown input %s of %s" % (key, step.model_name))
        for key in step.output_map:
            _require(key in names_out, where, "ensemble maps unknown output %s of %s" % (key, step.model_name))


def engine_fingerprint(model):
    """What an engine depends on: model source and revision, and every build setting."""
    trt = model["trtllm"]
    keys = ("model_family", "dtype", "quantization", "max_batch_size", "max_input_len", "max_seq_len", "max_beam_width",
            "convert_args", "build_args")
    return {"source": model["source"], "revision": model.get("revision") or "",
            "tensor_parallel_size": model["tensor_parallel_size"],
            "settings": dict((key, trt[key]) for key in keys)}


def serving_list(catalog, synced, models_dir):
    """The served entries of the catalog (triton_models) with their model_path, and the settings
    that name each by its catalog position."""
    pairs = served_models(catalog, synced, models_dir)
    return [model for _index, model in pairs], [index for index, _model in pairs]


def build_plan(catalog, gpu_info, gpu_override, settings, templates_dir, all_models_dir, synced=None):
    """Everything the role needs from the controller, in one call: the main server instance's
    repository at the top level, each other instance's (model_repository_instances) under
    "instances"; the GPU memory plan covers every instance (they share the host's GPUs).
    catalog: triton_models; synced: hf_model_synced (folder name -> version_path)."""
    models, indices = serving_list(catalog, synced, settings.get("models_dir", "/opt/models"))
    settings = dict(settings, catalog_indices=indices)
    gpus = gpu_table(gpu_info, gpu_override)
    normalized = normalize_models(models, gpus, settings)
    plan = plan_gpu_memory(normalized, gpus, settings.get("gpu_memory_budget", 0.9))
    views, _owner = plan_instances(settings.get("instances"), models, gpus, settings.get("main_instance") or "main")
    result = _instance_repository([m for m in normalized if m["instance"] == views[0]["name"]], templates_dir,
                                  all_models_dir)
    result["instances"] = []
    for view in views[1:]:
        repository = _instance_repository([m for m in normalized if m["instance"] == view["name"]], templates_dir,
                                          all_models_dir)
        result["instances"].append(dict(repository, name=view["name"], gpus=view["gpus"]))
    result.update({
        "gpu_plan": plan,
        # What the main instance's container is given: every GPU, or those no other instance takes.
        "server_gpus": "all" if views[0]["all"] else views[0]["gpus"],
        "engines": [{"name": m["name"], "model_path": m["source"], "gpus": m["gpus"],
                     "tensor_parallel_size": m["tensor_parallel_size"], "trtllm": m["trtllm"],
                     "fingerprint": engine_fingerprint(m)}
                    for m in normalized if m["backend"] == "tensorrtllm" and m["trtllm"]["build"]],
        "needs_trtllm_models": any(m["backend"] == "tensorrtllm" for m in normalized),
    })
    return result


def _instance_repository(models, templates_dir, all_models_dir):
    """The repository of one server instance: its files, validated, and what its server loads."""
    files = render(models, templates_dir)
    summary = validate(models, files)
    copies = {}
    for model in models:
        copies.update(python_model_copies(model, all_models_dir))
        copies.update(llmapi_copies(model, all_models_dir))
    load_models = []
    for model in models:
        if model["load"]:
            load_models.extend(model["load_models"])
    return {"files": files, "copies": copies, "load_models": load_models, "configs": summary,
            "model_dirs": dict((m["name"], [m["name"]] + sorted(m["parts"].values())) for m in models),
            # The models a prompt goes to (a vLLM model, a TRT-LLM ensemble or LLM-API model).
            "prompt_models": [m["name"] for m in models],
            "trtllm_orchestrator": trtllm_orchestrator(models)}


def trtllm_orchestrator(models):
    """Names of the in-flight batching TRT-LLM models with tensor parallelism > 1: the C++
    tensorrtllm backend runs one MPI rank per GPU, and a server started as plain
    `tritonserver` (not launch_triton_server.py --world_size N under mpirun) runs them only in
    orchestrator mode: TRTLLM_ORCHESTRATOR=1 in the server's environment, the backend then
    spawns the workers. The LLM-API layout starts its own workers (LLM API MPI session)."""
    return [m["name"] for m in models if m["backend"] == "tensorrtllm" and m["trtllm"]["layout"] == "inflight_batcher"
            and m["tensor_parallel_size"] > 1]


def files_of(directory):
    """Sorted relative file paths under a directory (for copying code trees)."""
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return found
