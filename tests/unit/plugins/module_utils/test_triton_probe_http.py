# SPDX-License-Identifier: Apache-2.0
"""TritonProbe over HTTP with the standard library only: the KServe v2 REST
calls (health, metadata, model ready and config, repository index) against a
small http.server in a thread that answers as Triton does (status codes and
its {"error": ...} bodies), plain and over TLS (CA file, validate_certs,
mutual TLS). The real tritonserver is in tests/integration."""

import json
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest

from ansible_collections.onprem.triton.plugins.module_utils import triton_probe

CONFIG = {"name": "llama", "backend": "vllm", "max_batch_size": 0, "model_transaction_policy": {"decoupled": True},
          "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]}]}
INDEX = [{"name": "llama", "version": "1", "state": "READY"},
         {"name": "broken", "version": "1", "state": "UNAVAILABLE", "reason": "engine crashed"}]
METADATA = {"name": "triton", "version": "2.51.0", "extensions": ["classification", "model_repository"]}
REPO_HEADER, REPO_KEY = "x-repo-key", "s3cret"


class FakeTriton(BaseHTTPRequestHandler):
    """Answers like Triton's http_server.cc; the state is on the server object."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _reply(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body=b""):
        self.server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                     "body": body, "client_cert": self._client_cert()})

    def _client_cert(self):
        getpeercert = getattr(self.connection, "getpeercert", None)
        return getpeercert() if getpeercert else None

    def do_GET(self):  # noqa: N802  pylint: disable=invalid-name
        self._record()
        state = self.server.state
        path = self.path
        if path in ("/v2/health/live", "/v2/health/ready"):
            key = "live" if path.endswith("live") else "ready"
            return self._reply(200 if state[key] else 400)  # Triton: 400, no body
        if path == "/v2/health/restricted-live":
            return self._reply(403, {"error": "This API is restricted, expecting header '%s'" % REPO_HEADER})
        if path == "/v2":
            return self._reply(200, METADATA)
        if path == "/v2/gateway":
            self.send_response(502)
            self.send_header("Content-Length", "11")
            self.end_headers()
            self.wfile.write(b"Bad Gateway")
            return None
        parts = path.split("/")  # ['', 'v2', 'models', name, ('versions', v,) what]
        name, what = unquote(parts[3]), parts[-1]
        if name == "slow":
            time.sleep(1.0)
        known = name in ("llama", "slow", "a b")
        if what == "ready":
            return self._reply(200 if known and name in state["ready_models"] else 400)
        if what == "config":
            if not known:
                return self._reply(400, {"error": "Request for unknown model: '%s' is not found" % name})
            return self._reply(200, dict(CONFIG, name=name))
        return self._reply(404, {"error": "Not Found"})

    def do_POST(self):  # noqa: N802  pylint: disable=invalid-name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._record(body)
        if self.path == "/v2/repository/index":
            if self.headers.get(REPO_HEADER) != REPO_KEY:
                return self._reply(403, {"error": "This API is restricted, expecting header '%s'" % REPO_HEADER})
            return self._reply(200, INDEX)
        if self.path == "/v2/models/llama/generate":
            return self._reply(200, {"model_name": "llama", "text_output": " the sea", "num_output_tokens": [2]})
        return self._reply(404, {"error": "Not Found"})


def serve(context=None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTriton)
    server.daemon_threads = True
    server.requests = []
    server.state = {"live": True, "ready": True, "ready_models": {"llama", "slow", "a b"}}
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def triton():
    server = serve()
    yield server
    server.shutdown()
    server.server_close()


def probe_for(server, **kwargs):
    kwargs.setdefault("headers", {REPO_HEADER: REPO_KEY})
    kwargs.setdefault("url", "127.0.0.1:%d" % server.server_address[1])
    return triton_probe.TritonProbe(**kwargs)


# -- plain HTTP ------------------------------------------------------------------
def test_each_call_uses_its_rest_endpoint_and_returns_triton_json(triton):
    probe = probe_for(triton)
    assert probe.server_live() is True and probe.server_ready() is True
    assert probe.server_metadata() == METADATA
    assert probe.model_ready("llama") is True and probe.model_ready("llama", "2") is True
    assert probe.model_config("llama") == CONFIG
    assert probe.model_config("llama", "2")["name"] == "llama"
    assert probe.repository_index() == INDEX
    probe.close()
    assert [(r["method"], r["path"]) for r in triton.requests] == [
        ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"), ("GET", "/v2"),
        ("GET", "/v2/models/llama/ready"), ("GET", "/v2/models/llama/versions/2/ready"),
        ("GET", "/v2/models/llama/config"), ("GET", "/v2/models/llama/versions/2/config"),
        ("POST", "/v2/repository/index")]
    index = triton.requests[-1]
    assert index["body"] == b"{}" and index["headers"]["Content-Type"] == "application/json"
    # The headers go with every request (HTTP header names are case-insensitive).
    for request in triton.requests:
        assert {k.lower(): v for k, v in request["headers"].items()}[REPO_HEADER] == REPO_KEY


def test_model_names_are_quoted_in_the_path(triton):
    probe = probe_for(triton)
    assert probe.model_ready("a b") and probe.model_config("a b")["name"] == "a b"
    assert triton.requests[0]["path"] == "/v2/models/a%20b/ready"


def test_not_live_not_ready_and_unknown_model_are_false_not_errors(triton):
    triton.state.update(live=False, ready=False, ready_models=set())
    probe = probe_for(triton)
    assert probe.server_live() is False and probe.server_ready() is False
    assert probe.model_ready("llama") is False and probe.model_ready("no_such_model") is False


@pytest.mark.parametrize("call, kind, message", [
    (lambda p: p.model_config("no_such_model"), "unknown_model",
     "model no_such_model config: Request for unknown model: 'no_such_model' is not found"),
    (lambda p: triton_probe.TritonProbe(url=p.url).repository_index(), "forbidden",
     "repository index: refused by the server (403): This API is restricted, expecting header 'x-repo-key'"),
    (lambda p: p._http_health("server live", "/v2/health/restricted-live"), "forbidden",
     "server live: refused by the server (403): This API is restricted"),
    (lambda p: p._http_json("server metadata", "GET", "/v2/gateway"), "server_error",
     "server metadata: HTTP 502: Bad Gateway"),
    (lambda p: p._http_json("x", "GET", "/v2/models/llama/nothing"), "server_error", "x: HTTP 404: Not Found"),
])
def test_errors_are_classified_with_tritons_error_body(triton, call, kind, message):
    with pytest.raises(triton_probe.ProbeError) as raised:
        call(probe_for(triton))
    assert raised.value.kind == kind and message in raised.value.message, raised.value.message


def test_request_timeout(triton):
    with pytest.raises(triton_probe.ProbeError) as raised:
        probe_for(triton, request_timeout=0.2).model_config("slow")
    assert raised.value.kind == "timeout" and raised.value.message.startswith("model slow config: timed out")


def test_connection_refused():
    server = serve()
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    probe = triton_probe.TritonProbe(url="127.0.0.1:%d" % port)
    for call in (probe.server_live, probe.server_metadata, probe.repository_index):
        with pytest.raises(triton_probe.ProbeError) as raised:
            call()
        assert raised.value.kind == "connection_refused", raised.value.message


def test_no_proxy_is_used(triton, monkeypatch):
    # Triton is reached directly, as tritonclient did: a proxy in the environment is ignored.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert probe_for(triton).server_live() is True


def test_http_generate_still_works(triton):
    generation = probe_for(triton).generate("llama", "", dict(CONFIG, model_transaction_policy={}), "hi", {})
    assert generation.as_dict()["text"] == " the sea" and generation.reported_tokens == 2
    assert triton.requests[-1]["path"] == "/v2/models/llama/generate"


def test_http_needs_neither_tritonclient_nor_numpy():
    """In a fresh interpreter where importing them fails, the HTTP calls run
    and grpc_import_error() reports what gRPC lacks."""
    code = """
import sys
for name in ("tritonclient", "tritonclient.grpc", "tritonclient.http", "tritonclient.utils", "numpy"):
    sys.modules[name] = None  # makes `import name` raise ImportError
sys.path[:0] = %r
from ansible_collections.onprem.triton.plugins.module_utils import triton_probe
assert "tritonclient.grpc" in triton_probe.grpc_import_error()
probe = triton_probe.TritonProbe(url="127.0.0.1:1")
try:
    probe.server_live()
except triton_probe.ProbeError as error:
    print(error.kind)
""" % (sys.path,)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "connection_refused"


def test_grpc_import_error_is_none_where_tritonclient_is_installed():
    assert triton_probe.grpc_import_error() is None


# -- HTTPS ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it."""
    folder = tmp_path_factory.mktemp("certs")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=onprem-triton test CA")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=127.0.0.1" if name == "server" else "/CN=gate-client")
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", name + ".pem", "-days", "2", "-extfile", "san.cnf")
    return {name: str(folder / name) for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture
def https_triton(certs, request):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs["server.pem"], certs["server.key"])
    if getattr(request, "param", None) == "mutual":
        context.load_verify_locations(certs["ca.pem"])
        context.verify_mode = ssl.CERT_REQUIRED
    server = serve(context)
    yield server
    server.shutdown()
    server.server_close()


def test_https_with_the_ca_file(https_triton, certs):
    url = "https://127.0.0.1:%d" % https_triton.server_address[1]
    probe = probe_for(https_triton, url=url, ca_cert=certs["ca.pem"])
    assert probe.tls and probe.server_live() and probe.repository_index() == INDEX
    assert probe.model_config("llama") == CONFIG
    assert {k.lower(): v for k, v in https_triton.requests[-1]["headers"].items()}[REPO_HEADER] == REPO_KEY


def test_https_untrusted_is_a_tls_failure_unless_validate_certs_is_off(https_triton):
    url = "127.0.0.1:%d" % https_triton.server_address[1]
    with pytest.raises(triton_probe.ProbeError) as raised:
        triton_probe.TritonProbe(url=url, tls=True).server_live()
    assert raised.value.kind == "tls", raised.value.message
    assert triton_probe.TritonProbe(url=url, tls=True, validate_certs=False).server_live() is True


def test_tls_against_a_plain_port_is_a_tls_failure(triton):
    with pytest.raises(triton_probe.ProbeError) as raised:
        probe_for(triton, tls=True, validate_certs=False).server_metadata()
    assert raised.value.kind == "tls", raised.value.message


@pytest.mark.parametrize("https_triton", ["mutual"], indirect=True)
def test_mutual_tls_sends_the_client_certificate(https_triton, certs):
    probe = probe_for(https_triton, tls=True, ca_cert=certs["ca.pem"], client_cert=certs["client.pem"],
                      client_key=certs["client.key"])
    assert probe.server_ready() is True and probe.server_metadata() == METADATA
    subject = dict(item[0] for item in https_triton.requests[-1]["client_cert"]["subject"])
    assert subject["commonName"] == "gate-client"
    with pytest.raises(triton_probe.ProbeError) as raised:  # no client certificate: refused in the handshake
        probe_for(https_triton, tls=True, ca_cert=certs["ca.pem"]).server_metadata()
    assert raised.value.kind in ("tls", "connection_refused"), raised.value.message
