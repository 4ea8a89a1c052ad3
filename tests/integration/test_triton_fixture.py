# SPDX-License-Identifier: Apache-2.0
"""The Triton fixture itself: a real tritonserver serving the stand-in vllm
backend answers over HTTP and gRPC as the real vLLM backend would, and refuses
the repositories the real one refuses."""

import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.fixtures.triton.server import TritonServer, write_vllm_model

PROMPT = "the quick brown fox"
PORTS = {"http_port": 18000, "grpc_port": 18001, "metrics_port": 18002}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_vllm_model(repo, "demo", parameters={"REPORT_CUSTOM_METRICS": "true"})
    weights = tmp_path_factory.mktemp("weights")
    (weights / "config.json").write_text("{}")
    write_vllm_model(repo, "local_weights", engine_args={"model": str(weights)})
    write_vllm_model(repo, "not_decoupled", config='backend: "vllm"\nmodel_transaction_policy { decoupled: false }\n')
    write_vllm_model(repo, "unknown_key", engine_args={"model": "facebook/opt-125m", "disable_log_requests": True})
    write_vllm_model(repo, "missing_weights", engine_args={"model": "/nonexistent/weights"})
    write_vllm_model(repo, "no_cache_memory", engine_args={"model": "facebook/opt-125m",
                                                           "gpu_memory_utilization": 0.01})
    write_vllm_model(repo, "broken", parameters={"FIXTURE_LOAD_FAILURE": "simulated engine crash"})
    srv = TritonServer(repo, load_models=["demo", "local_weights"], **PORTS)
    with srv:
        srv.wait_model_ready("demo")
        yield srv
    srv.cleanup()


def http_post(server, path, body, stream=False):
    return requests.post(f"http://{server.http_url}{path}", json=body, stream=stream, timeout=10)


def test_server_live_ready_and_models_ready(server):
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("demo")
    assert client.is_model_ready("local_weights")
    config = client.get_model_config("demo")
    assert config["backend"] == "vllm"
    assert config["model_transaction_policy"] == {"decoupled": True}
    assert config["max_batch_size"] == 0
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["demo"]["state"] == "READY"
    assert "state" not in index["broken"]  # never asked to load


def test_generate_is_deterministic_and_includes_prompt(server):
    body = {"text_input": PROMPT, "sampling_parameters": json.dumps({"max_tokens": 6, "temperature": 0})}
    answer = http_post(server, "/v2/models/demo/generate", body).json()
    assert answer["text_output"] == PROMPT + " the quick brown fox the quick"
    body["exclude_input_in_output"] = True
    body["return_finish_reason"] = True
    body["return_num_output_tokens"] = True
    answer = http_post(server, "/v2/models/demo/generate", body).json()
    assert answer["text_output"] == " the quick brown fox the quick"
    assert answer["finish_reason"] == "length"
    assert answer["num_output_tokens"] == 6


def test_generate_stream_sends_one_event_per_token(server):
    body = {"text_input": PROMPT, "stream": True, "sampling_parameters": json.dumps({"max_tokens": 3})}
    with http_post(server, "/v2/models/demo/generate_stream", body, stream=True) as response:
        assert response.status_code == 200
        events = [json.loads(line[len(b"data: "):]) for line in response.iter_lines() if line]
    assert [e["text_output"] for e in events] == [" the", " quick", " brown"]


def test_stop_string_and_sampling_errors(server):
    body = {"text_input": PROMPT, "exclude_input_in_output": True,
            "sampling_parameters": json.dumps({"max_tokens": 10, "stop": ["fox"]}),
            "return_finish_reason": True}
    answer = http_post(server, "/v2/models/demo/generate", body).json()
    assert answer["text_output"] == " the quick brown"
    assert answer["finish_reason"] == "stop"
    body["sampling_parameters"] = json.dumps({"max_tokens": 4, "no_such_param": 1})
    response = http_post(server, "/v2/models/demo/generate", body)
    assert response.status_code == 400
    assert "unexpected keyword argument 'no_such_param'" in response.json()["error"]
    body = {"text_input": PROMPT, "stream": True, "exclude_input_in_output": False}
    response = http_post(server, "/v2/models/demo/generate_stream", body)
    assert "exclude_input_in_output` = False is not allowed" in response.text


def test_grpc_streaming_ends_with_final_flag(server):
    responses = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    inputs = []
    for name, value, dtype in (("text_input", [PROMPT], "BYTES"), ("stream", [True], "BOOL"),
                               ("sampling_parameters", [json.dumps({"max_tokens": 5})], "BYTES")):
        tensor = grpcclient.InferInput(name, [1], dtype)
        tensor.set_data_from_numpy(np.array(value, dtype=object if dtype == "BYTES" else bool))
        inputs.append(tensor)
    client.async_stream_infer("demo", inputs, enable_empty_final_response=True)
    tokens = []
    while True:
        result, error = responses.get(timeout=10)
        assert error is None
        output = result.as_numpy("text_output")
        if output is not None:
            tokens.extend(t.decode() for t in output)
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
    client.stop_stream()
    assert "".join(tokens) == " the quick brown fox the"


def test_custom_metrics_count_tokens(server):
    metrics = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).text
    assert 'vllm:generation_tokens_total{model="demo",version="1"}' in metrics


@pytest.mark.parametrize("model, reason", [
    ("not_decoupled", "trying to change decoupled property"),
    ("unknown_key", "AsyncEngineArgs.__init__() got an unexpected keyword argument 'disable_log_requests'"),
    ("missing_weights", "Incorrect path_or_model_id: '/nonexistent/weights'"),
    ("no_cache_memory", "No available memory for the cache blocks"),
    ("broken", "simulated engine crash"),
])
def test_bad_models_fail_to_load_with_upstream_reason(server, model, reason):
    client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(Exception, match="load failed|failed to load"):
        client.load_model(model)
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index[model]["state"] == "UNAVAILABLE"
    assert reason in index[model]["reason"]
    assert not client.is_model_ready(model)


def test_without_auto_complete_a_missing_decoupled_policy_is_refused(tmp_path):
    config = ('backend: "vllm"\nmax_batch_size: 0\n'
              'input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
              'output [ { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] } ]\n')
    write_vllm_model(tmp_path, "plain", config=config)
    with TritonServer(tmp_path, http_port=18003, grpc_port=18004, metrics_port=18005,
                      extra_args=["--disable-auto-complete-config"]) as srv:
        client = httpclient.InferenceServerClient(srv.http_url)
        with pytest.raises(Exception, match="load failed|failed to load"):
            client.load_model("plain")
        reason = {m["name"]: m for m in client.get_model_repository_index()}["plain"]["reason"]
    srv.cleanup()
    assert "vLLM Triton backend must be configured to use decoupled model transaction policy" in reason


def test_fixture_image_serves_the_repository_like_the_ngc_image(tmp_path):
    """The docker image (built, or reused from the cache, by its script) runs
    `tritonserver` from PATH with the repository mounted at /models."""
    repo_root = Path(__file__).resolve().parents[2]
    build = subprocess.run([str(repo_root / "tests/images/build_triton_image.sh"), sys.executable],
                           capture_output=True, text=True, check=True)
    image = build.stdout.strip().splitlines()[-1]
    write_vllm_model(tmp_path, "demo")
    name = f"fixture-check-image-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "host",
                    "-v", f"{tmp_path}:/models:ro", image, "tritonserver", "--model-repository=/models",
                    "--model-control-mode=explicit", "--load-model=demo", "--http-address=127.0.0.1",
                    "--http-port=18006", "--grpc-address=127.0.0.1", "--grpc-port=18007",
                    "--metrics-address=127.0.0.1", "--metrics-port=18008"], check=True, capture_output=True)
    try:
        client = httpclient.InferenceServerClient("127.0.0.1:18006")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.is_model_ready("demo"):
                    break
            except Exception:  # noqa: BLE001 -- not listening yet
                pass
            time.sleep(0.2)
        body = {"text_input": PROMPT, "stream": True, "sampling_parameters": json.dumps({"max_tokens": 2})}
        with requests.post("http://127.0.0.1:18006/v2/models/demo/generate_stream", json=body,
                           stream=True, timeout=10) as response:
            events = [json.loads(line[len(b"data: "):]) for line in response.iter_lines() if line]
        assert [e["text_output"] for e in events] == [" the", " quick"]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
