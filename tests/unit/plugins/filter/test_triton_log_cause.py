# SPDX-License-Identifier: Apache-2.0
"""Unit tests of the triton_log_cause filter on real-looking tritonserver logs."""

from pathlib import Path

import pytest

from ansible_collections.onprem.triton.plugins.filter.triton_log_cause import FilterModule, triton_log_cause

LOGS = Path(__file__).resolve().parents[2] / "fixtures" / "triton_logs"


def _log(name):
    return (LOGS / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "log_name, cause, failed, error_fragment",
    [
        ("bad_max_batch_size.log", "bad_config", ["bad"], "failed to load 'bad' version 1"),
        ("hf_401.log", "hf_unauthorized", ["m"], "401 Client Error"),
        ("cuda_oom.log", "cuda_oom", ["m"], "CUDA out of memory"),
        ("driver_too_old.log", "driver_too_old", [], "built for NVIDIA Driver Release 590.44"),
        ("docker_rlimit.log", "ulimit_denied", [], "docker: Error response from daemon: failed to create shim task"),
    ],
)
def test_real_logs_are_classified(log_name, cause, failed, error_fragment):
    diagnosis = triton_log_cause(_log(log_name))
    assert diagnosis["cause"] == cause
    assert diagnosis["failed_models"] == failed
    assert error_fragment in diagnosis["first_error"]
    assert diagnosis["summary"].startswith("cause " + cause)


def test_status_table_keeps_ready_rows_and_multiline_reasons():
    diagnosis = triton_log_cause(_log("bad_max_batch_size.log"))
    rows = {row["name"]: row for row in diagnosis["models"]}
    assert rows["good"]["state"] == "READY"
    assert rows["bad"]["state"] == "UNAVAILABLE"
    assert rows["bad"]["reason"].startswith("Internal: ValueError: configuration specified max_batch_size 8")
    # the traceback rows under the reason belong to it
    assert "auto_complete_config" in rows["bad"]["reason"]
    assert "bad v1: UNAVAILABLE: Internal: ValueError" in diagnosis["summary"]


READY_TABLE = """I1123 03:45:00.000000 1 server.cc:674]
+-------+---------+--------+
| Model | Version | Status |
+-------+---------+--------+
| m     | 1       | READY  |
+-------+---------+--------+
"""


def test_the_last_table_of_a_restarted_server_wins():
    rows = triton_log_cause(_log("hf_401.log") + READY_TABLE)["models"]
    assert [(row["name"], row["state"]) for row in rows] == [("m", "READY")]


def test_warnings_printed_on_every_gpu_less_start_are_not_a_cause():
    # The fixture logs "CUDA driver version is insufficient" as a warning and
    # "CudaDriverHelper has not been initialized" as an error on every start.
    log = _log("cuda_oom.log")
    assert "driver version is insufficient" in log
    assert triton_log_cause(log)["cause"] == "cuda_oom"
    start = "\n".join(log.splitlines()[:5])
    assert "CudaDriverHelper has not been initialized" in start
    healthy = triton_log_cause(start + "\n" + READY_TABLE)
    assert (healthy["cause"], healthy["failed_models"], healthy["first_error"]) == ("none", [], "")


@pytest.mark.parametrize(
    "line, cause",
    [
        ("docker: Error response from daemon: could not select device driver \"\" with capabilities: [[gpu]].",
         "gpu_runtime_missing"),
        ("docker: Error response from daemon: unresolvable CDI devices nvidia.com/gpu=all.", "gpu_runtime_missing"),
        ("Unable to find image 'nvcr.io/nvidia/tritonserver:25.12-vllm-python-py3' locally", "image_missing"),
        ("E1123 1 model_lifecycle.cc:642] \"failed to load 'x' version 1: Invalid argument: unable to find backend "
         "library for backend 'tensorrtllm', try specifying runtime on the model configuration.\"", "wrong_backend"),
        ("E1123 1 pb_stub.cc:1] Unable to initialize shared memory key 'triton_python_backend_shm_region_1'",
         "shm_too_small"),
        ("E1123 1 model_lifecycle.cc:642] \"failed to load 'x' version 1: Internal: TypeError: "
         "AsyncEngineArgs.__init__() got an unexpected keyword argument 'disable_log_requests'\"", "bad_config"),
        ("E1123 1 model_lifecycle.cc:642] \"failed to load 'x' version 1: ValueError: No available memory for "
         "the cache blocks. Try increasing `gpu_memory_utilization`\"", "cuda_oom"),
        ("E1123 1 model_repository_manager.cc:1] \"failed to load 'x' version 1: Invalid argument: failed to stat "
         "file /models/x\"", "model_not_found"),
        ("E1123 1 x.cc:1] \"huggingface_hub.errors.LocalEntryNotFoundError: outgoing traffic has been disabled\"",
         "hf_offline"),
        ("E1123 1 x.cc:1] \"something nobody has seen before\"", "unknown"),
    ],
)
def test_single_error_lines(line, cause):
    diagnosis = triton_log_cause("I1123 1 server.cc:1] starting\n" + line + "\n")
    assert diagnosis["cause"] == cause
    assert diagnosis["first_error"] == line.strip()


# What the OpenAI frontend's launcher printed in molecule triton_server when its tokenizer config
# was not JSON (journal of the unit, `-o cat`): the traceback's first line says nothing.
FRONTEND_TRACEBACK = """Started triton-molecule.service - Triton Inference Server molecule (vllm).
Traceback (most recent call last):
  File "/usr/local/lib/onprem-triton/triton_openai_launch.py", line 51, in <module>
    main()
  File "/opt/tritonserver/python/openai/openai_frontend/main.py", line 112, in load_chat_template
    config = json.load(handle)
             ^^^^^^^^^^^^^^^^^
json.decoder.JSONDecodeError: Invalid control character at: line 1 column 78 (char 77)
triton-molecule.service: Main process exited, code=exited, status=1/FAILURE
"""


def test_a_traceback_is_reported_by_its_exception_line():
    diagnosis = triton_log_cause(FRONTEND_TRACEBACK)
    assert diagnosis["first_error"] == "json.decoder.JSONDecodeError: Invalid control character at: line 1 column 78 (char 77)"
    assert diagnosis["summary"].endswith("| first error: " + diagnosis["first_error"])
    # a traceback cut off before its last line still names the traceback
    assert triton_log_cause(FRONTEND_TRACEBACK.split("json.decoder", maxsplit=1)[0])["first_error"] == "Traceback (most recent call last):"


def test_empty_log():
    assert triton_log_cause("")["cause"] == "none"
    assert triton_log_cause(None)["models"] == []


def test_filter_is_registered():
    assert FilterModule().filters()["triton_log_cause"] is triton_log_cause
