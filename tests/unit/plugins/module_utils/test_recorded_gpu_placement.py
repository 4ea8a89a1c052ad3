# SPDX-License-Identifier: Apache-2.0
"""What tests/device/gpu_placement.py observed on a real machine with two H200 GPUs
(tests/fixtures/nvidia/placement_h200x2/, see its README), checked again from the raw
nvidia-smi output: the collection's plan for the inventory is still the one that was run, each
model's engine ran on the GPU the plan gave it, the memory its processes held per GPU matches
the plan within the stated tolerance, and the overcommitted plan is refused with the same
message before anything started (no process on any GPU)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
RECORD = ROOT / "tests" / "fixtures" / "nvidia" / "placement_h200x2"


@pytest.fixture(scope="module")
def device():
    spec = importlib.util.spec_from_file_location("gpu_placement", ROOT / "tests" / "device" / "gpu_placement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recorded():
    return json.loads((RECORD / "results.json").read_text(encoding="utf-8"))


def _text(name):
    return (RECORD / name).read_text(encoding="utf-8")


def _gpu_info(device):
    return device.parse_gpus(_text("nvidia_smi_gpus.csv"))


def test_the_plan_that_ran_is_the_collections_plan_today(device, recorded):
    mr = device.model_repository()
    plan = device.plan_of(device.INVENTORY_YAML, _gpu_info(device), mr)
    # Recorded before the model catalog renamed the list (model_repository_models -> triton_models).
    assert recorded["plan"]["inventory_yaml"].replace("\nmodel_repository_models:\n", "\ntriton_models:\n") \
        == device.INVENTORY_YAML
    assert plan["gpu_plan"] == recorded["plan"]["gpu_plan"]
    assert [(g["index"], g["total_share"], g["models"]) for g in plan["gpu_plan"]] == [
        (0, 0.9, {"chat_gpu0": 0.5, "embed_gpu0": 0.4}), (1, 0.2782, {"chat_gpu1": 0.2782})]


def test_each_model_ran_on_its_planned_gpu_and_memory_matches_the_plan(device, recorded):
    placements = [json.loads(line) for line in _text("placements.jsonl").splitlines()]
    apps = device.parse_apps(_text("nvidia_smi_compute_apps.csv"))
    context = recorded["context_probe"]["context_mib"]
    assert 100 < context < 2000  # one bare CUDA context, measured on the machine
    analysis = device.analyse(recorded["plan"]["gpu_plan"], _gpu_info(device), apps, placements, context,
                              recorded["tritonserver_pid"])
    assert analysis["passed"], analysis["failures"]
    assert analysis == recorded["analysis"]
    for name, model in analysis["models"].items():
        assert model["on_planned_gpu"], name
        assert model["visible_gpus"] == model["torch_gpus"] == model["nvidia_smi_gpus"] == model["planned_gpus"]
    for gpu in analysis["gpus"]:
        assert abs(gpu["measured_models_mib"] - gpu["planned_mib"]) <= gpu["tolerance_mib"]
        assert gpu["tolerance_mib"] == round(0.05 * gpu["memory_total_mib"] + gpu["model_processes"] * context)
        assert not gpu["unknown_processes"]
        for numbers in gpu["models"].values():  # each engine: its share plus about one context
            assert 0 <= numbers["measured_mib"] - numbers["planned_mib"] <= numbers["processes"] * context


def test_the_overcommitted_plan_was_refused_before_anything_started(device, recorded):
    mr = device.model_repository()
    with pytest.raises(mr.ModelRepositoryError) as error:
        device.plan_of(device.OVERCOMMIT_YAML, _gpu_info(device), mr)
    entry = recorded["overcommit"]
    # Recorded on the H200 before the model catalog: the variable was then model_repository_models.
    assert entry["refused"] and str(error.value) == entry["message"].replace("model_repository_models:", "triton_models:", 1)
    assert "chat_gpu0 0.60 (86262 MiB), embed_gpu0 0.45 (64696 MiB) add up to 1.05" in entry["message"]
    assert entry["processes_before"] == [] and not entry["repository_written"]
    assert device.parse_apps(_text("nvidia_smi_compute_apps_overcommit.csv")) == []


def test_no_process_was_left_on_any_gpu_after_the_server_stopped(device, recorded):
    assert device.parse_apps(_text("nvidia_smi_compute_apps_after.csv")) == []
    assert recorded["processes_after_stop"] == []
