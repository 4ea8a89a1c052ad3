# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: triton_model_repository_render
short_description: Plan, render and validate a Triton model repository (vLLM and TensorRT-LLM backends)
version_added: "0.1.0"
description:
  - Checks the model list, places the models on the host's GPUs with a memory plan that refuses
    overcommit, renders the role's Jinja templates (C(config.pbtxt), C(model.json), C(multi_lora.json),
    the TensorRT-LLM ensemble and its parts, the LLM-API C(model.yaml)) and parses every C(config.pbtxt)
    with Triton's own ModelConfig schema (C(tritonclient.grpc.model_config_pb2) with protobuf's
    text_format), checking what each backend requires.
  - "An action plugin: it runs in the controller's own Ansible process (whose Python has jinja2 and tritonclient),
    whatever the task's host or C(delegate_to); the targets need nothing. Read-only. Bad input fails naming the
    variable. The code lives in C(plugins/plugin_utils/model_repository.py) and C(plugin_utils/model_catalog.py)."
author:
  - onprem.triton contributors (@onprem-triton)
requirements:
  - jinja2
  - tritonclient[grpc] (Triton's ModelConfig schema) and protobuf
options:
  models:
    description:
      - The model catalog, C(triton_models) (see the collection's README). Entries with C(serve=false)
        are skipped; an entry with C(weights) is served from the copy I(synced) names for its folder.
    type: list
    elements: dict
    required: true
  synced:
    description:
      - The weights the hf_model role installed, by folder name (its fact C(hf_model_synced), or the
        same read from the host's links). Each entry's C(version_path) is what the model is served from,
        so a new revision is a new generation and a rollback brings the previous weights back.
      - A folder not listed is served from C(<models_dir>/<folder>).
    type: dict
    default: {}
  gpu_info:
    description: The host stack's C(nvidia_gpu_info) fact (C(gpus) with C(index) and C(memory_total_mib)).
    type: dict
    default: {}
  gpus:
    description: GPUs to plan for instead of I(gpu_info), for hosts and tests without GPU facts.
    type: list
    elements: dict
    default: []
  gpu_memory_budget:
    description: Share of each GPU the models on it may take together.
    type: float
    default: 0.9
  templates_dir:
    description: The role's templates folder.
    type: path
    required: true
  models_dir:
    description: Host folder of the synced models (the hf_model role's C(hf_model_dir)).
    type: str
    default: /opt/models
  server_models_dir:
    description: Where the server's container sees I(models_dir).
    type: str
    default: /opt/models
  engines_dir:
    description: Host folder of the TensorRT-LLM engines.
    type: str
    default: /opt/triton/engines
  server_engines_dir:
    description: Where the server's container sees I(engines_dir).
    type: str
    default: /opt/triton/engines
  trtllm_all_models_dir:
    description: Host folder holding a copy of the TensorRT-LLM container's C(/app/all_models).
    type: str
    default: /opt/triton/trtllm_all_models
  vllm_report_custom_metrics:
    description: Default of each vLLM model's C(report_custom_metrics).
    type: bool
    default: true
  triton_release:
    description:
      - The pinned Triton release (C(25.12)); picks the table of what its vLLM accepts (read only when a
        model uses the vLLM backend).
    type: str
    default: "25.12"
  release_facts:
    description:
      - The entry of I(triton_release) in the collection's release table (lookup C(onprem.triton.triton_releases),
        filter C(onprem.triton.triton_release_facts)). When given, a backend the release has no image for and a
        TensorRT-LLM layout it does not offer are refused, and a model without C(trtllm.layout) gets the release's
        default layout. When empty, nothing is checked against a release and the layout defaults to C(inflight_batcher).
    type: dict
    default: {}
  instances:
    description:
      - Server instances of the host besides the main one, each a container that sees only its GPUs
        (the role's C(model_repository_instances)). A model with tensor parallelism on a subset of the host's GPUs
        needs one, since the vLLM backend starts it on the first GPUs its container sees.
      - The main instance sees the GPUs no instance takes and serves the models no instance lists.
        Each instance gets its own repository (returned under C(instances)); the GPU memory plan covers them all.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The instance's name (its unit is C(triton-<name>.service)).
        type: str
        required: true
      gpus:
        description: Host GPU indices its container is given; each GPU belongs to one instance.
        type: list
        elements: int
        required: true
      models:
        description: Names of I(models) it serves; their C(gpus) must be among its GPUs.
        type: list
        elements: str
        required: true
  main_instance:
    description: Name of the main instance (the triton_server role's C(triton_server_name)); no other instance may take it.
    type: str
    default: main
  vllm_contracts_dir:
    description:
      - Controller folder of the per-release vLLM tables (C(<release>.json)); the role passes its
        C(files/vllm_contract). C(engine_args) keys outside the table, quantization methods and
        C(max_lora_rank) values it does not list are refused before anything is written.
    type: path
    required: true
extends_documentation_fragment:
  - onprem.triton.read_only
"""

EXAMPLES = r"""
- name: Render and validate on the controller
  onprem.triton.triton_model_repository_render:
    templates_dir: "{{ role_path }}/templates"
    gpu_info: "{{ nvidia_gpu_info }}"
    models:
      - name: gemma_local
        backend: vllm
        model_path: /opt/models/gemma_local
        tensor_parallel_size: 1
        gpu_memory_utilization: 0.90
  delegate_to: localhost
  register: rendered
"""

RETURN = r"""
files:
  description: Relative path inside the main instance's repository to rendered content.
  returned: success
  type: dict
  sample: {"gemma_local/config.pbtxt": "name: \"gemma_local\"\n..."}
copies:
  description: Relative destination folder to the host folder to copy (TensorRT-LLM python models).
  returned: success
  type: dict
  sample: {"preprocessing/1": "/opt/triton/trtllm_all_models/inflight_batcher_llm/preprocessing/1"}
load_models:
  description: Names the main instance passes as C(--load-model) in explicit model-control mode.
  returned: success
  type: list
  elements: str
  sample: [gemma_local]
model_dirs:
  description: Model name to the repository folders that belong to it.
  returned: success
  type: dict
  sample: {"llama": ["llama", "llama_tensorrt_llm", "llama_tensorrt_llm_bls", "postprocessing", "preprocessing"]}
gpu_plan:
  description: Per GPU of the host, the share each model takes (whatever instance serves it) and the total.
  returned: success
  type: list
  elements: dict
  sample: [{"index": 0, "memory_total_mib": 81559, "total_share": 0.9, "models": {"gemma_local": 0.9}}]
configs:
  description: Per repository folder, what the schema parse found (backend or platform, max_batch_size, decoupled).
  returned: success
  type: dict
  sample: {"gemma_local": {"backend": "vllm", "max_batch_size": 0, "decoupled": true}}
engines:
  description: TensorRT-LLM engines to build (models with C(trtllm.build)), with their fingerprint.
  returned: success
  type: list
  elements: dict
  sample: []
prompt_models:
  description: The main instance's models that take a prompt (vLLM models, TensorRT-LLM ensembles and LLM-API models).
  returned: success
  type: list
  elements: str
  sample: [gemma_local]
server_gpus:
  description: The GPUs the main instance's container is given, C(all) when there is no other instance.
  returned: success
  type: raw
  sample: [0, 1]
instances:
  description:
    - One entry per I(instances) item, with its C(name), C(gpus) and the same keys as the main instance's repository
      (C(files), C(copies), C(load_models), C(prompt_models), C(model_dirs), C(configs), C(trtllm_orchestrator)).
  returned: success
  type: list
  elements: dict
  sample: [{"name": "tp23", "gpus": [2, 3], "load_models": ["big"], "prompt_models": ["big"], "files": {}}]
needs_trtllm_models:
  description: Whether the TensorRT-LLM python models must be present on the host (for any instance).
  returned: success
  type: bool
  sample: false
trtllm_orchestrator:
  description:
    - In-flight batching TensorRT-LLM models with tensor parallelism > 1; the server must run in orchestrator mode
      (C(TRTLLM_ORCHESTRATOR=1) in its environment) to serve them.
  returned: success
  type: list
  elements: str
  sample: ["llama70b"]
"""
