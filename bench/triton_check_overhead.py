# SPDX-License-Identifier: Apache-2.0
"""What onprem.triton.triton_check costs on top of the Triton calls it makes.

Against the Triton fixture (real tritonserver, stand-in vllm backend, as a
process on 127.0.0.1:18040-18042), for HTTP and gRPC, prints the median and
p95 over N runs of:
  bare      tritonclient doing the same checks by hand: live, ready, model
            ready, repository index, model config, one streamed generation
  module    TritonCheck.run() in this process (the module's own logic)
  process   the module as Ansible starts it: a fresh interpreter running
            main() with its arguments (import and argument parsing included)
and the overheads module - bare and process - bare.

    python bench/triton_check_overhead.py [--runs 20]
"""

import argparse
import contextlib
import io
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from ansible.module_utils.testing import patch_module_args

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".ansible" / "collections")]
# pylint: disable=wrong-import-position
from ansible_collections.onprem.triton.plugins.modules import triton_check  # noqa: E402
from tests.fixtures.triton.server import TritonServer, write_vllm_model  # noqa: E402

MODEL = "bench"
PROMPT = "one two three four"
SAMPLING = {"max_tokens": 16, "temperature": 0}


def bare_http(url):
    client = httpclient.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    client.get_model_repository_index()
    client.get_model_config(MODEL)
    client.close()
    body = json.dumps({"text_input": PROMPT, "stream": True, "exclude_input_in_output": True,
                       "sampling_parameters": json.dumps(SAMPLING)}).encode()
    import urllib.request  # pylint: disable=import-outside-toplevel
    request = urllib.request.Request(f"http://{url}/v2/models/{MODEL}/generate_stream", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = "".join(json.loads(line[5:])["text_output"] for line in response if line.startswith(b"data:"))
    assert text


def bare_grpc(url):
    client = grpcclient.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    client.get_model_repository_index()
    client.get_model_config(MODEL)
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    inputs = []
    for name, value, dtype in (("text_input", PROMPT, "BYTES"), ("stream", True, "BOOL"),
                               ("exclude_input_in_output", True, "BOOL"),
                               ("sampling_parameters", json.dumps(SAMPLING), "BYTES")):
        tensor = grpcclient.InferInput(name, [1], dtype)
        tensor.set_data_from_numpy(np.array([value], dtype=object if dtype == "BYTES" else bool))
        inputs.append(tensor)
    client.async_stream_infer(MODEL, inputs, enable_empty_final_response=True)
    text = ""
    while True:
        result, error = answers.get(timeout=30)
        assert error is None, error
        output = result.as_numpy("text_output")
        text += "".join(t.decode() for t in output) if output is not None else ""
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
    client.stop_stream()
    client.close()
    assert text


def module_args(url, protocol):
    return {"url": url, "protocol": protocol, "models": [{"name": MODEL}], "prompt": PROMPT,
            "sampling_parameters": SAMPLING, "wait_timeout": 0}


def module_in_process(url, protocol):
    stdout = io.StringIO()
    with patch_module_args(module_args(url, protocol)), contextlib.redirect_stdout(stdout):
        try:
            triton_check.main()
        except SystemExit:
            pass
    assert not json.loads(stdout.getvalue()).get("failed"), stdout.getvalue()


def module_process(url, protocol, args_file):
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args(url, protocol)}))
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".ansible" / "collections"))
    done = subprocess.run([sys.executable, "-m", triton_check.__name__, str(args_file)], capture_output=True,
                          text=True, env=env, check=False)
    assert not json.loads(done.stdout).get("failed"), done.stdout + done.stderr


def timed(function, runs, *args):
    function(*args)  # warm-up
    samples = []
    for dummy in range(runs):
        started = time.perf_counter()
        function(*args)
        samples.append(1000.0 * (time.perf_counter() - started))
    samples.sort()
    return statistics.median(samples), samples[max(0, int(0.95 * len(samples)) - 1)]


def main():
    parser = argparse.ArgumentParser(description="triton_check overhead against a bare tritonclient")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        write_vllm_model(repo, MODEL)
        server = TritonServer(repo, http_port=18040, grpc_port=18041, metrics_port=18042, load_models=[MODEL])
        with server:
            server.wait_model_ready(MODEL)
            print(f"triton_check overhead, {args.runs} runs each, {SAMPLING['max_tokens']} streamed tokens, "
                  "milliseconds (median / p95)")
            print(f"{'protocol':8} {'bare':>15} {'module':>15} {'process':>15} {'module-bare':>12} "
                  f"{'process-bare':>13}")
            for protocol, url, bare in (("http", server.http_url, bare_http), ("grpc", server.grpc_url, bare_grpc)):
                bare_ms = timed(bare, args.runs, url)
                module_ms = timed(module_in_process, args.runs, url, protocol)
                process_ms = timed(module_process, max(3, args.runs // 4), url, protocol,
                                   Path(scratch) / "args.json")
                print(f"{protocol:8} {bare_ms[0]:7.1f} / {bare_ms[1]:5.1f} {module_ms[0]:7.1f} / {module_ms[1]:5.1f} "
                      f"{process_ms[0]:7.1f} / {process_ms[1]:5.1f} {module_ms[0] - bare_ms[0]:12.1f} "
                      f"{process_ms[0] - bare_ms[0]:13.1f}")
        server.cleanup()


if __name__ == "__main__":
    main()
