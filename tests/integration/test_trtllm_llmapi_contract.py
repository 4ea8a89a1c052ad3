# SPDX-License-Identifier: Apache-2.0
"""The LLM-API layout (TRT-LLM 1.1.0 all_models/llmapi/tensorrt_llm) on the REAL
tritonserver with the contract double (tests/fixtures/triton/trtllm_all_models/llmapi):
a repository rendered by the role's code from inventory-style variables and installed by
the triton_model_repository module (upstream's folder copied, our model.yaml over it) loads
and streams; the broken forms fail the way the real model fails. Ports 18800-18802."""

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr
from ansible_collections.onprem.triton.plugins.modules import triton_model_repository as install_module
from tests.fixtures.triton.server import TritonServer

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "roles" / "model_repository" / "templates"
ALL_MODELS = ROOT / "tests" / "fixtures" / "triton" / "trtllm_all_models"
GPUS = [{"index": 0, "memory_total_mib": 81559}]
INVENTORY = """
triton_models:
  - name: chat
    backend: tensorrtllm
    model_path: {models}/chat
    gpus: [0]
    gpu_memory_utilization: 0.45
    trtllm:
      layout: llmapi
      decoupled: true
      weights_mib: 3000
      llmapi_args: {{max_seq_len: 2048}}
  - name: chat_sync
    backend: tensorrtllm
    model_path: {models}/chat
    gpus: [0]
    gpu_memory_utilization: 0.3
    trtllm: {{layout: llmapi, decoupled: false}}
"""


def install(root, plan):
    """The role's install step: the module itself, so its copy/file order is the one tested."""
    args = {"root": str(root), "files": plan["files"], "copies": plan["copies"], "model_dirs": plan["model_dirs"]}
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        install_module.main()
    assert exit_info.value.code == 0
    return root / "current"


def post(server, path, payload):
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def stream(server, model, payload):
    body = post(server, f"/v2/models/{model}/generate_stream", payload)
    return [json.loads(line[len(b"data: "):]) for line in body.splitlines() if line.startswith(b"data: ")]


def load_error(server, model):
    try:
        post(server, f"/v2/repository/models/{model}/load", {})
    except urllib.error.HTTPError as error:
        return error.read().decode()
    return None


def broken_copy(repo, source, name, edit_config=None, model_yaml=None):
    """Another model folder made from a rendered one, with one rule broken."""
    shutil.copytree(repo / source, repo / name, symlinks=False)
    config = (repo / name / "config.pbtxt").read_text().replace(f'name: "{source}"', f'name: "{name}"')
    (repo / name / "config.pbtxt").write_text(edit_config(config) if edit_config else config)
    if model_yaml is not None:
        (repo / name / "1" / "model.yaml").write_text(model_yaml)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llmapi")
    (tmp / "models" / "chat").mkdir(parents=True)
    (tmp / "models" / "chat" / "config.json").write_text("{}")
    models = yaml.safe_load(INVENTORY.format(models=tmp / "models"))["triton_models"]
    settings = {"models_dir": str(tmp / "models"), "server_models_dir": str(tmp / "models"),
                "engines_dir": str(tmp / "engines"), "server_engines_dir": str(tmp / "engines"),
                "gpu_memory_budget": 0.9}
    plan = mr.build_plan(models, {}, GPUS, settings, str(TEMPLATES), str(ALL_MODELS))
    current = install(tmp / "repository", plan)
    # A separate, writable repository for the server: the generation plus the broken forms.
    repo = tmp / "served"
    shutil.copytree(current, repo, symlinks=False)
    # Upstream's folder copied AFTER our model.yaml (the order the role used to have).
    broken_copy(repo, "chat", "chat_upstream_yaml",
                model_yaml=(ALL_MODELS / "llmapi" / "tensorrt_llm" / "1" / "model.yaml").read_text())
    broken_copy(repo, "chat", "chat_old_input", edit_config=lambda text: text.replace(
        '"sampling_param_exclude_input_from_output"', '"exclude_input_from_output"'))
    with TritonServer(repo, http_port=18800, grpc_port=18801, metrics_port=18802,
                      load_models=plan["load_models"]) as server:
        for name in plan["load_models"]:
            server.wait_model_ready(name, timeout=60)
        yield server, plan, current
    server.cleanup()


def test_our_model_yaml_wins_over_upstreams(served):
    current = served[2]
    args = yaml.safe_load((current / "chat" / "1" / "model.yaml").read_text())
    assert args["model"].endswith("/models/chat") and args["triton_config"] == {"decoupled": True, "max_batch_size": 0}
    # TRT-LLM's meaning: a share of the memory free after 3000 MiB of weights, so that the model keeps to 0.45.
    assert args["kv_cache_config"]["free_gpu_memory_fraction"] == pytest.approx(
        (0.45 * 81559 - 3000) / (81559 - 3000), abs=1e-4)
    assert (current / "chat" / "1" / "model.py").exists()


def test_streaming_generation_goes_through(served):
    server = served[0]
    events = stream(server, "chat", {"text_input": "one two", "sampling_param_max_tokens": 3, "streaming": True,
                                     "sampling_param_seed": 7, "sampling_param_exclude_input_from_output": True})
    assert [event["text_output"] for event in events] == [" one", " two", " one"]
    assert all("finish_reason" not in event for event in events)


def test_finish_reason_only_with_return_finish_reason(served):
    server = served[0]
    events = stream(server, "chat", {"text_input": "a b c", "sampling_param_max_tokens": 5, "streaming": True,
                                     "sampling_param_stop": ["c"], "return_finish_reason": True})
    assert [event["text_output"] for event in events] == [" a", " b"]
    assert events[-1]["finish_reason"] == "stop"


def test_not_decoupled_model_answers_once_and_refuses_streaming(served):
    server = served[0]
    answer = json.loads(post(server, "/v2/models/chat_sync/generate", {"text_input": "x y", "sampling_param_max_tokens": 3}))
    assert answer["text_output"] == " x y x"
    with pytest.raises(urllib.error.HTTPError) as refused:
        stream(server, "chat_sync", {"text_input": "x", "streaming": True})
    assert "Streaming is only supported in decoupled mode." in refused.value.read().decode()


def test_upstream_model_yaml_over_ours_fails_the_load(served):
    error = load_error(served[0], "chat_upstream_yaml")
    assert error and "trying to change decoupled property" in error


def test_input_not_named_as_upstream_fails_the_load(served):
    error = load_error(served[0], "chat_old_input")
    assert error and "input 'exclude_input_from_output' is not read by the LLM-API model" in error
