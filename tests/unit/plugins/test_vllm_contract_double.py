# SPDX-License-Identifier: Apache-2.0
"""The stand-in vLLM backend (tests/fixtures/triton/backends/vllm/model.py) as a contract
double: fed the broken forms, it fails the way vLLM 0.11.1 / vllm_backend r25.12 do, and it
records the device a KIND_GPU instance is given. initialize() is called directly with the
args Triton would pass: the real tritonserver here has no GPU and refuses KIND_GPU itself
("has kind KIND_GPU but no GPUs are available"), before any backend code runs."""

import importlib.util
import json
import os
import sys
import sysconfig
from pathlib import Path

import pytest

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr

ROOT = Path(__file__).resolve().parents[3]
DOUBLE = ROOT / "tests" / "fixtures" / "triton" / "backends" / "vllm"
ROLE_TABLE = ROOT / "roles" / "model_repository" / "files" / "vllm_contract"
WHEEL = Path("/tmp/vllm-wheel/vllm-0.11.1-cp38-abi3-manylinux1_x86_64.whl")


class _Logger:
    lines = []

    @classmethod
    def log_info(cls, message):
        cls.lines.append(message)

    log_warn = log_error = log_info


@pytest.fixture(scope="module")
def backend():
    """model.py with the wheel's real triton_python_backend_utils (its Logger comes from the
    C++ stub at run time, so a recording one stands in)."""
    utils_dir = Path(sysconfig.get_paths()["purelib"]) / "pytriton" / "tritonserver" / "backends" / "python"
    sys.path.insert(0, str(utils_dir))
    try:
        import triton_python_backend_utils as pb_utils  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.remove(str(utils_dir))
    pb_utils.Logger = _Logger
    spec = importlib.util.spec_from_file_location("vllm_standin_model", DOUBLE / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = {"name": "m", "backend": "vllm", "max_batch_size": 0, "model_transaction_policy": {"decoupled": True},
          "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]}],
          "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}], "parameters": {}}


def triton_args(tmp_path, engine, kind="MODEL", device_id=0, parameters=None):
    """What Triton's python backend hands initialize() (model_instance_kind GPU/MODEL/CPU)."""
    (tmp_path / "1").mkdir(exist_ok=True)
    (tmp_path / "1" / "model.json").write_text(json.dumps(engine), encoding="utf-8")
    config = dict(CONFIG, parameters=dict((k, {"string_value": v}) for k, v in (parameters or {}).items()))
    return {"model_config": json.dumps(config), "model_instance_kind": kind, "model_instance_name": "m_0_0",
            "model_instance_device_id": str(device_id), "model_repository": str(tmp_path), "model_version": "1",
            "model_name": "m"}


@pytest.fixture(autouse=True)
def clean_cuda_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield


def load(backend, args):
    model = backend.TritonPythonModel()
    model.initialize(args)
    return model


# --- the broken forms, failing as upstream -------------------------------------------------

def test_unknown_engine_arg_is_vllms_typeerror(backend, tmp_path):
    with pytest.raises(TypeError, match=r"AsyncEngineArgs\.__init__\(\) got an unexpected keyword argument "
                                        r"'disable_log_requests'"):
        load(backend, triton_args(tmp_path, {"model": "facebook/opt-125m", "disable_log_requests": True}))


def test_engine_args_of_0_11_1_are_accepted(backend, tmp_path):
    model = load(backend, triton_args(tmp_path, {"model": "facebook/opt-125m", "enable_log_requests": True,
                                                 "max_model_len": 2048, "kv_cache_memory_bytes": 1 << 30,
                                                 "async_scheduling": True}))
    assert model.engine_args.max_model_len == 2048


def test_unknown_quantization_is_refused_like_modelconfig(backend, tmp_path):
    with pytest.raises(ValueError, match=r"^Unknown quantization method: marlin\. Must be one of \['awq', "):
        load(backend, triton_args(tmp_path, {"model": "facebook/opt-125m", "quantization": "marlin"}))


@pytest.mark.parametrize("method", ["awq_marlin", "gptq_marlin", "modelopt_fp4", "mxfp4", "compressed-tensors"])
def test_quantization_methods_of_0_11_1_load(backend, tmp_path, method):
    assert load(backend, triton_args(tmp_path, {"model": "o/m", "quantization": method})).engine_args.quantization == method


def test_bad_lora_rank_is_refused_like_pydantic(backend, tmp_path):
    with pytest.raises(ValueError, match=r"LoRAConfig\nmax_lora_rank\n  Input should be 1, 8, 16, 32, 64, 128, 256, "
                                         r"320 or 512 \[type=literal_error, input_value=24"):
        load(backend, triton_args(tmp_path, {"model": "o/m", "enable_lora": "true", "max_lora_rank": 24}))
    # Without LoRA vLLM builds no LoRAConfig: the rank is not looked at.
    assert load(backend, triton_args(tmp_path, {"model": "o/m", "max_lora_rank": 24}))


@pytest.mark.parametrize("engine", [{"tensor_parallel_size": 2}, {"pipeline_parallel_size": 2},
                                    {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}])
def test_kind_gpu_with_several_gpus_is_refused(backend, tmp_path, engine):
    with pytest.raises(ValueError, match="^KIND_GPU is currently for single-GPU models, please specify KIND_MODEL "
                                         "in the model's config.pbtxt for multi-GPU models$"):
        load(backend, triton_args(tmp_path, dict(engine, model="o/m"), kind="GPU", device_id=1))


# --- the device rule ---------------------------------------------------------------------

def test_kind_gpu_sets_cuda_visible_devices_and_records_the_device(backend, tmp_path):
    record = tmp_path / "placement.jsonl"
    model = load(backend, triton_args(tmp_path, {"model": "o/m"}, kind="GPU", device_id=1,
                                      parameters={"FIXTURE_PLACEMENT_FILE": str(record)}))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert model.placement["devices"] == ["1"] and model.placement["kind"] == "GPU"
    assert json.loads(record.read_text(encoding="utf-8").splitlines()[-1])["device_id"] == 1
    assert any("explicitly setting GPU device=1 for m_1" in line for line in _Logger.lines)


def test_kind_model_starts_on_the_first_gpus_the_server_sees(backend, tmp_path):
    model = load(backend, triton_args(tmp_path, {"model": "o/m", "tensor_parallel_size": 2}, kind="MODEL"))
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert model.placement["devices"] == ["0", "1"]


def test_a_server_given_host_gpus_2_and_3_runs_the_engine_there(backend, tmp_path, monkeypatch):
    """docker --gpus device=2,3 sets NVIDIA_VISIBLE_DEVICES=2,3: the container's cuda:0 and cuda:1
    are host GPUs 2 and 3; a pinned instance on the container's GPU 1 is host GPU 3."""
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "2,3")
    model = load(backend, triton_args(tmp_path, {"model": "o/m", "tensor_parallel_size": 2}, kind="MODEL"))
    assert model.placement["devices"] == ["0", "1"] and model.placement["host_gpus"] == ["2", "3"]
    model = load(backend, triton_args(tmp_path, {"model": "o/m"}, kind="GPU", device_id=1))
    assert model.placement["host_gpus"] == ["3"]
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")
    model = load(backend, triton_args(tmp_path, {"model": "o/m"}, kind="GPU", device_id=1))
    assert model.placement["host_gpus"] is None and model.placement["devices"] == ["1"]


def test_the_role_renders_what_the_double_places_where_the_plan_says(backend, tmp_path):
    """A model assigned to GPU 1: the rendered config pins GPU 1, and the double, given the
    device Triton derives from that config, starts the engine on GPU 1 (not on GPU 0)."""
    gpus = [{"index": 0, "memory_total_mib": 81559}, {"index": 1, "memory_total_mib": 81559}]
    settings = {"models_dir": "/m", "server_models_dir": "/m", "engines_dir": "/e", "server_engines_dir": "/e",
                "gpu_memory_budget": 0.9, "vllm_contract": mr.load_vllm_contract(str(ROLE_TABLE), "25.12")}
    plan = mr.build_plan([{"name": "m", "backend": "vllm", "hf_repo_id": "o/m", "gpus": [1], "instance_count": 2,
                           "tensor_parallel_size": 1, "gpu_memory_utilization": 0.4}], {}, gpus, settings,
                         str(ROOT / "roles" / "model_repository" / "templates"), "/x")
    config = mr.parse_config(plan["files"]["m/config.pbtxt"], "m")
    group = config.instance_group[0]
    assert (group.kind, list(group.gpus), group.count) == (group.KIND_GPU, [1], 2)
    assert plan["gpu_plan"][1]["total_share"] == pytest.approx(0.8)  # two engines of 0.4 each
    engine = json.loads(plan["files"]["m/1/model.json"])
    for _instance in range(group.count):  # Triton: `count` instances on each listed GPU
        model = load(backend, triton_args(tmp_path, engine, kind="GPU", device_id=group.gpus[0]))
        assert model.placement["devices"] == ["1"]


def test_gpu_allocate_knob_off_starts_no_engine_process_and_never_imports_torch(backend, tmp_path):
    record = tmp_path / "placement.jsonl"
    model = load(backend, triton_args(tmp_path, {"model": "o/m"}, kind="GPU", device_id=1,
                                      parameters={"FIXTURE_PLACEMENT_FILE": str(record)}))
    assert model.engine_process is None and "engine" not in model.placement
    assert "torch" not in sys.modules
    assert json.loads(record.read_text(encoding="utf-8"))["pid"] == os.getpid()


def test_gpu_allocate_knob_without_torch_or_gpu_holds_nothing(backend, tmp_path):
    """FIXTURE_GPU_ALLOCATE on a machine without torch or a CUDA device (CI): the engine
    process starts with the device set above, holds nothing, says why, and the model loads;
    finalize() ends the engine process. On a GPU machine tests/device/gpu_placement.py makes it
    hold the planned share."""
    record = tmp_path / "placement.jsonl"
    model = load(backend, triton_args(tmp_path, {"model": "o/m", "gpu_memory_utilization": 0.3}, kind="GPU",
                                      device_id=1, parameters={"FIXTURE_PLACEMENT_FILE": str(record),
                                                               "FIXTURE_GPU_ALLOCATE": "true",
                                                               "FIXTURE_GPU_PYTHON": sys.executable}))
    engine = model.placement["engine"]
    assert engine["allocated_bytes"] == 0 and engine["devices"] == []
    assert engine["reason"].startswith(("torch is not importable", "torch sees no CUDA device"))
    assert engine["cuda_visible_devices"] == "1" and engine["share"] == 0.3
    assert engine["pid"] == model.engine_process.pid != os.getpid()
    lines = record.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["engine"] == engine  # one record, once the engine is up
    assert "torch" not in sys.modules
    model.finalize()
    assert model.engine_process.returncode == 0


# --- the data: derived from the wheel, the same for the double and the role ---------------

def test_the_double_and_the_role_table_list_the_same_vllm():
    double = json.loads((DOUBLE / "vllm_contract.json").read_text(encoding="utf-8"))
    role = json.loads((ROLE_TABLE / "25.12.json").read_text(encoding="utf-8"))
    assert role["triton_release"] == "25.12" and role["vllm_version"] == double["vllm_version"] == "0.11.1"
    for key in ("engine_args", "quantization_methods", "max_lora_ranks"):
        assert role[key] == double[key]
    assert "disable_log_requests" not in role["engine_args"] and "enable_log_requests" in role["engine_args"]
    assert "marlin" not in role["quantization_methods"]
    assert role["max_lora_ranks"] == [1, 8, 16, 32, 64, 128, 256, 320, 512]


@pytest.mark.skipif(not WHEEL.is_file(), reason="pip download vllm==0.11.1 --no-deps -d /tmp/vllm-wheel")
def test_the_tables_regenerate_from_the_wheel(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "triton"))
    try:
        import vllm_contract_from_wheel as generator  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    fresh = generator.read_wheel(str(WHEEL))
    double = json.loads((DOUBLE / "vllm_contract.json").read_text(encoding="utf-8"))
    for key in ("engine_args", "quantization_methods", "max_lora_ranks"):
        assert fresh[key] == double[key]


# --- the release under test picks the double's contract ---------------------------------------

def test_the_double_follows_the_release_under_test(tmp_path, monkeypatch):
    """FIXTURE_VLLM_CONTRACT=<role table of 26.07>: the double takes vLLM 0.24.0's arguments and
    refuses those 0.24.0 dropped (swap_space), as the 26.07 image would."""
    monkeypatch.setenv("FIXTURE_VLLM_CONTRACT", str(ROLE_TABLE / "26.07.json"))
    spec = importlib.util.spec_from_file_location("vllm_standin_model_2607", DOUBLE / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VLLM_CONTRACT["vllm_version"] == "0.24.0"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "config.json").write_text("{}", encoding="utf-8")
    load(module, triton_args(tmp_path, {"model": str(tmp_path / "weights"), "attention_backend": "FLASH_ATTN"}))
    with pytest.raises(TypeError, match="swap_space"):
        load(module, triton_args(tmp_path, {"model": str(tmp_path / "weights"), "swap_space": 4}))
