# SPDX-License-Identifier: Apache-2.0
"""TensorRT-LLM 1.1.0 contract of the model_repository role: the LLM-API layout's inputs
and decoupled policy, each model family's convert_checkpoint.py flags (rendered build
script run against the stand-in converters), orchestrator mode for tensor parallelism > 1,
and kv_cache_free_gpu_mem_fraction as TRT-LLM means it (a share of the free memory)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr

ROOT = Path(__file__).resolve().parents[4]
TEMPLATES = ROOT / "roles" / "model_repository" / "templates"
CONTAINER = ROOT / "tests" / "fixtures" / "trtllm_container" / "image"
SETTINGS = {"models_dir": "/opt/models", "server_models_dir": "/models", "engines_dir": "/opt/triton/engines",
            "server_engines_dir": "/engines", "gpu_memory_budget": 0.9, "vllm_report_custom_metrics": True,
            "vllm_removed_engine_args": []}
H100 = [{"index": i, "memory_total_mib": 81559, "name": "NVIDIA H100 80GB HBM3"} for i in range(4)]


def plan(models, budget=0.9):
    return mr.build_plan(models, {"gpus": H100, "count": 4}, None, dict(SETTINGS, gpu_memory_budget=budget),
                         str(TEMPLATES), "/opt/triton/trtllm_all_models/x")


def parse(text):
    config = model_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    return config


def llmapi(**trt):
    return {"name": "chat", "backend": "tensorrtllm", "model_path": "/opt/models/chat", "gpus": [0],
            "trtllm": dict({"layout": "llmapi"}, **trt)}


# --- LLM-API layout ---------------------------------------------------------------

@pytest.mark.parametrize("decoupled", [True, False])
def test_llmapi_decoupled_agrees_between_config_and_model_yaml(decoupled):
    result = plan([llmapi(decoupled=decoupled)])
    config = parse(result["files"]["chat/config.pbtxt"])
    triton_config = yaml.safe_load(result["files"]["chat/1/model.yaml"])["triton_config"]
    assert config.model_transaction_policy.decoupled is decoupled
    assert triton_config == {"decoupled": decoupled, "max_batch_size": 0}


def test_llmapi_inputs_are_named_and_typed_as_upstream():
    config = parse(plan([llmapi()])["files"]["chat/config.pbtxt"])
    inputs = dict((i.name, model_config_pb2.DataType.Name(i.data_type)) for i in config.input)
    assert set(inputs) <= set(mr.LLMAPI_INPUTS)
    assert all(inputs[name] == mr.LLMAPI_INPUTS[name] for name in inputs)
    for name in ("sampling_param_exclude_input_from_output", "sampling_param_seed", "sampling_param_stop",
                 "sampling_param_max_tokens", "return_finish_reason", "streaming"):
        assert name in inputs
    assert inputs["sampling_param_seed"] == "TYPE_UINT64"
    assert "exclude_input_from_output" not in inputs


def _validate_with(files_edit):
    models = mr.normalize_models([llmapi()], mr.gpu_table({"gpus": H100, "count": 4}, None), SETTINGS)
    mr.plan_gpu_memory(models, mr.gpu_table({"gpus": H100, "count": 4}, None), 0.9)
    files = mr.render(models, str(TEMPLATES))
    files_edit(files)
    return lambda: mr.validate(models, files)


def test_validation_refuses_an_input_upstream_does_not_read():
    def old_name(files):
        files["chat/config.pbtxt"] = files["chat/config.pbtxt"].replace(
            '"sampling_param_exclude_input_from_output"', '"exclude_input_from_output"')
    with pytest.raises(mr.ModelRepositoryError, match="input exclude_input_from_output is not read by the LLM-API"):
        _validate_with(old_name)()


def test_validation_refuses_a_seed_of_another_type():
    def int32_seed(files):
        text = files["chat/config.pbtxt"]
        at = text.index('"sampling_param_seed"')
        files["chat/config.pbtxt"] = text[:at] + text[at:].replace("TYPE_UINT64", "TYPE_INT32", 1)
    with pytest.raises(mr.ModelRepositoryError, match="sampling_param_seed is TYPE_INT32, upstream declares TYPE_UINT64"):
        _validate_with(int32_seed)()


def test_validation_refuses_model_yaml_disagreeing_on_decoupled():
    def upstream_yaml(files):  # what a copy of upstream's folder over ours leaves
        files["chat/1/model.yaml"] = "model: TinyLlama/TinyLlama-1.1B-Chat-v1.0\ntriton_config:\n" \
                                     "  max_batch_size: 0\n  decoupled: False\n"
    with pytest.raises(mr.ModelRepositoryError, match="trying to change decoupled property"):
        _validate_with(upstream_yaml)()


def test_llmapi_args_cannot_override_triton_config():
    with pytest.raises(mr.ModelRepositoryError,
                       match=r"triton_models\[0\]\.trtllm\.llmapi_args\.triton_config: is rendered from"):
        plan([llmapi(llmapi_args={"triton_config": {"decoupled": False, "max_batch_size": 0}})])


# --- engine build per model family -------------------------------------------------

def test_unknown_family_is_refused_in_preflight():
    model = {"name": "phi", "backend": "tensorrtllm", "model_path": "/opt/models/phi", "gpus": [0],
             "trtllm": {"build": True, "model_family": "phi3"}}
    with pytest.raises(mr.ModelRepositoryError,
                       match=r"triton_models\[0\]\.trtllm\.model_family: no convert_checkpoint.py flags "
                             r"known for 'phi3' \(known: gemma, llama, mistral, qwen\)"):
        plan([model])


def render_build_script(engine, examples_dir):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             trim_blocks=False)
    env.filters["quote"] = lambda value: shlex.quote(str(value))
    return env.get_template("trtllm_build.sh.j2").render(
        engine=engine, ansible_managed="test", model_repository_trtllm_image="stand-in",
        model_repository_trtllm_examples_dir=str(examples_dir),
        model_repository_trtllm_quantize_script="/nonexistent/quantize.py",
        _model_repository_trtllm_quantization=yaml.safe_load(
            (ROOT / "roles" / "model_repository" / "vars" / "main.yml").read_text())["_model_repository_trtllm_quantization"])


def converter_command(script):
    """The convert_checkpoint.py command of a rendered build script (continuation lines joined)."""
    text = script.replace("\\\n", " ")
    return next(line for line in text.splitlines() if "convert_checkpoint.py" in line)


@pytest.mark.parametrize("family,directory,tp_flag", [("llama", "llama", "--tp_size 2"),
                                                      ("mistral", "llama", "--tp_size 2"),
                                                      ("qwen", "qwen", "--tp_size 2"),
                                                      ("gemma", "gemma", "--world-size 2")])
@pytest.mark.parametrize("quantization", [None, "int8_weight_only"])
def test_each_family_converter_accepts_the_rendered_flags(tmp_path, family, directory, tp_flag, quantization):
    source = tmp_path / "models" / family
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    engine = plan([{"name": family, "backend": "tensorrtllm", "model_path": str(source), "gpus": [0, 1],
                    "trtllm": {"build": True, "model_family": family, "quantization": quantization,
                               "engine_dir": str(tmp_path / "engines" / family)}}])["engines"][0]
    command = converter_command(render_build_script(engine, CONTAINER / "app" / "examples" / "models" / "core"))
    assert "/%s/convert_checkpoint.py" % directory in command and tp_flag in command
    if family == "gemma":
        assert "--tp_size" not in command and "--ckpt-type hf" in command and "--model-dir" in command
    else:
        assert "--world-size" not in command and "--ckpt-type" not in command
    work = tmp_path / "engines" / ("%s.build" % family)
    argv = [sys.executable] + shlex.split(command.replace('${work}', str(work)))[1:]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    checkpoint = yaml.safe_load((work / "checkpoint" / "config.json").read_text())
    assert checkpoint["mapping"]["tp_size"] == 2 and sorted(os.listdir(work / "checkpoint"))[-1] == "rank1.safetensors"
    assert (checkpoint["quantization"]["quant_algo"] == "W8A16") is (quantization == "int8_weight_only")


@pytest.mark.parametrize("family,flag,refused", [("gemma", ["--tp_size", "2"], "unrecognized arguments: --tp_size 2"),
                                                 ("llama", ["--world-size", "2"], "unrecognized arguments: --world-size"),
                                                 ("qwen", ["--ckpt-type", "hf"], "unrecognized arguments: --ckpt-type")])
def test_converter_stand_ins_refuse_another_family_flags(tmp_path, family, flag, refused):
    (tmp_path / "config.json").write_text("{}")
    script = CONTAINER / "app" / "examples" / "models" / "core" / family / "convert_checkpoint.py"
    if family == "gemma":
        base = ["--ckpt-type", "hf", "--model-dir", str(tmp_path), "--output-model-dir", str(tmp_path / "out")]
    else:
        base = ["--model_dir", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, str(script)] + base + flag, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and refused in done.stderr


def test_gemma_stand_in_needs_ckpt_type(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    script = CONTAINER / "app" / "examples" / "models" / "core" / "gemma" / "convert_checkpoint.py"
    done = subprocess.run([sys.executable, str(script), "--model-dir", str(tmp_path), "--output-model-dir",
                           str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "no --ckpt-type" in done.stderr


# --- tensor parallelism > 1: orchestrator mode ---------------------------------------

def test_tp2_in_flight_batching_model_asks_for_orchestrator_mode():
    models = [{"name": "big", "backend": "tensorrtllm", "model_path": "/opt/models/big", "gpus": [0, 1]},
              {"name": "small", "backend": "tensorrtllm", "model_path": "/opt/models/s", "gpus": [2],
               "trtllm": {"layout": "llmapi"}}]
    assert plan(models)["trtllm_orchestrator"] == ["big"]
    assert plan([dict(models[0], gpus=[0])])["trtllm_orchestrator"] == []


# --- kv_cache_free_gpu_mem_fraction: a share of the FREE memory ----------------------

def test_kv_cache_fraction_numbers():
    # A 81559 MiB GPU, share 0.45 (36701 MiB), weights + activations 16000 MiB:
    # KV cache may take 36701 - 16000 = 20701 MiB of the 65559 MiB free after the load.
    fraction = mr.kv_cache_fraction(0.45, 81559, 16000)
    assert fraction == pytest.approx((0.45 * 81559 - 16000) / (81559 - 16000), abs=1e-4)
    assert fraction == pytest.approx(0.3158, abs=1e-4)
    assert 16000 + fraction * (81559 - 16000) == pytest.approx(0.45 * 81559, abs=10)
    # The whole-GPU share written as the fraction (the old plan) overshoots by weights * (1 - share):
    assert 16000 + 0.45 * (81559 - 16000) - 0.45 * 81559 == pytest.approx(16000 * 0.55)
    assert mr.kv_cache_fraction(0.45, 81559, None) == 0.45  # weights unknown: the share itself
    with pytest.raises(mr.ModelRepositoryError, match="no KV cache in its share 0.45"):
        mr.kv_cache_fraction(0.45, 81559, 40000)


def test_plan_writes_the_free_memory_fraction_into_both_layouts():
    result = plan([{"name": "a", "backend": "tensorrtllm", "model_path": "/opt/models/a", "gpus": [0],
                    "gpu_memory_utilization": 0.45, "trtllm": {"layout": "llmapi"}},
                   {"name": "b", "backend": "tensorrtllm", "model_path": "/opt/models/b", "gpus": [0],
                    "trtllm": {"weights_mib": 16000}},
                   {"name": "c", "backend": "tensorrtllm", "model_path": "/opt/models/c", "gpus": [1],
                    "memory_mib": 40000, "trtllm": {"layout": "llmapi", "weights_mib": 8000}}])
    assert result["gpu_plan"][0]["models"] == {"a": 0.45, "b": 0.45}
    config = parse(result["files"]["b_tensorrt_llm/config.pbtxt"])
    assert float(config.parameters["kv_cache_free_gpu_mem_fraction"].string_value) == pytest.approx(0.3158, abs=1e-4)
    share_c = round(40000 / 81559, 4)
    model_yaml = yaml.safe_load(result["files"]["c/1/model.yaml"])
    assert model_yaml["kv_cache_config"]["free_gpu_memory_fraction"] == pytest.approx(
        (share_c * 81559 - 8000) / (81559 - 8000), abs=1e-4)


def test_weights_larger_than_the_share_name_the_variable():
    with pytest.raises(mr.ModelRepositoryError, match=r"triton_models\[0\]\.trtllm\.weights_mib"):
        plan([{"name": "b", "backend": "tensorrtllm", "model_path": "/opt/models/b", "gpus": [0],
               "gpu_memory_utilization": 0.2, "trtllm": {"weights_mib": 20000}}])


@pytest.mark.parametrize("facts,expected", [({"model_repository_trtllm_orchestrator_models": ["big"]}, True),
                                            ({"model_repository_trtllm_orchestrator_models": []}, False),
                                            ({}, False)])
def test_server_environment_gets_orchestrator_mode_from_the_published_fact(facts, expected):
    """triton_server's default reads model_repository's fact; triton.env.j2 then sets TRTLLM_ORCHESTRATOR=1."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template
    role = ROOT / "roles" / "triton_server"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    variables = dict(facts, ansible_managed="test", triton_server_hf_offline=True, triton_server_repository_api_key="k",
                     triton_server_openai_enabled=False,
                     _triton_server_unit="triton.service",
                     triton_server_trtllm_orchestrator=trust_as_template(defaults["triton_server_trtllm_orchestrator"]))
    templar = Templar(loader=DataLoader(), variables=variables)
    text = templar.template(trust_as_template((role / "templates" / "triton.env.j2").read_text()))
    assert ("TRTLLM_ORCHESTRATOR=1" in text.splitlines()) is expected
