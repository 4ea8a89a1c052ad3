# SPDX-License-Identifier: Apache-2.0
"""onprem.triton.triton_check against a real tritonserver (the Triton fixture,
as a process): each case of issue 7 over HTTP and gRPC. The module runs as
Ansible runs it (its main(), arguments in a JSON file), and once through
`ansible` by its FQCN."""

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from ansible.module_utils.testing import patch_module_args

from tests.fixtures.triton.server import TritonServer, write_text_echo_model, write_vllm_model

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / ".ansible" / "collections"  # scripts/setup.sh links the checkout there
sys.path.insert(0, str(COLLECTIONS))
from ansible_collections.onprem.triton.plugins.modules import triton_check  # noqa: E402 pylint: disable=wrong-import-position
PROMPT = "the quick brown fox"
PROTOCOLS = ["http", "grpc"]


def _env():
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS)
    return env


def run_module(tmp_path, **args):
    """Runs the module's main() as Ansible does (arguments, exit_json/fail_json
    printing JSON, SystemExit), in this process to keep the suite quick."""
    del tmp_path  # kept in the signature: a subprocess runner would need it
    stdout = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(stdout), pytest.raises(SystemExit):
        triton_check.main()
    return json.loads(stdout.getvalue())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_vllm_model(repo, "demo", parameters={"FIXTURE_TOKEN_DELAY_MS": "2"})
    write_text_echo_model(repo, "echo")
    write_vllm_model(repo, "broken", engine_args={"model": "facebook/opt-125m", "disable_log_requests": True})
    write_vllm_model(repo, "idle")
    write_vllm_model(repo, "flaky", parameters={"FIXTURE_FAIL_AFTER_TOKENS": "2"})
    # Long enough that the check (an ansible-playbook run, up to ~10 s to start on a busy machine: 8 s was not)
    # starts its first probe while the model still loads.
    write_vllm_model(repo, "slow", parameters={"FIXTURE_LOAD_DELAY_S": "20"})
    srv = TritonServer(repo, http_port=18020, grpc_port=18021, metrics_port=18022,
                       load_models=["demo", "echo", "broken", "flaky"])
    with srv:
        srv.wait_model_ready("demo")
        yield srv
    srv.cleanup()


def url(server, protocol):
    return server.http_url if protocol == "http" else server.grpc_url


def check(server, protocol, tmp_path, **args):
    args.setdefault("require_server_ready", False)  # 'broken' keeps this server not ready
    args.setdefault("wait_timeout", 10)
    return run_module(tmp_path, url=url(server, protocol), protocol=protocol, prompt=PROMPT, **args)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ready_decoupled_model_streams_and_is_timed(server, protocol, tmp_path):
    result = check(server, protocol, tmp_path, models=[{"name": "demo"}], sampling_parameters={"max_tokens": 6},
                   expected_substring="brown fox the", expected_regex="^ the quick", min_length=10,
                   max_ttft_ms=5000, min_tokens_per_second=1)
    assert result["failures"] == [] and not result.get("failed"), result["msg"]
    assert result["changed"] is False
    assert result["server"]["live"] is True and result["server"]["version"]
    model = result["models"][0]
    assert model["ready"] and model["state"] == "READY" and model["decoupled"] and model["backend"] == "vllm"
    generation = model["generation"]
    assert generation["endpoint"] == ("grpc_stream" if protocol == "grpc" else "generate_stream")
    assert generation["text"] == " the quick brown fox the quick"
    assert generation["responses"] == 6 and generation["output_tokens"] == 6
    assert generation["output_tokens_source"] == "num_output_tokens"
    assert 0 < generation["ttft_ms"] <= generation["latency_ms"]
    assert [c["name"] for c in model["checks"]] == ["min_length", "expected_substring", "expected_regex",
                                                    "max_ttft_ms", "min_tokens_per_second"]
    assert all(c["passed"] for c in model["checks"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_non_decoupled_model_uses_the_generate_endpoint(server, protocol, tmp_path):
    result = check(server, protocol, tmp_path, models=[{"name": "echo"}], sampling_parameters={"max_tokens": 3},
                   expected_substring="quick brown")
    assert not result.get("failed"), result["msg"]
    model = result["models"][0]
    assert model["decoupled"] is False and model["backend"] == "python"
    assert model["generation"]["endpoint"] == ("grpc_infer" if protocol == "grpc" else "generate")
    assert model["generation"]["text"] == " the quick brown"
    assert model["generation"]["output_tokens"] == 3 and model["generation"]["output_tokens_source"] == "words"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_expected_text_not_found_fails_with_the_answer(server, protocol, tmp_path):
    result = check(server, protocol, tmp_path, models=[{"name": "demo", "expected_substring": "Paris"}],
                   sampling_parameters={"max_tokens": 2})
    assert result["failed"] and result["error_kind"] == "check"
    assert "'Paris' not found in the answer ' the quick'" in result["msg"]


def test_thresholds_fail_the_check(server, tmp_path):
    result = check(server, "grpc", tmp_path, models=[{"name": "demo"}], sampling_parameters={"max_tokens": 4},
                   max_ttft_ms=0.001, min_tokens_per_second=1e9)
    assert result["failed"]
    failed = [c["name"] for c in result["models"][0]["checks"] if not c["passed"]]
    assert failed == ["max_ttft_ms", "min_tokens_per_second"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_that_failed_to_load_stops_the_wait_with_its_reason(server, protocol, tmp_path):
    result = check(server, protocol, tmp_path, models=[{"name": "broken"}], wait_timeout=60)
    assert result["failed"] and result["error_kind"] == "load_failed"
    assert result["attempts"] == 1 and result["waited_s"] < 5
    assert "unexpected keyword argument 'disable_log_requests'" in result["msg"]
    assert result["models"][0]["state"] == "UNAVAILABLE"


def test_server_readiness_names_a_failed_model_not_asked_for(server, tmp_path):
    result = check(server, "http", tmp_path, models=[{"name": "demo"}], require_server_ready=True, wait_timeout=60)
    assert result["failed"] and result["error_kind"] == "load_failed" and result["attempts"] == 1
    assert "server is not ready: model broken failed to load" in result["msg"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_not_loaded_and_wrong_name_stop_early(server, protocol, tmp_path):
    result = check(server, protocol, tmp_path, models=[{"name": "idle"}], wait_timeout=60)
    assert result["failed"] and result["error_kind"] == "not_loaded" and result["attempts"] == 1
    assert "model idle is in the repository but not loaded" in result["msg"]
    result = check(server, protocol, tmp_path, models=[{"name": "no_such_model"}], wait_timeout=60)
    assert result["failed"] and result["error_kind"] == "unknown_model" and result["attempts"] == 1
    assert "no_such_model" in result["msg"]


def test_model_still_loading_is_waited_for(server, tmp_path):
    client = httpclient.InferenceServerClient(server.http_url)
    loader = threading.Thread(target=client.load_model, args=("slow",))
    started = time.monotonic()
    loader.start()
    try:
        # The load (20 s) has begun when the check starts. Not read from the repository index:
        # Triton holds an index call until the load in progress ends, so a watcher polling it
        # saw READY and the check then had nothing left to wait for (a flaky pass/fail).
        time.sleep(1.0)
        before = time.monotonic()
        result = check(server, "grpc", tmp_path, models=[{"name": "slow"}], wait_timeout=90)
        check_seconds = time.monotonic() - before
    finally:
        loader.join()
    assert not result.get("failed"), result["msg"]
    assert result["models"][0]["generation"]["text"]
    # It waited for the load instead of failing at once ("not loaded"): over several probes, or
    # in one that Triton held until the load ended; either way the check lasted until the load ended.
    assert time.monotonic() - started >= 19 and check_seconds >= 10, (check_seconds, result)


@pytest.mark.parametrize("protocol, stream, inputs, kind, message", [
    ("http", False, {"sampling_parameters": '{"max_tokens": -1}'}, "bad_request",
     "request refused (400): Error generating stream: max_tokens must be at least 1, got -1"),
    ("http", True, {"sampling_parameters": '{"max_tokens": -1}'}, "bad_request",
     "request refused (400): Error generating stream: max_tokens must be at least 1, got -1"),
    ("http", True, {"stream": "yes"}, "bad_request", "request refused (500): Unable to parse"),
    ("grpc", True, {"sampling_parameters": '{"no_such_param": 1}'}, "server_error",
     "unexpected keyword argument 'no_such_param'"),
])
def test_wrong_inputs_are_refused(server, protocol, stream, inputs, kind, message, tmp_path):
    result = check(server, protocol, tmp_path, models=[{"name": "demo"}], extra_inputs=inputs, stream=stream)
    assert result["failed"] and result["error_kind"] == kind, result["msg"]
    assert message in result["msg"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_error_in_the_middle_of_a_stream(server, protocol, tmp_path):
    result = check(server, protocol, tmp_path, models=[{"name": "flaky"}], sampling_parameters={"max_tokens": 5})
    assert result["failed"] and result["error_kind"] == "server_error", result["msg"]
    assert "simulated engine failure after 2 tokens" in result["msg"]


def test_request_timeout(server, tmp_path):
    result = check(server, "grpc", tmp_path, models=[{"name": "demo"}], sampling_parameters={"max_tokens": 200},
                   request_timeout=0.2)
    assert result["failed"] and result["error_kind"] == "timeout", result["msg"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_against_a_plain_port_is_a_tls_failure(server, protocol, tmp_path):
    result = check(server, protocol, tmp_path, tls=True, models=[{"name": "demo"}], wait_timeout=30)
    assert result["failed"] and result["error_kind"] == "tls" and result["attempts"] == 1, result["msg"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_concurrency_probe(server, protocol, tmp_path):
    result = check(server, protocol, tmp_path, models=[{"name": "demo"}], sampling_parameters={"max_tokens": 4},
                   concurrency=4, max_p95_ms=30000)
    assert not result.get("failed"), result["msg"]
    probe = result["models"][0]["concurrency"]
    assert probe["requests"] == probe["succeeded"] == 4 and probe["errors"] == []
    assert 0 < probe["p50_ms"] <= probe["p95_ms"] <= probe["wall_ms"]
    assert probe["output_tokens_per_second"] > 0


def test_server_down(tmp_path):
    result = run_module(tmp_path, url="127.0.0.1:18029", models=[{"name": "demo"}], wait_timeout=1.5)
    assert result["failed"] and result["error_kind"] == "connection_refused"
    assert result["attempts"] >= 2 and "not ready after 1.5s" in result["msg"]
    assert result["server"]["live"] is None


def test_slow_starting_server_is_waited_for_then_passes(tmp_path):
    repo = tmp_path / "repo"
    write_vllm_model(repo, "slow", parameters={"FIXTURE_LOAD_DELAY_S": "2"})
    srv = TritonServer(repo, http_port=18023, grpc_port=18024, metrics_port=18025, load_models=["slow"],
                       wait=False)
    with srv:  # tritonserver opens its ports only after the startup models loaded
        result = run_module(tmp_path, url=srv.http_url, models=[{"name": "slow"}], wait_timeout=60,
                            prompt=PROMPT, sampling_parameters={"max_tokens": 2}, expected_substring="the quick")
    srv.cleanup()
    assert not result.get("failed"), result["msg"]
    assert result["waited_s"] >= 1.5 and result["attempts"] > 1
    assert result["server"]["ready"] is True


def test_through_ansible_by_fqcn_in_check_mode(server, tmp_path):
    args = {"url": server.grpc_url, "protocol": "grpc", "models": [{"name": "demo"}, {"name": "echo"}],
            "require_server_ready": False, "prompt": PROMPT, "expected_substring": "quick",
            "headers": {"x-gateway-token": "s3cr3t-value"}}
    env = _env()
    env.update(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    done = subprocess.run(
        ["ansible", "localhost", "-i", "localhost,", "-c", "local", "--check", "-m", "onprem.triton.triton_check", "-a", json.dumps(args)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s3cr3t-value" not in done.stdout
    # ansible.cfg enables profile_tasks, which prints lines around the JSON.
    result = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{"):])[0]["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["changed"] is False
    assert [m["generation"]["text"] for m in result["models"]] == [
        " the quick brown fox the quick brown fox the quick brown fox the quick brown fox the quick brown fox "
        "the quick brown fox the quick brown fox the quick brown fox", " the quick brown fox" * 8]


def _make_certs(folder):
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=onprem-triton test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def test_grpc_over_tls_with_a_restricting_header(tmp_path):
    ca_cert, server_cert, server_key = _make_certs(tmp_path)
    repo = tmp_path / "repo"
    write_vllm_model(repo, "demo")
    restricted = "health,metadata,model-config,model-repository,inference:x-onprem-token=s3cret"
    srv = TritonServer(repo, http_port=18026, grpc_port=18027, metrics_port=18028, load_models=["demo"],
                       extra_args=["--grpc-use-ssl=true", f"--grpc-server-cert={server_cert}",
                                   f"--grpc-server-key={server_key}", f"--grpc-restricted-protocol={restricted}"])
    base = {"url": srv.grpc_url, "protocol": "grpc", "tls": True, "models": [{"name": "demo"}], "prompt": PROMPT,
            "sampling_parameters": {"max_tokens": 2}, "wait_timeout": 5}
    with srv:
        # Triton checks the header of a restricted gRPC protocol under this prefixed name.
        header = {"triton-grpc-protocol-x-onprem-token": "s3cret"}
        passed = run_module(tmp_path, ca_cert=str(ca_cert), headers=header, **base)
        no_header = run_module(tmp_path, ca_cert=str(ca_cert), **base)
        untrusted = run_module(tmp_path, headers=header, **base)
    srv.cleanup()
    assert not passed.get("failed"), passed["msg"]
    assert passed["models"][0]["generation"]["text"] == " the quick"
    assert no_header["failed"] and no_header["error_kind"] == "forbidden" and no_header["attempts"] == 1
    assert "This protocol is restricted" in no_header["msg"]
    assert untrusted["failed"] and untrusted["error_kind"] == "tls", untrusted["msg"]
