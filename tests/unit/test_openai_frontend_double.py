# SPDX-License-Identifier: Apache-2.0
"""The OpenAI frontend double's HTTP side (tests/fixtures/openai_frontend), with the real `openai`
client, over a scripted Triton side: what the KServe generate endpoints of the vLLM backend answer
(per-response text_output and num_output_tokens). The integration test
tests/integration/test_openai_frontend.py runs the same double over the real tritonserver."""

import contextlib
import http.client
import importlib.util
import io
import json
import socket
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest
import requests

MAIN = Path(__file__).resolve().parents[1] / "fixtures" / "openai_frontend" / "openai_frontend" / "main.py"
SPEC = importlib.util.spec_from_file_location("openai_frontend_double", MAIN)
double = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(double)
KEY = "sk-unit-0123456789abcdef0123456789abcdef"
TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}A:{% endif %}"


class ScriptedEngine:
    """Engine's interface; generation answers as the vLLM backend's generate(_stream) would."""

    def __init__(self, args):
        self.args = args
        self.models = {"demo": {"backend": "vllm", "created": 1}}
        self.tokenizer = {"template": TEMPLATE, "config": {}} if args.tokenizer else None
        self.sent = []

    chat_prompt = double.Engine.chat_prompt

    def ready(self):
        return True

    def metrics(self):
        return b"nv_inference_request_success 1\n"

    def generate(self, model, prompt, request, chat):
        if self.models[model]["backend"] != "vllm":
            raise double.ServerError("not vllm")
        words = prompt.split()
        tokens = int((request.get("max_completion_tokens") if chat else None) or request.get("max_tokens")
                     or self.args.default_max_tokens)
        out = [" " + words[i % len(words)] for i in range(tokens)]
        self.sent.append({"prompt": prompt, "max_tokens": tokens})
        if request.get("stream"):
            return io.BytesIO(b"".join(b"data: %s\n\n" % json.dumps({"text_output": t, "num_output_tokens": 1}).encode()
                                       for t in out))
        return io.BytesIO(json.dumps({"text_output": "".join(out), "num_output_tokens": tokens,
                                      "num_input_tokens": len(words)}).encode())


@contextlib.contextmanager
def _serving(handler):
    """The double's HTTP side with `handler` on a free loopback port, for the block; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


@pytest.fixture(scope="module")
def served():
    args = double.parse_args(["--model-repository=/r", "--tokenizer=/t", "--default-max-tokens=9", "--openai-port=0",
                              "--openai-restricted-api", "inference,model-repository", "authorization", "Bearer " + KEY])
    handler = type("Handler", (double.Handler,), {"engine": ScriptedEngine(args),
                                                  "restricted": double.restrictions(args.openai_restricted_api)})
    with _serving(handler) as base:
        yield base, handler.engine


def client(base, key=KEY):
    return openai.OpenAI(api_key=key, base_url=base + "/v1", max_retries=0, timeout=10)


def test_models_chat_and_completions_streamed_and_not(served):
    base, engine = served
    assert [m.id for m in client(base).models.list().data] == ["demo"]
    chat = client(base).chat.completions.create(model="demo", max_tokens=3, messages=[{"role": "user", "content": "sea"}])
    assert chat.choices[0].message.content == " user: sea A:" and chat.choices[0].finish_reason == "length"
    assert engine.sent[-1] == {"prompt": "user: sea\nA:", "max_tokens": 3}
    chunks = list(client(base).chat.completions.create(model="demo", max_tokens=4, stream=True,
                                                       stream_options={"include_usage": True},
                                                       messages=[{"role": "user", "content": "sea"}]))
    assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == [
        " user:", " sea", " A:", " user:"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 4
    text = client(base).completions.create(model="demo", prompt="a b", max_tokens=3).choices[0].text
    assert text == " a b a"


def test_the_default_max_tokens_flag(served):
    base, engine = served
    client(base).chat.completions.create(model="demo", messages=[{"role": "user", "content": "sea"}])
    assert engine.sent[-1]["max_tokens"] == 9


def test_the_restriction_refuses_a_wrong_or_missing_key_and_leaves_health_open(served):
    base = served[0]
    with pytest.raises(openai.AuthenticationError, match="expecting header 'authorization'"):
        client(base, "sk-wrong").models.list()
    assert requests.post(base + "/v1/completions", json={"model": "demo", "prompt": "x"}, timeout=5).status_code == 401
    assert requests.get(base + "/health/ready", timeout=5).status_code == 200
    assert requests.get(base + "/metrics", timeout=5).text.startswith("nv_inference")


@pytest.mark.parametrize("request_, status, detail", [
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 400, "Unknown model: nope"),
    ({"model": "demo", "n": 2, "messages": [{"role": "user", "content": "x"}]}, 400, "only single choice"),
    ({"model": "demo", "logit_bias": {"1": 2}, "messages": [{"role": "user", "content": "x"}]}, 400, "logit bias"),
    ({"model": "demo", "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "x"}]},
     400, "stream_options"),
    ({"model": "demo", "tools": [{"type": "function"}], "messages": [{"role": "user", "content": "x"}]}, 400,
     "--tool-call-parser"),
    ({"model": "demo"}, 422, "messages"),
    ({"messages": [{"role": "user", "content": "x"}]}, 422, "model"),
])
def test_requests_refused_as_upstream_refuses_them(served, request_, status, detail):
    base = served[0]
    answer = requests.post(base + "/v1/chat/completions", json=request_, timeout=5,
                           headers={"Authorization": "Bearer " + KEY})
    assert answer.status_code == status and detail in json.dumps(answer.json()), answer.text


@pytest.mark.parametrize("specs, error", [
    ([["inference,billing", "k", "v"]], "Unknown API 'billing'"),
    ([["inference", "k", "v"], ["inference", "k2", "v2"]], "restricted api 'inference' can not be specified in multiple"),
])
def test_restriction_options_refused_as_upstream(specs, error):
    with pytest.raises(ValueError, match=error):
        double.restrictions(specs)


def test_no_tokenizer_means_no_chat():
    engine = ScriptedEngine(SimpleNamespace(tokenizer=None, default_max_tokens=4))
    with pytest.raises(double.ServerError, match="Unknown tokenizer"):
        engine.chat_prompt([{"role": "user", "content": "x"}])


def test_a_refused_request_body_is_not_read_as_the_next_request(served):
    """A client (or the gateway) keeps its connection alive after a 401: the next request on it is
    answered as itself, not parsed from the refused request's body (400 Bad request version)."""
    host, port = served[0][len("http://"):].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    body = json.dumps({"model": "demo", "prompt": "x " * 200})
    connection.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json",
                                                                      "Authorization": "Bearer sk-wrong"})
    refused = connection.getresponse()
    assert refused.status == 401
    refused.read()
    connection.request("GET", "/health/ready")
    assert connection.getresponse().status == 200
    connection.close()


def test_every_connection_sends_each_write_at_once_as_uvicorn_does():
    """Upstream's uvicorn runs on asyncio, which sets TCP_NODELAY on each accepted connection: a
    gateway's kept-alive connection gets every SSE chunk at once, not after the last one's ACK."""
    nodelay = []

    class Recording(double.Handler):
        engine = ScriptedEngine(double.parse_args(["--model-repository=/r", "--openai-port=0"]))

        def setup(self):
            super().setup()
            nodelay.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    with _serving(Recording) as base:
        assert requests.get(f"{base}/health/ready", timeout=5).status_code == 200
    assert len(nodelay) == 1 and nodelay[0] != 0


@pytest.mark.parametrize("asked", [False, True])
def test_the_frontend_goes_down_with_its_server_unless_it_asked_it_to(monkeypatch, asked):
    exits = []
    monkeypatch.setattr(double.os, "_exit", exits.append)
    stop = threading.Event()
    if asked:
        stop.set()
    with subprocess.Popen(["sh", "-c", "exit 3"]) as server:
        double.follow_engine(server, stop)
    assert exits == ([] if asked else [3])
