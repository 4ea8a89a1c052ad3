# SPDX-License-Identifier: Apache-2.0
"""State the model_repository role leaves after converge + side_effect."""

import json
import re

ROOT = "/opt/triton/repository"


def _generation(host, link):
    target = host.file(f"{ROOT}/{link}")
    assert target.is_symlink
    assert target.linked_to.startswith(f"{ROOT}/generations/")
    return target.linked_to


def test_current_and_previous_are_relative_symlinks_to_generations(host):
    current = _generation(host, "current")
    previous = _generation(host, "previous")
    assert current != previous
    assert host.check_output(f"readlink {ROOT}/current").startswith("generations/")
    assert host.file(f"{ROOT}/generations").mode == 0o755


def test_gemma_local_as_in_the_brief_with_the_second_converge_change(host):
    model_json = json.loads(host.file(f"{ROOT}/current/gemma_local/1/model.json").content_string)
    assert model_json == {"model": "/opt/models/gemma_local", "tensor_parallel_size": 1,
                          "gpu_memory_utilization": 0.9, "max_model_len": 8192}
    previous = json.loads(host.file(f"{ROOT}/previous/gemma_local/1/model.json").content_string)
    assert "max_model_len" not in previous
    config = host.file(f"{ROOT}/current/gemma_local/config.pbtxt")
    assert config.mode == 0o644 and config.user == "root"
    assert 'backend: "vllm"' in config.content_string and "max_batch_size: 0" in config.content_string
    assert "decoupled: true" in config.content_string
    # gpus: [0] on a two-GPU host: pinned to GPU 0 (KIND_MODEL would start it on cuda:0 of all GPUs)
    assert re.search(r"kind: KIND_GPU\s+gpus: \[ ?0 ?\]", config.content_string), config.content_string


def test_trtllm_ensemble_with_python_models_from_the_image(host):
    # preprocessing/postprocessing keep upstream's names: TRT-LLM's tensorrt_llm_bls calls them so.
    for part in ("llama", "preprocessing", "llama_tensorrt_llm", "postprocessing", "llama_tensorrt_llm_bls"):
        assert host.file(f"{ROOT}/current/{part}/config.pbtxt").is_file
    for part, folder in (("preprocessing", "preprocessing"), ("postprocessing", "postprocessing"),
                         ("tensorrt_llm_bls", "llama_tensorrt_llm_bls")):
        code = host.file(f"{ROOT}/current/{folder}/1/model.py")
        assert code.mode == 0o644 and f"all_models/inflight_batcher_llm/{part}/1/model.py" in code.content_string
    llm = host.file(f"{ROOT}/current/llama_tensorrt_llm/config.pbtxt").content_string
    assert 'string_value: "/opt/triton/engines/llama"' in llm and "max_batch_size: 4" in llm
    copied = "/opt/triton/trtllm_all_models/nvcr.io_nvidia_tritonserver_25.12-trtllm-python-py3"
    assert host.file(f"{copied}/inflight_batcher_llm/preprocessing/1/model.py").is_file


def test_llmapi_model_keeps_our_model_yaml_over_the_copied_folder(host):
    config = host.file(f"{ROOT}/current/qwen_api/config.pbtxt").content_string
    assert 'backend: "python"' in config
    code = host.file(f"{ROOT}/current/qwen_api/1/model.py")
    assert "all_models/llmapi/tensorrt_llm/1/model.py" in code.content_string
    args = json.loads(host.file(f"{ROOT}/current/qwen_api/1/model.yaml").content_string.split("\n", 1)[1])
    assert args["model"] == "/opt/models/qwen_api" and args["triton_config"]["decoupled"] is True
    # both TensorRT-LLM models on GPU 1 share what is left of it
    assert 0 < args["kv_cache_config"]["free_gpu_memory_fraction"] < 0.9


def test_nothing_from_the_failed_converge(host):
    assert not host.file(f"{ROOT}/current/broken").exists
    assert len(host.file(f"{ROOT}/generations").listdir()) == 2


def test_trtllm_engine_built_once_with_its_fingerprint(host):
    engine = "/opt/triton/engines/llama"
    assert host.file(f"{engine}/rank0.engine").is_file
    config = json.loads(host.file(f"{engine}/config.json").content_string)
    assert config["build_config"]["max_batch_size"] == 4 and config["build_config"]["max_seq_len"] == 2048
    assert config["quantization"]["quant_algo"] == "W8A16"
    fingerprint = json.loads(host.file(f"{engine}/onprem-triton-engine.json").content_string)
    assert fingerprint["revision"] == "0123abcd" and fingerprint["settings"]["quantization"] == "int8_weight_only"
    assert fingerprint["image"] == "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3"
    # converge built it; idempotence and the second converge found the fingerprint and skipped
    builds = host.file("/var/log/trtllm-standin-builds.log").content_string.splitlines()
    assert len(builds) == 1
    assert not host.file(f"{engine}.build").exists


def test_trtllm_build_script_as_run_in_the_image(host):
    script = host.file("/opt/triton/engines/llama.build.sh")
    assert script.mode == 0o644
    text = script.content_string
    assert "/app/examples/models/core/llama/convert_checkpoint.py" in text
    assert "--model_dir /opt/models/llama" in text and "--tp_size 1" in text
    assert "--use_weight_only --weight_only_precision int8" in text
    assert "--max_batch_size 4 --max_input_len 1024" in text and "--max_seq_len 2048" in text
