# SPDX-License-Identifier: Apache-2.0
"""Unit tests of onprem.triton.triton_check: the pure logic, and the waiting
logic against a scripted probe where network faults must be simulated (the
integration tests run the module against a real tritonserver)."""

import contextlib
import io
import json
import socket
import ssl
import sys
from pathlib import Path
from urllib.error import HTTPError, URLError

import pytest
from ansible.module_utils.testing import patch_module_args
from tritonclient.utils import InferenceServerException

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / ".ansible" / "collections"))
# pylint: disable=wrong-import-position
from ansible_collections.onprem.triton.plugins.module_utils import triton_probe  # noqa: E402
from ansible_collections.onprem.triton.plugins.modules import triton_check  # noqa: E402

VLLM_CONFIG = {
    "name": "llama", "backend": "vllm", "max_batch_size": 0, "model_transaction_policy": {"decoupled": True},
    "input": [{"name": n, "data_type": t, "dims": [1]} for n, t in (
        ("text_input", "TYPE_STRING"), ("stream", "TYPE_BOOL"), ("sampling_parameters", "TYPE_STRING"),
        ("exclude_input_in_output", "TYPE_BOOL"), ("return_num_output_tokens", "TYPE_BOOL"))],
}
TRTLLM_ENSEMBLE_CONFIG = {
    "name": "ensemble", "platform": "ensemble", "max_batch_size": 64,
    "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
              {"name": "max_tokens", "data_type": "TYPE_INT32", "dims": [1]},
              {"name": "temperature", "data_type": "TYPE_FP32", "dims": [1]},
              {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1]}],
}


def params(**overrides):
    spec = triton_check.argument_spec()
    values = {key: option.get("default") for key, option in spec.items()}
    values.update(overrides)
    values["models"], errors = triton_check.normalize_models(values["models"])
    assert not errors
    return values


def run_main(args):
    stdout = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(stdout), pytest.raises(SystemExit):
        triton_check.main()
    return json.loads(stdout.getvalue())


# -- pure helpers ------------------------------------------------------------
@pytest.mark.parametrize("values, fraction, expected", [
    ([5.0], 0.5, 5.0), ([1, 2, 3, 4], 0.5, 2), ([1, 2, 3, 4], 0.95, 4),
    (list(range(1, 101)), 0.95, 95), ([3, 1, 2], 0.5, 2),
])
def test_percentile_is_nearest_rank(values, fraction, expected):
    assert triton_probe.percentile(values, fraction) == expected


def test_vllm_request_uses_its_inputs():
    values = triton_probe.build_request_values(VLLM_CONFIG, "hi", {"max_tokens": 4}, True, {})
    assert values == {"text_input": "hi", "stream": True, "sampling_parameters": '{"max_tokens": 4}',
                      "exclude_input_in_output": True, "return_num_output_tokens": True}


def test_trtllm_ensemble_request_spreads_sampling_over_inputs():
    sampling = {"max_tokens": 4, "temperature": 0, "top_k": 1}
    values = triton_probe.build_request_values(TRTLLM_ENSEMBLE_CONFIG, "hi", sampling, False, {"x": 1})
    assert values == {"text_input": "hi", "stream": False, "max_tokens": 4, "temperature": 0, "x": 1}
    assert triton_probe._tensor_spec(TRTLLM_ENSEMBLE_CONFIG, "max_tokens", 4) == ("INT32", "int32", [1, 1])
    assert triton_probe._tensor_spec(VLLM_CONFIG, "text_input", "hi") == ("BYTES", "object", [1])


def test_model_without_text_input_cannot_generate():
    with pytest.raises(triton_probe.ProbeError, match="declares no text_input"):
        triton_probe.build_request_values({"name": "resnet", "input": [{"name": "x"}]}, "hi", {}, True, {})


@pytest.mark.parametrize("error, kind", [
    (ConnectionRefusedError(111, "Connection refused"), "connection_refused"),
    (URLError(ConnectionRefusedError(111, "Connection refused")), "connection_refused"),
    (URLError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")), "tls"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls"),
    (socket.timeout("timed out"), "timeout"),
    (InferenceServerException("failed to connect to all addresses; Connection refused",
                              status="StatusCode.UNAVAILABLE"), "connection_refused"),
    (InferenceServerException("Ssl handshake failed: SSL_ERROR_SSL", status="StatusCode.UNAVAILABLE"), "tls"),
    (InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED"), "timeout"),
    (InferenceServerException("Request for unknown model: 'x' is not found", status="400"), "unknown_model"),
    (InferenceServerException("unexpected inference input 'y'", status="StatusCode.INVALID_ARGUMENT"),
     "bad_request"),
    (InferenceServerException("boom", status="StatusCode.INTERNAL"), "server_error"),
    (InferenceServerException("This protocol is restricted, expecting header 'triton-grpc-protocol-k'",
                              status="StatusCode.UNAVAILABLE"), "forbidden"),
])
def test_classify(error, kind):
    assert triton_probe.classify(error, "where").kind == kind


def _http_error(code, body):
    return HTTPError("http://x/v2", code, "reason", {}, io.BytesIO(body.encode()))


@pytest.mark.parametrize("code, body, kind, text", [
    (400, '{"error":"Request for unknown model: \'m\' is not found"}', "unknown_model", "unknown model"),
    (400, 'data: {"error":"Error generating stream: bad"}\n\n', "bad_request", "request refused (400): Error"),
    (500, '{"error":"Unable to parse \'data\'"}', "bad_request", "request refused (500)"),
    (503, 'not json', "server_error", "HTTP 503"),
    (403, '{"error":"This API is restricted, expecting header \'k\'"}', "forbidden", "refused by the server (403)"),
])
def test_classify_http_errors_reads_the_body(code, body, kind, text):
    error = triton_probe.classify(_http_error(code, body))
    assert error.kind == kind and text in error.message


@pytest.mark.parametrize("endpoint, chunks, reported, expected", [
    ("grpc_stream", [" a", " b", " c"], None, (3, "stream_responses")),
    ("grpc_stream", [" a", " b"], 7, (7, "num_output_tokens")),
    ("generate", ["one two three"], None, (3, "words")),
])
def test_output_token_sources(endpoint, chunks, reported, expected):
    generation = triton_probe.Generation(endpoint)
    for chunk in chunks:
        generation.add(chunk, None, 0.0)
    generation.reported_tokens = reported
    assert generation.output_tokens() == expected


def test_url_scheme_sets_tls_and_is_stripped():
    probe = triton_probe.TritonProbe(url="grpcs://triton.local:8001/", protocol="grpc")
    assert probe.url == "triton.local:8001" and probe.tls
    assert triton_probe.TritonProbe(protocol="grpc").url == "127.0.0.1:8001"


# -- argument validation through main() ----------------------------------------
@pytest.mark.parametrize("args, message", [
    ({"expected_regex": "("}, "expected_regex is not a valid regular expression"),
    ({"models": [{"name": "a", "expected_regex": "[x"}]}, "models[0].expected_regex is not a valid"),
    ({"wait_timeout": -1}, "wait_timeout must be >= 0"),
    ({"request_timeout": 0}, "request_timeout must be positive"),
    ({"models": [{"name": "a"}, {"name": "a"}]}, "same name and version twice"),
    ({"client_key": "/k.pem"}, "client_key needs client_cert"),
    ({"models": [{"version": "1"}]}, "models[0].name is required"),
    # Names and dicts mixed; every error names the item and its key (the run that found these
    # got ansible-core's "dictionary requested, could not parse JSON or key=value" instead).
    ({"models": ["a", {"nmae": "b"}]}, "models[1].nmae is not an option (known: expected_regex"),
    ({"models": [{"name": "a", "generate": "maybe"}]}, "models[0].generate must be a boolean, got 'maybe'"),
    ({"models": [["a"]]}, "models[0] must be a model name or a dict with a name, got list"),
    ({"models": [{"name": "a", "prompt": {"x": 1}}]}, "models[0].prompt must be a string, got dict"),
    ({"protocol": "ftp"}, "value of protocol must be one of"),
])
def test_bad_arguments_fail_naming_the_option(args, message):
    result = run_main(args)
    assert result["failed"] and message in result["msg"]


def test_model_names_as_plain_strings():
    models, errors = triton_check.normalize_models(["gemma_local", {"name": "b", "generate": "no", "version": 2}])
    assert not errors
    assert models[0] == {"name": "gemma_local", "version": "", "generate": True, "prompt": None,
                         "expected_substring": None, "expected_regex": None}
    assert models[1]["generate"] is False and models[1]["version"] == "2"


def _without_tritonclient(monkeypatch):
    """Makes importing tritonclient and numpy fail, as on a host that has neither."""
    for name in ("tritonclient", "tritonclient.grpc", "tritonclient.http", "tritonclient.utils", "numpy"):
        monkeypatch.setitem(sys.modules, name, None)


def test_grpc_without_tritonclient_fails_naming_the_option(monkeypatch):
    _without_tritonclient(monkeypatch)
    result = run_main({"protocol": "grpc", "url": "127.0.0.1:1"})
    assert result["failed"] and "Failed to import the required Python library (tritonclient[grpc])" in result["msg"]
    assert "required by protocol: grpc (with numpy)" in result["msg"]
    assert "Or set protocol: http, which needs nothing beyond this Python's standard library." in result["msg"]


def test_http_without_tritonclient_talks_to_the_server(monkeypatch):
    _without_tritonclient(monkeypatch)
    result = run_main({"url": "127.0.0.1:1", "wait_timeout": 0, "models": [{"name": "m"}]})
    # No missing-library failure: it reached for the server, which is not there.
    assert result["failed"] and result["error_kind"] == "connection_refused", result["msg"]
    assert "server live: connection refused" in result["msg"]


# -- waiting, against a scripted probe (network faults simulated) ---------------
class ScriptedProbe:
    """Answers readiness calls from a script of states; raises the scripted fault."""

    url = "127.0.0.1:8000"

    def __init__(self, script):
        self.script = list(script)
        self.current = None

    def _step(self):
        if self.script:
            self.current = self.script.pop(0)
        if isinstance(self.current, Exception):
            raise self.current
        return self.current

    def server_live(self):
        return self._step()["live"]

    def repository_index(self):
        return self.current["index"]

    def model_ready(self, name, version):
        return any(e["name"] == name and e.get("state") == "READY" for e in self.current["index"])

    def server_ready(self):
        return self.current.get("ready", True)

    def server_metadata(self):
        return {"version": "2.51.0", "extensions": ["generate"]}

    def model_config(self, name, version):
        return {"name": name, "backend": "vllm", "model_transaction_policy": {"decoupled": True}}

    def close(self):
        pass


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


REFUSED = triton_probe.ProbeError("connection_refused", "server live: connection refused")
READY = {"live": True, "index": [{"name": "m", "version": "1", "state": "READY"}]}
LOADING = {"live": True, "index": [{"name": "m", "version": "1", "state": "LOADING"}]}


def run_check(script, **overrides):
    clock = FakeClock()
    overrides.setdefault("models", [{"name": "m", "generate": False}])
    check = triton_check.TritonCheck(params(**overrides), probe=ScriptedProbe(script), sleep=clock.sleep,
                                     clock=clock)
    return check.run(), clock


def test_waits_with_backoff_through_refusals_and_loading():
    result, clock = run_check([REFUSED, REFUSED, LOADING, LOADING, LOADING, LOADING, LOADING, READY])
    assert result["failures"] == [] and result["attempts"] == 8
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert result["models"][0]["state"] == "READY" and result["server"]["version"] == "2.51.0"


def test_times_out_with_the_last_reason():
    result, clock = run_check([LOADING], wait_timeout=5)
    assert result["error_kind"] == "loading"
    assert "not ready after 5" in result["msg"] and "model m is LOADING" in result["msg"]
    assert clock.now <= 5


@pytest.mark.parametrize("index, kind, text", [
    ([{"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "No available memory for the cache blocks"}],
     "load_failed", "model m failed to load: No available memory for the cache blocks"),
    ([{"name": "m"}], "not_loaded", "model m is in the repository but not loaded (never loaded)"),
    ([{"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}], "not_loaded", "(unloaded)"),
    ([{"name": "other"}], "unknown_model", "model m is not in the repository"),
])
def test_states_that_will_not_change_stop_at_once(index, kind, text):
    result, clock = run_check([{"live": True, "index": index}], wait_timeout=300)
    assert result["error_kind"] == kind and text in result["msg"]
    assert result["attempts"] == 1 and clock.sleeps == []
    assert result["models"][0]["failures"]


def test_tls_failure_stops_at_once():
    result = run_check([triton_probe.ProbeError("tls", "server live: TLS failure: wrong version number")])[0]
    assert result["error_kind"] == "tls" and result["attempts"] == 1


def test_server_not_ready_names_the_model_that_failed():
    state = {"live": True, "ready": False, "index": READY["index"] + [
        {"name": "x", "version": "1", "state": "UNAVAILABLE", "reason": "boom"}]}
    result = run_check([state])[0]
    assert result["error_kind"] == "load_failed" and "model x failed to load: boom" in result["msg"]
    result = run_check([state], require_server_ready=False)[0]
    assert result["failures"] == [] and result["server"]["ready"] is False


def test_zero_wait_timeout_checks_once():
    result, clock = run_check([REFUSED], wait_timeout=0)
    assert result["attempts"] == 1 and clock.sleeps == [] and result["error_kind"] == "connection_refused"


# -- answer checks and thresholds -------------------------------------------------
def _answer(text="Paris is the capital", ttft=50.0, latency=200.0, tokens_per_second=20.0):
    return {"text": text, "ttft_ms": ttft, "latency_ms": latency, "output_tokens_per_second": tokens_per_second}


@pytest.mark.parametrize("overrides, spec, generation, failed", [
    ({}, {}, _answer(), []),
    ({}, {}, _answer(text=""), ["min_length"]),
    ({"min_length": 50}, {}, _answer(), ["min_length"]),
    ({"expected_substring": "Paris"}, {}, _answer(), []),
    ({"expected_substring": "Paris"}, {"expected_substring": "Rome"}, _answer(), ["expected_substring"]),
    ({"expected_regex": "(?i)^paris"}, {}, _answer(), []),
    ({"expected_regex": "^capital"}, {}, _answer(), ["expected_regex"]),
    ({"max_ttft_ms": 40.0, "max_latency_ms": 500.0}, {}, _answer(), ["max_ttft_ms"]),
    ({"max_latency_ms": 100.0}, {}, _answer(), ["max_latency_ms"]),
    ({"min_tokens_per_second": 25.0}, {}, _answer(), ["min_tokens_per_second"]),
    ({"min_tokens_per_second": 1.0}, {}, _answer(tokens_per_second=None), ["min_tokens_per_second"]),
])
def test_answer_checks(overrides, spec, generation, failed):
    check = triton_check.TritonCheck(params(models=[dict({"name": "m"}, **spec)], **overrides),
                                     probe=ScriptedProbe([READY]))
    model = check.models[0]
    check.check_answer(model, check.params["models"][0], generation)
    assert [c["name"] for c in model["checks"] if not c["passed"]] == failed
    assert len(check.failures) == len(failed)
