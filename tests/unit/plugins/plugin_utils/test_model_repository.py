# SPDX-License-Identifier: Apache-2.0
"""Every template of the model_repository role rendered over a matrix of inputs
and parsed with Triton's own ModelConfig schema; bad inputs name the variable."""

import itertools
import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr

TEMPLATES = str(Path(__file__).resolve().parents[4] / "roles" / "model_repository" / "templates")
SETTINGS = {"models_dir": "/opt/models", "server_models_dir": "/models", "engines_dir": "/opt/triton/engines",
            "server_engines_dir": "/engines", "gpu_memory_budget": 0.9, "vllm_report_custom_metrics": True,
            "vllm_contract": mr.load_vllm_contract(
                str(Path(__file__).resolve().parents[4] / "roles" / "model_repository" / "files" / "vllm_contract"),
                "25.12")}
H100 = [{"index": i, "memory_total_mib": 81559, "name": "NVIDIA H100 80GB HBM3"} for i in range(4)]


def plan(models, gpus=None, budget=0.9):
    return mr.build_plan(models, {"gpus": gpus or H100, "count": len(gpus or H100)}, None,
                         dict(SETTINGS, gpu_memory_budget=budget), TEMPLATES, "/opt/triton/trtllm_all_models/x")


def parse(text):
    config = model_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    return config


def vllm_model(name, lora, quantized, tp):
    model = {"name": name, "backend": "vllm", "model_path": "/opt/models/%s" % name,
             "gpus": [0] if tp == 1 else [0, 1, 2, 3], "engine_args": {"max_model_len": 4096, "enable_prefix_caching": True}}
    if tp > 1:
        # A multi-GPU vLLM model takes every GPU the server sees: tp x pp = 4 here.
        model["tensor_parallel_size"] = tp
        model["engine_args"]["pipeline_parallel_size"] = 4 // tp
    if lora:
        model["lora"] = {"adapters": {"sql": "/opt/models/sql-lora", "chat": "/opt/models/chat-lora"}, "max_lora_rank": 64}
    if quantized:
        model["engine_args"]["quantization"] = quantized
    return model


def trtllm_model(name, quantized, layout, gpus):
    return {"name": name, "backend": "tensorrtllm", "model_path": "/opt/models/%s" % name, "gpus": gpus,
            "trtllm": {"layout": layout, "quantization": quantized, "max_batch_size": 16,
                       "max_tokens_in_paged_kv_cache": 8192, "decoding_mode": "top_k_top_p"}}


MATRIX = list(itertools.product([False, True], [None, "awq", "fp8"], [1, 2], ["inflight_batcher", "llmapi"],
                                [None, "int4_awq"]))


@pytest.mark.parametrize("lora,vllm_quant,tp,layout,trt_quant", MATRIX)
def test_matrix_renders_and_parses(lora, vllm_quant, tp, layout, trt_quant):
    models = [vllm_model("chat", lora, vllm_quant, tp), vllm_model("coder", False, None, 1),
              trtllm_model("llama", trt_quant, layout, [2, 3])]
    result = plan(models)
    configs = [path for path in result["files"] if path.endswith("config.pbtxt")]
    assert len(configs) == (2 + (5 if layout == "inflight_batcher" else 1))
    for path in configs:
        config = parse(result["files"][path])
        assert config.name == path.split("/")[0]
        assert "${" not in result["files"][path]
    chat = json.loads(result["files"]["chat/1/model.json"])
    assert chat["model"] == "/models/chat"  # host path mapped to the server's mount
    assert chat["tensor_parallel_size"] == tp
    assert chat["max_model_len"] == 4096
    assert chat.get("quantization") == vllm_quant
    assert ("chat/1/multi_lora.json" in result["files"]) is lora
    if lora:
        assert chat["enable_lora"] == "true" and chat["max_lora_rank"] == 64
        assert json.loads(result["files"]["chat/1/multi_lora.json"]) == {"chat": "/models/chat-lora",
                                                                         "sql": "/models/sql-lora"}
    else:
        assert "enable_lora" not in chat
    if layout == "inflight_batcher":
        llm = parse(result["files"]["llama_tensorrt_llm/config.pbtxt"])
        assert llm.parameters["gpt_model_path"].string_value == "/engines/llama"
        assert llm.parameters["gpu_device_ids"].string_value == "2,3"
        assert llm.parameters["max_tokens_in_paged_kv_cache"].string_value == "8192"
        # GPUs 2 and 3 are llama's alone, unless the multi-GPU chat model (all 4 GPUs) shares them.
        assert float(llm.parameters["kv_cache_free_gpu_mem_fraction"].string_value) == pytest.approx(
            0.9 if tp == 1 else 0.45)
        # preprocessing/postprocessing keep upstream's names: the BLS model calls them so.
        assert set(result["copies"]) == {"preprocessing/1", "postprocessing/1", "llama_tensorrt_llm_bls/1"}
        assert result["load_models"][-5:] == ["llama", "preprocessing", "llama_tensorrt_llm",
                                              "postprocessing", "llama_tensorrt_llm_bls"]
    else:
        model_yaml = yaml.safe_load(result["files"]["llama/1/model.yaml"])
        assert model_yaml["tensor_parallel_size"] == 2 and model_yaml["model"] == "/models/llama"
        assert result["copies"] == {"llama/1": "/opt/triton/trtllm_all_models/x/llmapi/tensorrt_llm/1"}


def test_gemma_local_from_the_brief():
    """The brief's example, from variables alone."""
    result = plan([{"name": "gemma_local", "backend": "vllm", "model_path": "/local_models/google_gemma-3-1b-it",
                    "gpus": [0], "tensor_parallel_size": 1, "gpu_memory_utilization": 0.90,
                    "inputs": ["text_input", "stream", "sampling_parameters"], "outputs": ["text_output"]}])
    config = parse(result["files"]["gemma_local/config.pbtxt"])
    assert (config.name, config.backend, config.max_batch_size) == ("gemma_local", "vllm", 0)
    assert config.model_transaction_policy.decoupled
    assert [(i.name, i.optional) for i in config.input] == [("text_input", False), ("stream", True),
                                                            ("sampling_parameters", True)]
    assert [o.name for o in config.output] == ["text_output"]
    assert json.loads(result["files"]["gemma_local/1/model.json"]) == {
        "model": "/local_models/google_gemma-3-1b-it", "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9}
    assert result["load_models"] == ["gemma_local"]


def test_tensor_parallel_defaults_to_assigned_gpus_and_kind_model():
    result = plan([{"name": "big", "backend": "vllm", "hf_repo_id": "org/big", "revision": "abc123"}])
    assert json.loads(result["files"]["big/1/model.json"])["tensor_parallel_size"] == 4
    assert json.loads(result["files"]["big/1/model.json"])["revision"] == "abc123"
    config = parse(result["files"]["big/config.pbtxt"])
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_MODEL
    assert config.parameters["REPORT_CUSTOM_METRICS"].string_value == "true"


def test_gpu_plan_splits_shared_gpu():
    result = plan([{"name": "a", "backend": "vllm", "hf_repo_id": "org/a", "gpus": [0]},
                   {"name": "b", "backend": "vllm", "hf_repo_id": "org/b", "gpus": [0], "memory_mib": 20000},
                   {"name": "c", "backend": "tensorrtllm", "model_path": "/opt/models/c", "gpus": [0]}])
    gpu0 = result["gpu_plan"][0]
    assert gpu0["models"]["b"] == pytest.approx(20000 / 81559, abs=1e-4)
    assert gpu0["models"]["a"] == gpu0["models"]["c"] == pytest.approx((0.9 - 20000 / 81559) / 2, abs=1e-4)
    assert gpu0["total_share"] <= 0.9
    llm = parse(result["files"]["c_tensorrt_llm/config.pbtxt"])
    assert float(llm.parameters["kv_cache_free_gpu_mem_fraction"].string_value) == gpu0["models"]["c"]


def test_overcommit_names_models_and_numbers():
    with pytest.raises(mr.VariableError) as error:
        plan([{"name": "a", "backend": "vllm", "hf_repo_id": "org/a", "gpus": [1], "gpu_memory_utilization": 0.6},
              {"name": "b", "backend": "vllm", "hf_repo_id": "org/b", "gpus": [1, 2], "tensor_parallel_size": 1,
               "gpu_memory_utilization": 0.5}])
    message = str(error.value)
    assert error.value.variable == "triton_models"
    assert "GPU 1" in message and "a 0.60" in message and "b 0.50" in message and "1.10" in message
    assert "budget is 0.90" in message


def test_no_room_left_for_an_automatic_share():
    with pytest.raises(mr.VariableError, match="no room left for b"):
        plan([{"name": "a", "backend": "vllm", "hf_repo_id": "org/a", "gpus": [0], "gpu_memory_utilization": 0.88},
              {"name": "b", "backend": "vllm", "hf_repo_id": "org/b", "gpus": [0]}])


@pytest.mark.parametrize("models,variable", [
    ([], "triton_models"),
    ([{"name": "x y", "backend": "vllm", "hf_repo_id": "o/x"}], "triton_models[0].name"),
    ([{"name": "x", "backend": "onnx", "hf_repo_id": "o/x"}], "triton_models[0].backend"),
    ([{"name": "x", "backend": "vllm"}], "triton_models[0]"),  # says nowhere its weights come from
    ([{"name": "x", "backend": "vllm", "model_path": "relative"}], "triton_models[0].model_path"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "gpus": [7]}], "triton_models[0].gpus"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "gpus": [0], "tensor_parallel_size": 2}],
     "triton_models[0].tensor_parallel_size"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "gpu_memory_utilization": 1.5}],
     "triton_models[0].gpu_memory_utilization"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "engine_args": {"disable_log_requests": True}}],
     "triton_models[0].engine_args.disable_log_requests"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "engine_args": {"hf_token": "hf_secret"}}],
     "triton_models[0].engine_args.hf_token"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "engine_args": {"quantization": "magic"}}],
     "triton_models[0].engine_args.quantization"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "engine_args": {"model": "o/y"}}],
     "triton_models[0].engine_args.model"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "inputs": ["text_input", "prompt"]}],
     "triton_models[0].inputs"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "lora": {"adapters": {}}}],
     "triton_models[0].lora.adapters"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x", "max_batch": 4}], "triton_models[0].max_batch"),
    ([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x"}, {"name": "x", "backend": "vllm", "hf_repo_id": "o/y"}],
     "triton_models[1].name"),
    ([{"name": "x", "backend": "tensorrtllm", "model_path": "/m", "trtllm": {"batching_strategy": "dynamic"}}],
     "triton_models[0].trtllm.batching_strategy"),
    ([{"name": "x", "backend": "tensorrtllm", "model_path": "/m", "trtllm": {"max_batch_size": 0}}],
     "triton_models[0].trtllm.max_batch_size"),
    ([{"name": "x", "backend": "tensorrtllm", "model_path": "/m", "trtllm": {"kv_fraction": 0.5}}],
     "triton_models[0].trtllm.kv_fraction"),
    ([{"name": "x", "backend": "tensorrtllm", "model_path": "/m", "trtllm": {"batch_scheduler_policy": "fifo"}}],
     "triton_models[0].trtllm.batch_scheduler_policy"),
    ([{"name": "x", "backend": "tensorrtllm", "model_path": "/m", "engine_args": {"dtype": "half"}}],
     "triton_models[0].engine_args"),
    ([{"name": "x", "backend": "tensorrtllm", "model_path": "/m"},
      {"name": "preprocessing", "backend": "vllm", "hf_repo_id": "o/y"}], "triton_models[1].name"),
    ([{"name": "x", "backend": "tensorrtllm", "model_path": "/m"},
      {"name": "y", "backend": "tensorrtllm", "model_path": "/n", "trtllm": {"layout": "llmapi"}},
      {"name": "z", "backend": "tensorrtllm", "model_path": "/o"}], "triton_models[2]"),
])
def test_bad_input_names_the_variable(models, variable):
    with pytest.raises(mr.VariableError) as error:
        plan(models)
    assert error.value.variable == variable
    assert str(error.value).startswith(variable + ": ")


def test_no_gpu_facts_asks_for_the_override():
    with pytest.raises(mr.VariableError) as error:
        mr.build_plan([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x"}], {"count": 0, "gpus": []}, [],
                      SETTINGS, TEMPLATES, "/x")
    assert error.value.variable == "model_repository_gpus"


def test_validation_refuses_a_config_triton_would_refuse():
    models = mr.normalize_models([{"name": "x", "backend": "vllm", "hf_repo_id": "o/x"}], mr.gpu_table({}, H100), SETTINGS)
    mr.plan_gpu_memory(models, mr.gpu_table({}, H100), 0.9)
    files = mr.render(models, TEMPLATES)
    broken = dict(files, **{"x/config.pbtxt": files["x/config.pbtxt"].replace("max_batch_size: 0", "max_batch_size: 8")})
    with pytest.raises(mr.VariableError, match="max_batch_size 0"):
        mr.validate(models, broken)
    unparsable = dict(files, **{"x/config.pbtxt": files["x/config.pbtxt"] + "\nbogus_field: 1\n"})
    with pytest.raises(mr.VariableError, match="does not parse with Triton's ModelConfig schema"):
        mr.validate(models, unparsable)
    not_decoupled = dict(files, **{"x/config.pbtxt": files["x/config.pbtxt"].replace("decoupled: true", "decoupled: false")})
    with pytest.raises(mr.VariableError, match="decoupled"):
        mr.validate(models, not_decoupled)


def test_validation_checks_the_trtllm_ensemble_wiring():
    gpus = mr.gpu_table({}, H100)
    models = mr.normalize_models([{"name": "l", "backend": "tensorrtllm", "model_path": "/opt/models/l"}], gpus, SETTINGS)
    mr.plan_gpu_memory(models, gpus, 0.9)
    files = mr.render(models, TEMPLATES)
    mr.validate(models, files)
    miswired = dict(files, **{"l/config.pbtxt": files["l/config.pbtxt"].replace('key: "QUERY"', 'key: "PROMPT"')})
    with pytest.raises(mr.VariableError, match="unknown input PROMPT"):
        mr.validate(models, miswired)
    unfilled = dict(files, **{"l_tensorrt_llm/config.pbtxt": files["l_tensorrt_llm/config.pbtxt"].replace(
        '"inflight_fused_batching"', '"${batching_strategy}"')})
    with pytest.raises(mr.VariableError, match="placeholders"):
        mr.validate(models, unfilled)


def test_server_path_mapping():
    assert mr.server_path("/opt/models/a", "/opt/models", "/models") == "/models/a"
    assert mr.server_path("/opt/models2/a", "/opt/models", "/models") == "/opt/models2/a"
    assert mr.server_path("/srv/a", "/opt/models", "/models") == "/srv/a"


def test_engine_fingerprint_follows_settings():
    gpus = mr.gpu_table({}, H100)
    first = mr.normalize_models([{"name": "l", "backend": "tensorrtllm", "model_path": "/opt/models/l", "revision": "r1"}],
                                gpus, SETTINGS)[0]
    second = mr.normalize_models([{"name": "l", "backend": "tensorrtllm", "model_path": "/opt/models/l", "revision": "r1",
                                   "trtllm": {"dtype": "bfloat16"}}], gpus, SETTINGS)[0]
    assert mr.engine_fingerprint(first) != mr.engine_fingerprint(second)
    assert mr.engine_fingerprint(first)["revision"] == "r1"
