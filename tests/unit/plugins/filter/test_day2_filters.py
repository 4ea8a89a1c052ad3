"""Unit tests of the day-2 filters: triton_prompt_models and triton_fleet_status_table."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.triton.plugins.filter.triton_fleet_status_table import triton_fleet_status_table
from ansible_collections.onprem.triton.plugins.filter.triton_prompt_models import triton_prompt_models


def _model(name, ready=True, inputs=("text_input",), steps=(), state="READY", reason=""):
    config = {"name": name, "input": [{"name": i} for i in inputs]}
    if steps:
        config["ensemble_scheduling"] = {"step": [{"model_name": s} for s in steps]}
    return {"name": name, "ready": ready, "state": state, "reason": reason, "config": config, "failures": []}


TRTLLM = [_model("llama", steps=("llama_preprocessing", "llama_tensorrt_llm", "llama_postprocessing")),
          _model("llama_preprocessing", inputs=("QUERY",)),
          _model("llama_tensorrt_llm", inputs=("input_ids",)),
          _model("llama_postprocessing", inputs=("TOKENS_BATCH",)),
          _model("llama_tensorrt_llm_bls")]


def test_prompt_models_are_the_ensemble_and_bls_not_the_steps():
    assert triton_prompt_models(TRTLLM) == ["llama", "llama_tensorrt_llm_bls"]


def test_a_model_that_is_not_ready_or_has_no_config_takes_no_prompt():
    models = [_model("vllm_a"), _model("vllm_b", ready=False, state="UNAVAILABLE"), {"name": "c", "ready": True, "config": None}]
    assert triton_prompt_models(models) == ["vllm_a"]


def test_prompt_models_refuses_what_is_not_a_model_list():
    with pytest.raises(AnsibleFilterError):
        triton_prompt_models("llama")


def _status(host, models, generations, **extra):
    status = {"host": host, "unit_state": "active", "gpus": ["NVIDIA H100 80GB HBM3"] * 2, "driver": "580.159.04",
              "generation": "gen-0002", "server": "ready", "models": models, "generations": generations,
              "weights": [{"repo_id": "onprem-test/tiny-llm", "revision": "v1.0", "commit_sha": "0123456789" * 4}]}
    status.update(extra)
    return status


def test_the_table_has_one_line_per_model_with_ttft_and_why():
    ok = _status("b-host", [_model("tiny_llm")], [dict(_model("tiny_llm"), generation={"ttft_ms": 12.345})])
    broken = _status("a-host", [_model("tiny_llm", ready=False, state="UNAVAILABLE", reason="CUDA out of memory")], [])
    table = triton_fleet_status_table([ok, broken])
    header, rule, first, second, summary = table
    assert header.split()[:2] == ["HOST", "UNIT"] and set(rule) <= {"-", " "}
    assert first.startswith("a-host") and "UNAVAILABLE" in first and "CUDA out of memory" in first
    assert second.startswith("b-host") and "READY" in second and "12.3" in second
    assert "2x NVIDIA H100 80GB HBM3 / 580.159.04" in second
    assert "onprem-test/tiny-llm@v1.0 (0123456)" in second
    assert summary == "1 of 2 host(s) serving every model"
    # Columns line up: every model name starts at the same offset.
    assert first.index("tiny_llm") == second.index("tiny_llm")


def test_a_host_whose_server_is_down_gets_one_line_saying_so():
    down = _status("c-host", [], [], unit_state="failed", server="connection refused on 127.0.0.1:8000", gpus=[])
    line = triton_fleet_status_table([down])[2]
    assert "failed" in line and "no GPU" in line and "DOWN" in line and "connection refused" in line


def test_a_failed_generation_is_shown_as_the_reason():
    model = _model("tiny_llm")
    generated = dict(model, failures=["answer did not match 'sea'"], generation={"ttft_ms": 5.0})
    line = triton_fleet_status_table([_status("d-host", [model], [generated])])[2]
    assert "answer did not match 'sea'" in line
    assert triton_fleet_status_table([_status("d-host", [model], [generated])])[-1].startswith("0 of 1")


def test_the_gpus_a_model_runs_on_stand_next_to_the_plan_and_a_mismatch_is_flagged():
    models = [_model("chat"), _model("big"), _model("free")]
    placement = {"chat": {"planned": [1], "actual": [0]}, "big": {"planned": [2, 3], "actual": [2, 3]},
                 "free": {"planned": None, "actual": [0]}}
    table = triton_fleet_status_table([_status("e-host", models, [], placement=placement)])
    chat, big, free = [line for line in table if line.startswith("e-host")]
    assert "1 / 0" in chat and "GPU MISMATCH: planned 1, runs on 0" in chat
    assert "2,3 / 2,3" in big and "MISMATCH" not in big
    assert "any / 0" in free and "MISMATCH" not in free
    assert table[-1].startswith("0 of 1")
    # a driver that could not say: the plan, and a question mark
    unknown = {"chat": {"planned": [1], "actual": None}}
    line = triton_fleet_status_table([_status("f-host", [_model("chat")], [], placement=unknown)])[2]
    assert "1 / ?" in line and "MISMATCH" not in line


def test_each_server_instance_of_a_host_has_its_lines_and_the_host_serves_when_all_do():
    main = _status("g-host", [_model("small")], [], instance="main", main=True)
    tp23 = _status("g-host", [_model("big")], [], instance="tp23", main=False, unit="triton-tp23.service")
    other = _status("h-host", [_model("small")], [], instance="main", main=True)
    table = triton_fleet_status_table([tp23, other, main])
    rows = table[2:-1]
    assert [row.split()[0] for row in rows] == ["g-host", "g-host/tp23", "h-host"]
    assert "small" in rows[0] and "big" in rows[1]
    assert table[-1] == "2 of 2 host(s) serving every model"
    down = dict(tp23, models=[], unit_state="failed", server="connection refused")
    table = triton_fleet_status_table([main, down, other])
    assert "g-host/tp23" in table[3] and "DOWN" in table[3]
    assert table[-1] == "1 of 2 host(s) serving every model"


def test_the_table_refuses_what_is_not_a_status_list():
    with pytest.raises(AnsibleFilterError):
        triton_fleet_status_table({"host": "x"})


def test_drift_rows_name_the_host_and_each_difference():
    from ansible_collections.onprem.triton.plugins.filter.triton_drift_rows import triton_drift_rows

    hostvars = {"inventory_hostname": "gpu-1", "triton_drift": [
        {"component": "hf_model", "item": "llama", "wants": "org/llama@abc", "has": "org/llama@main (0123456789ab)"}]}
    assert triton_drift_rows(hostvars) == [["gpu-1", "hf_model", "llama", "org/llama@abc", "org/llama@main (0123456789ab)"]]
    assert triton_drift_rows({"inventory_hostname": "gpu-2"}) == []
    with pytest.raises(AnsibleFilterError):
        triton_drift_rows({"inventory_hostname": "gpu-3", "triton_drift": "x"})
