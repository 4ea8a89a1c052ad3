# SPDX-License-Identifier: Apache-2.0
"""The TensorRT-LLM 1.1.0 in-flight batching layout the renderer writes, and the guard that
refuses a rendered repository the upstream code would refuse (integration twin:
tests/integration/test_trtllm_inflight_batcher.py, on the real tritonserver)."""

from pathlib import Path

import pytest

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr

TEMPLATES = str(Path(__file__).resolve().parents[4] / "roles" / "model_repository" / "templates")
SETTINGS = {"models_dir": "/opt/models", "server_models_dir": "/models", "engines_dir": "/opt/triton/engines",
            "server_engines_dir": "/engines", "gpu_memory_budget": 0.9}
GPUS = [{"index": 0, "memory_total_mib": 81559}]
LLAMA = {"name": "llama", "backend": "tensorrtllm", "model_path": "/opt/models/llama", "trtllm": {"max_batch_size": 4}}


def rendered(models=(LLAMA,)):
    gpus = mr.gpu_table({}, GPUS)
    normalized = mr.normalize_models(list(models), gpus, SETTINGS)
    mr.plan_gpu_memory(normalized, gpus, 0.9)
    return normalized, mr.render(normalized, TEMPLATES)


def test_parts_keep_the_names_the_upstream_bls_calls():
    models, files = rendered()
    assert models[0]["parts"] == {"preprocessing": "preprocessing", "postprocessing": "postprocessing",
                                  "tensorrt_llm": "llama_tensorrt_llm", "tensorrt_llm_bls": "llama_tensorrt_llm_bls"}
    configs = mr.validate(models, files)
    assert set(configs) == {"llama", "preprocessing", "postprocessing", "llama_tensorrt_llm", "llama_tensorrt_llm_bls"}
    bls = mr.parse_config(files["llama_tensorrt_llm_bls/config.pbtxt"], "bls")
    assert sorted(bls.parameters) == ["accumulate_tokens", "multimodal_encoders_name", "tensorrt_llm_draft_model_name",
                                      "tensorrt_llm_model_name"]
    assert bls.parameters["tensorrt_llm_model_name"].string_value == "llama_tensorrt_llm"


def test_ensemble_maps_log_probs_straight_from_tensorrt_llm_and_uses_seed():
    _plan, files = rendered()
    ensemble = mr.parse_config(files["llama/config.pbtxt"], "ensemble")
    steps = dict((step.model_name, step) for step in ensemble.ensemble_scheduling.step)
    assert dict(steps["postprocessing"].input_map) == {"TOKENS_BATCH": "_TOKENS_BATCH",
                                                       "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"}
    llm_out = dict(steps["llama_tensorrt_llm"].output_map)
    assert {llm_out[k] for k in ("cum_log_probs", "output_log_probs", "batch_index")} == \
        {"cum_log_probs", "output_log_probs", "batch_index"}
    assert dict(steps["llama_tensorrt_llm"].input_map)["seed"] == "seed"
    assert "random_seed" not in "".join(files.values())


def test_a_second_inflight_batching_model_is_refused_by_name():
    second = dict(LLAMA, name="mistral", model_path="/opt/models/mistral")
    with pytest.raises(mr.ModelRepositoryError) as error:
        rendered([LLAMA, dict(LLAMA, name="chat", trtllm={"layout": "llmapi"}), second])
    assert error.value.variable == "triton_models[2]"
    assert "'mistral'" in str(error.value) and "triton_models[0]" in str(error.value)
    assert "preprocessing and postprocessing" in str(error.value)


def test_a_model_named_like_a_fixed_part_is_refused():
    with pytest.raises(mr.ModelRepositoryError) as error:
        rendered([LLAMA, dict(LLAMA, name="postprocessing", trtllm={"layout": "llmapi"})])
    assert error.value.variable == "triton_models[1].name"


@pytest.mark.parametrize("path, old, message", [
    ("preprocessing/config.pbtxt", 'key: "multimodal_model_path"', "lacks parameter multimodal_model_path"),
    ("preprocessing/config.pbtxt", 'name: "EMBEDDING_BIAS_WEIGHTS"', "EMBEDDING_BIAS_WEIGHTS"),
    ("preprocessing/config.pbtxt", 'name: "IMAGE_SIZES"', "IMAGE_SIZES"),
    ("llama_tensorrt_llm/config.pbtxt", 'key: "xgrammar_tokenizer_info_path"', "xgrammar_tokenizer_info_path"),
    ("llama_tensorrt_llm/config.pbtxt", 'key: "guided_decoding_backend"', "guided_decoding_backend"),
    ("llama_tensorrt_llm/config.pbtxt", 'name: "sequence_index"', "sequence_index"),
    ("llama_tensorrt_llm/config.pbtxt", 'name: "return_generation_logits"', "return_generation_logits"),
    ("llama_tensorrt_llm/config.pbtxt", 'name: "seed"', "seed"),
    ("postprocessing/config.pbtxt", 'name: "SEQUENCE_LENGTH"', "SEQUENCE_LENGTH"),
])
def test_validation_refuses_what_trtllm_1_1_0_refuses(path, old, message):
    models, files = rendered()
    assert files[path].count(old) == 1
    files[path] = files[path].replace(old, old.replace('"', '"renamed_', 1))
    with pytest.raises(mr.ModelRepositoryError) as error:
        mr.validate(models, files)
    assert error.value.variable == "triton_models[0]" and message in str(error.value)


def test_validation_refuses_an_extra_postprocessing_input():
    models, files = rendered()
    extra = '  {\n    name: "CUM_LOG_PROBS"\n    data_type: TYPE_FP32\n    dims: [ -1 ]\n    optional: true\n  },\n'
    files["postprocessing/config.pbtxt"] = files["postprocessing/config.pbtxt"].replace("input [\n", "input [\n" + extra)
    with pytest.raises(mr.ModelRepositoryError, match="unknown input"):
        mr.validate(models, files)
