# SPDX-License-Identifier: Apache-2.0
"""The repositories the model_repository role renders, loaded by the REAL
tritonserver (tests/fixtures/triton): vLLM models and a TensorRT-LLM
in-flight batching ensemble, all READY, generate_stream answering (through the
ensemble for TRT-LLM). Only the engines are stand-ins (see the fixture files)."""

import json
import urllib.request
from pathlib import Path

import pytest

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr
from tests.fixtures.triton.server import TritonServer, lay_out_repository

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "roles" / "model_repository" / "templates"
ALL_MODELS = ROOT / "tests" / "fixtures" / "triton" / "trtllm_all_models"
GPUS = [{"index": 0, "memory_total_mib": 81559}, {"index": 1, "memory_total_mib": 81559}]


def install(tmp_path, models):
    """Renders and validates like the role, then lays the files out as one generation."""
    settings = {"models_dir": str(tmp_path / "models"), "server_models_dir": str(tmp_path / "models"),
                "engines_dir": str(tmp_path / "engines"), "server_engines_dir": str(tmp_path / "engines"),
                "gpu_memory_budget": 0.9, "vllm_report_custom_metrics": True,
                "vllm_contract": mr.load_vllm_contract(str(ROOT / "roles" / "model_repository" / "files" / "vllm_contract"),
                                                       "25.12")}
    plan = mr.build_plan(models, {}, GPUS, settings, str(TEMPLATES), str(ALL_MODELS))
    # upstream's llmapi folder ships its own model.yaml: ours must win, as in the module
    return lay_out_repository(plan, tmp_path / "repository"), plan


def fake_model_dir(path, engine=False):
    """A synced model folder (config + tokenizer) and, for TRT-LLM, an engine folder."""
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}", encoding="utf-8")
    (path / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    if engine:
        (path / "rank0.engine").write_bytes(b"stand-in engine")


def stream(server, model, payload):
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/generate_stream",
                                     data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        events = [line[len(b"data: "):] for line in response.read().splitlines() if line.startswith(b"data: ")]
    return [json.loads(event) for event in events]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("model-repository")
    fake_model_dir(tmp_path / "models" / "gemma_local")
    fake_model_dir(tmp_path / "models" / "llama")
    fake_model_dir(tmp_path / "engines" / "llama", engine=True)
    (tmp_path / "models" / "adapters" / "sql").mkdir(parents=True)
    models = [
        {"name": "gemma_local", "backend": "vllm", "model_path": str(tmp_path / "models" / "gemma_local"),
         # Both GPUs: KIND_MODEL (a single-GPU model is pinned with KIND_GPU, which this GPU-less
         # tritonserver refuses; tests/integration/test_model_repository_vllm_placement.py shows it).
         "gpus": [0, 1], "tensor_parallel_size": 2, "gpu_memory_utilization": 0.45,
         "inputs": ["text_input", "stream", "sampling_parameters", "exclude_input_in_output"]},
        {"name": "opt_lora", "backend": "vllm", "hf_repo_id": "facebook/opt-125m", "gpus": [0, 1],
         "engine_args": {"max_model_len": 2048, "enforce_eager": True, "quantization": "awq"},
         "lora": {"adapters": {"sql": str(tmp_path / "models" / "adapters" / "sql")}}},
        {"name": "llama", "backend": "tensorrtllm", "model_path": str(tmp_path / "models" / "llama"), "gpus": [1]},
        {"name": "llama_llmapi", "backend": "tensorrtllm", "model_path": str(tmp_path / "models" / "llama"),
         "gpus": [1], "trtllm": {"layout": "llmapi", "llmapi_args": {"max_seq_len": 2048}}},
    ]
    repo, plan = install(tmp_path, models)
    with TritonServer(repo, http_port=18753, grpc_port=18754, metrics_port=18755,
                      load_models=plan["load_models"]) as server:
        for name in plan["load_models"]:
            server.wait_model_ready(name, timeout=60)
        yield server, plan
    server.cleanup()


def test_every_model_is_ready(served):
    server, plan = served
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}")
    with urllib.request.urlopen(request, timeout=10) as response:
        index = {entry["name"]: entry.get("state") for entry in json.load(response)}
    assert {name: index.get(name) for name in plan["load_models"]} == {name: "READY" for name in plan["load_models"]}
    assert set(plan["load_models"]) == {"gemma_local", "opt_lora", "llama", "preprocessing",
                                        "llama_tensorrt_llm", "postprocessing", "llama_tensorrt_llm_bls",
                                        "llama_llmapi"}


def test_vllm_generate_stream(served):
    server = served[0]
    events = stream(server, "gemma_local", {"text_input": "the quick brown fox", "stream": True,
                                            "exclude_input_in_output": True,
                                            "sampling_parameters": json.dumps({"max_tokens": 6})})
    assert "".join(event["text_output"] for event in events) == " the quick brown fox the quick"


def test_vllm_lora_model_answers(served):
    server = served[0]
    events = stream(server, "opt_lora", {"text_input": "a b", "stream": True, "exclude_input_in_output": True,
                                         "sampling_parameters": json.dumps({"max_tokens": 3, "lora_name": "sql"})})
    assert "".join(event["text_output"] for event in events) == " a b a"


def test_trtllm_ensemble_generate_stream(served):
    server = served[0]
    events = stream(server, "llama", {"text_input": "hello", "max_tokens": 7, "stream": True})
    assert len(events) == 7
    assert "".join(event["text_output"] for event in events) == "hellohe"


def test_trtllm_ensemble_generate_without_stream(served):
    server = served[0]
    events = stream(server, "llama", {"text_input": "abc", "max_tokens": 4})
    assert [event["text_output"] for event in events] == ["abca"]


def test_trtllm_bls_generate_stream(served):
    server = served[0]
    events = stream(server, "llama_tensorrt_llm_bls", {"text_input": "xy", "max_tokens": 3, "stream": True})
    assert "".join(event["text_output"] for event in events) == "xyx"


def test_trtllm_llmapi_layout_generate_stream(served):
    server = served[0]
    events = stream(server, "llama_llmapi", {"text_input": "one two", "sampling_param_max_tokens": 3, "streaming": True})
    assert [event["text_output"] for event in events] == [" one", " two", " one"]
