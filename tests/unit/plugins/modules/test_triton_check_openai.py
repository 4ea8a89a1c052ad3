# SPDX-License-Identifier: Apache-2.0
"""Unit tests of triton_check's OpenAI probe: the protocol parsing of module_utils.openai_probe
against scripted HTTP answers, and the verdicts of TritonCheck.check_openai. The integration test
tests/integration/test_openai_frontend.py runs the module against the frontend as the role starts it."""

import io
import json
import sys
from pathlib import Path
from urllib.error import HTTPError, URLError

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / ".ansible" / "collections"))
# pylint: disable=wrong-import-position
from ansible_collections.onprem.triton.plugins.module_utils import openai_probe  # noqa: E402
from ansible_collections.onprem.triton.plugins.modules import triton_check  # noqa: E402


class Answer(io.BytesIO):
    """An urlopen response: read(), iteration by line, close()."""


def chunk(content=None, usage=None):
    event = {"object": "chat.completion.chunk", "choices": [] if content is None else
             [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    if usage:
        event["usage"] = usage
    return ("data: %s\n\n" % json.dumps(event)).encode()


class Server:
    """Scripted answers by (method, path, key); records what was sent."""

    def __init__(self, key="sk-right", models=("demo",), stream=None, accept_any_key=False):
        self.key, self.models, self.accept_any_key = key, list(models), accept_any_key
        self.stream = stream if stream is not None else (
            chunk("", None) + chunk(" the") + chunk(" sea") + chunk(usage={"completion_tokens": 2}) + b"data: [DONE]\n\n")
        self.sent = []

    def __call__(self, request, timeout=None):
        auth = request.get_header("Authorization")
        self.sent.append((request.get_method(), request.full_url, auth, request.data))
        if not self.accept_any_key and auth != "Bearer " + self.key:
            body = json.dumps({"error": {"message": "This API is restricted, expecting header 'authorization' "
                                                    "with valid value", "code": "invalid_auth"}}).encode()
            raise HTTPError(request.full_url, 401, "Unauthorized", {}, io.BytesIO(body))
        if request.full_url.endswith("/v1/models"):
            return Answer(json.dumps({"object": "list", "data": [{"id": m} for m in self.models]}).encode())
        return Answer(self.stream)


def probe(server, key="sk-right"):
    ticks = iter(x * 0.01 for x in range(1000))
    return openai_probe.OpenAIProbe("127.0.0.1:9000/v1", key, opener=server, clock=lambda: next(ticks))


def test_base_url():
    assert openai_probe.base_url("127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert openai_probe.base_url("https://gw:443/v1/") == "https://gw:443"
    assert openai_probe.base_url("gw:443", tls=True) == "https://gw:443"


def test_chat_stream_counts_chunks_usage_ttft_and_rate():
    server = Server()
    result = probe(server).chat_stream("demo", "sea?", 2)
    assert result["text"] == " the sea" and result["chunks"] == 2
    assert result["output_tokens"] == 2 and result["output_tokens_source"] == "usage"
    assert result["ttft_ms"] > 0 and result["output_tokens_per_second"] > 0
    method, url, auth, data = server.sent[0]
    assert (method, url, auth) == ("POST", "http://127.0.0.1:9000/v1/chat/completions", "Bearer sk-right")
    assert json.loads(data)["stream"] is True and json.loads(data)["stream_options"] == {"include_usage": True}


def test_a_stream_without_done_is_a_protocol_error():
    with pytest.raises(openai_probe.OpenAIError, match="without data: \\[DONE\\]"):
        probe(Server(stream=chunk(" the"))).chat_stream("demo", "x", 2)


def test_a_refused_key_is_forbidden_with_the_servers_reason():
    with pytest.raises(openai_probe.OpenAIError) as error:
        probe(Server(), key="sk-bad").list_models()
    assert error.value.kind == "forbidden" and error.value.status == 401 and "This API is restricted" in error.value.message


def test_refusal_returns_the_status_and_sends_no_header_without_a_key():
    server = Server()
    assert probe(server).refusal("") == 401 and server.sent[-1][2] is None
    assert probe(server).refusal(openai_probe.WRONG_KEY) == 401
    assert probe(server).refusal("sk-right") == 200


def test_connection_refused_is_said_plainly():
    def refuse(request, timeout=None):
        raise URLError(ConnectionRefusedError(111, "refused"))
    with pytest.raises(openai_probe.OpenAIError, match="connection refused"):
        probe(refuse).list_models()


# -- the verdicts of the module ---------------------------------------------------------------------

def check(server, **openai):
    spec = triton_check.argument_spec()
    values = {key: option.get("default") for key, option in spec.items()}
    values["models"] = triton_check.normalize_models(["demo"])[0]
    options = {key: option.get("default") for key, option in spec["openai"]["options"].items()}
    options.update(dict(url="127.0.0.1:9000", api_key="sk-right"), **openai)
    values["openai"] = options
    checker = triton_check.TritonCheck(values, probe=object(), openai_probe=probe(server, options["api_key"]))
    checker.check_openai(options)
    return checker


def test_a_protected_api_that_serves_passes():
    checker = check(Server())
    assert checker.failures == []
    assert checker.openai["models"] == ["demo"] and checker.openai["refusals"] == {"wrong_key": 401, "missing_key": 401}
    assert checker.openai["generation"]["chunks"] == 2


def test_an_api_that_accepts_any_key_fails_and_says_so():
    checker = check(Server(accept_any_key=True))
    assert checker.failures == [
        "OpenAI API: a wrong key is NOT refused (HTTP 200): the API is not protected",
        "OpenAI API: a request without a key is NOT refused (HTTP 200): the API is not protected"]


def test_our_own_key_refused_fails_forbidden():
    checker = check(Server(), api_key="sk-stale")
    assert checker.error_kind == "forbidden"
    assert checker.failures[0].startswith("OpenAI API: the key given was refused (GET /v1/models answered HTTP 401")


def test_a_model_not_listed_fails():
    checker = check(Server(models=["other"]))
    assert "GET /v1/models does not list demo (listed: other)" in checker.failures[0]
    assert checker.error_kind == "unknown_model"


def test_thresholds():
    checker = check(Server(), max_ttft_ms=0.001, min_tokens_per_second=1e9)
    assert [c["name"] for c in checker.openai["checks"] if not c["passed"]] == [
        "openai_max_ttft_ms", "openai_min_tokens_per_second"]


def test_validate_needs_a_model():
    spec = triton_check.argument_spec()
    values = {key: option.get("default") for key, option in spec.items()}
    values["openai"] = {"url": "x:1", "model": None, "max_tokens": 0}
    assert triton_check.validate(values) == ["openai.model is required when models is empty",
                                             "openai.max_tokens must be >= 1, got 0"]
