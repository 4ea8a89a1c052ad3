# SPDX-License-Identifier: Apache-2.0
"""vLLM placement, memory plan and engine_args as the renderer refuses them in preflight,
each naming the variable: the same rules the stand-in backend enforces at load
(tests/unit/plugins/test_vllm_contract_double.py)."""

import json
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr

ROLE = Path(__file__).resolve().parents[4] / "roles" / "model_repository"
CONTRACT = mr.load_vllm_contract(str(ROLE / "files" / "vllm_contract"), "25.12")
SETTINGS = {"models_dir": "/opt/models", "server_models_dir": "/models", "engines_dir": "/e",
            "server_engines_dir": "/e", "gpu_memory_budget": 0.9, "vllm_contract": CONTRACT}
KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU
KIND_MODEL = model_config_pb2.ModelInstanceGroup.KIND_MODEL


def gpus(count):
    return [{"index": i, "memory_total_mib": 81559} for i in range(count)]


def plan(models, host_gpus=4):
    return mr.build_plan(models, {}, gpus(host_gpus), SETTINGS, str(ROLE / "templates"), "/x")


def group(result, name):
    config = mr.parse_config(result["files"]["%s/config.pbtxt" % name], name)
    assert len(config.instance_group) == 1
    item = config.instance_group[0]
    return item.kind, list(item.gpus), item.count


def refused(models, host_gpus=4):
    with pytest.raises(mr.ModelRepositoryError) as error:
        plan(models, host_gpus)
    assert str(error.value).startswith(error.value.variable + ": ")
    return error.value


def vllm(**settings):
    return dict({"name": "m", "backend": "vllm", "hf_repo_id": "o/m"}, **settings)


# --- placement -----------------------------------------------------------------------------

def test_single_gpu_model_is_pinned_to_its_gpu():
    result = plan([vllm(gpus=[1], tensor_parallel_size=1, instance_count=2, gpu_memory_utilization=0.4)])
    assert group(result, "m") == (KIND_GPU, [1], 2)
    assert result["gpu_plan"][1]["models"] == {"m": 0.4} and result["gpu_plan"][0]["models"] == {}


def test_tensor_parallel_size_alone_takes_the_first_gpus():
    result = plan([vllm(tensor_parallel_size=1)])
    assert group(result, "m") == (KIND_GPU, [0], 1)
    assert [g["models"] for g in result["gpu_plan"]] == [{"m": 0.9}, {}, {}, {}]


def test_single_gpu_model_on_several_gpus_is_a_replica_per_gpu():
    result = plan([vllm(gpus=[2, 3], tensor_parallel_size=1, gpu_memory_utilization=0.5)])
    assert group(result, "m") == (KIND_GPU, [2, 3], 1)
    assert result["gpu_plan"][2]["models"] == result["gpu_plan"][3]["models"] == {"m": 0.5}


def test_a_server_with_one_gpu_needs_no_pin():
    # cuda:0 is that GPU: KIND_MODEL starts vLLM where the plan says (and loads on GPU-less fixtures).
    assert group(plan([vllm()], host_gpus=1), "m") == (KIND_MODEL, [], 1)


def test_multi_gpu_model_on_every_gpu_is_kind_model():
    result = plan([vllm(tensor_parallel_size=2, engine_args={"pipeline_parallel_size": 2})])
    assert group(result, "m") == (KIND_MODEL, [], 1)
    engine = json.loads(result["files"]["m/1/model.json"])
    assert (engine["tensor_parallel_size"], engine["pipeline_parallel_size"]) == (2, 2)


@pytest.mark.parametrize("model", [
    vllm(gpus=[2, 3], tensor_parallel_size=2),
    vllm(gpus=[2, 3], tensor_parallel_size=1, engine_args={"pipeline_parallel_size": 2}),
    vllm(tensor_parallel_size=2),  # no gpus: the first two of four
])
def test_multi_gpu_model_on_a_subset_is_refused(model):
    error = refused([model])
    assert error.variable == "triton_models[0].gpus"
    message = str(error)
    assert "first 2 GPUs the container sees ([0, 1])" in message
    assert "server instance of its own that sees only those GPUs (model_repository_instances" in message


def test_multi_gpu_model_must_use_all_its_gpus():
    error = refused([vllm(gpus=[0, 1, 2, 3], tensor_parallel_size=2)])
    assert error.variable == "triton_models[0].gpus" and "2 x 1 = 2" in str(error)


# --- memory plan: N instances take N shares --------------------------------------------------

def test_instance_count_overcommits_a_gpu():
    error = refused([vllm(gpus=[0], tensor_parallel_size=1, gpu_memory_utilization=0.3, instance_count=3,
                          name="triple"),
                     vllm(gpus=[0], tensor_parallel_size=1, gpu_memory_utilization=0.2, name="other", hf_repo_id="o/n")])
    assert error.variable == "triton_models"
    assert "GPU 0" in str(error) and "triple 0.30 x 3 instances" in str(error) and "1.10" in str(error)


def test_automatic_shares_count_instances():
    result = plan([vllm(gpus=[0], tensor_parallel_size=1, instance_count=2)])
    assert result["gpu_plan"][0]["models"] == {"m": 0.45}
    assert result["gpu_plan"][0]["instances"] == {"m": 2} and result["gpu_plan"][0]["total_share"] == 0.9
    assert json.loads(result["files"]["m/1/model.json"])["gpu_memory_utilization"] == 0.45


# --- engine_args against vLLM 0.11.1 (the 25.12 table) ----------------------------------------

@pytest.mark.parametrize("engine_args,variable", [
    ({"disable_log_requests": True}, "engine_args.disable_log_requests"),
    ({"max_model_len": 2048, "use_v2_block_manager": True}, "engine_args.use_v2_block_manager"),
    ({"quantization": "marlin"}, "engine_args.quantization"),
    ({"enable_lora": True}, "engine_args.enable_lora"),
    ({"max_lora_rank": 24}, "engine_args.max_lora_rank"),
    ({"pipeline_parallel_size": 0}, "engine_args.pipeline_parallel_size"),
])
def test_engine_args_outside_the_pinned_vllm_are_refused(engine_args, variable):
    assert refused([vllm(engine_args=engine_args)]).variable == "triton_models[0].%s" % variable


def test_the_message_says_why():
    message = str(refused([vllm(engine_args={"disable_log_requests": True})]))
    assert "vLLM 0.11.1 (Triton 25.12)" in message and "TypeError" in message and "arg_utils.py" in message
    assert "awq_marlin" in str(refused([vllm(engine_args={"quantization": "marlin"})]))


def test_lora_rank_outside_vllms_literal_is_refused():
    error = refused([vllm(lora={"adapters": {"sql": "/opt/models/sql"}, "max_lora_rank": 24})])
    assert error.variable == "triton_models[0].lora.max_lora_rank"
    assert "1, 8, 16, 32, 64, 128, 256, 320, 512" in str(error)


def test_accepted_engine_args_pass_through():
    args = {"enable_log_requests": True, "quantization": "awq_marlin", "kv_cache_memory_bytes": 1 << 30,
            "max_lora_rank": 320}
    result = plan([vllm(engine_args=args, lora={"adapters": {"sql": "/opt/models/sql"}, "max_lora_rank": 320})],
                  host_gpus=1)
    engine = json.loads(result["files"]["m/1/model.json"])
    assert engine["quantization"] == "awq_marlin" and engine["max_lora_rank"] == 320


def test_the_table_is_picked_by_release():
    with pytest.raises(mr.ModelRepositoryError) as error:
        mr.load_vllm_contract(str(ROLE / "files" / "vllm_contract"), "25.10")
    assert error.value.variable == "model_repository_triton_release" and "known: 25.12, 26.07, 26.08" in str(error.value)
