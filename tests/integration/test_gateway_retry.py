# SPDX-License-Identifier: Apache-2.0
"""The gateway role's haproxy.cfg (rendered as the role renders it, tests/unit/roles/gateway/render.yml)
run by the real HAProxy over two serving hosts on loopback ports: what a client sees when a server
dies under its request before the health check has noticed (both hosts' health ports stay up here,
so HAProxy keeps sending to the dying one the whole time).

- A server that closes a request without a byte of answer: the request goes to the other server,
  body and all, and the client never sees it fail (issue 16: a rolling update drops no request).
- A server that started answering and then died: the request is not sent again (a replayed
  generation would stream a second answer after part of the first); the client sees the cut."""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "roles"))
from role_render import checker, gateway_config_here  # noqa: E402  pylint: disable=wrong-import-position,import-error

HAPROXY, pytestmark = checker("haproxy", "haproxy")
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "the sea " * 50}], "stream": True}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server(http.server.ThreadingHTTPServer):
    """One port of a serving host. behaviour: 'ready' answers GET /v2/health/ready 200 (the KServe
    port the gateway checks), 'answer' streams a whole answer, 'close' reads the request and closes
    without a byte, 'cut' starts a streamed answer and closes halfway. Records each request's body."""

    daemon_threads = True

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # pylint: disable=arguments-differ
            pass

        def do_GET(self):  # noqa: N802 (the handler's protocol)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):  # noqa: N802 (the handler's protocol)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.server.bodies.append(body)
            if self.server.behaviour == "close":
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index in range(3):
                data = b"data: {\"token\": %d}\n\n" % index
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                if self.server.behaviour == "cut":
                    self.close_connection = True
                    return
            self.wfile.write(b"0\r\n\r\n")

    def __init__(self, behaviour):
        super().__init__(("127.0.0.1", free_port()), self.Handler)
        self.behaviour, self.bodies = behaviour, []
        threading.Thread(target=self.serve_forever, daemon=True).start()


def show_stat(admin):
    """The admin socket's `show stat` (empty while HAProxy has not opened it yet)."""
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(admin))
            client.sendall(b"show stat\n")
            return b"".join(iter(lambda: client.recv(65536), b"")).decode()
    except OSError:
        return ""


@pytest.fixture(name="gateway")
def fixture_gateway(tmp_path):
    """Starts HAProxy on the role's configuration for hosts gpu-good and gpu-bad (their behaviour
    given by the test); yields (OpenAI endpoint URL, {host: openai port server})."""
    started = []

    def start(bad_behaviour):
        servers = {"gpu-good": Server("answer"), "gpu-bad": Server(bad_behaviour)}
        health = {name: Server("ready") for name in servers}
        started.extend(list(servers.values()) + list(health.values()))
        hosts = {name: {"ansible_host": "127.0.0.1", "triton_server_openai_enabled": True,
                        "triton_server_http_port": health[name].server_address[1],
                        "triton_server_openai_port": servers[name].server_address[1]} for name in servers}
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(json.dumps({"all": {"children": {"triton_gateway": {"hosts": {"gw": {}}},
                                                              "triton_servers": {"hosts": hosts}}}}))
        port = free_port()
        settings = {"gateway_listen_address": "127.0.0.1", "gateway_http_port": free_port(), "gateway_openai_enabled": True,
                    "gateway_openai_port": port, "gateway_health_interval": "1s"}
        out = tmp_path / "haproxy.cfg"
        subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                        str(ROOT / "tests" / "unit" / "roles" / "gateway" / "render.yml"), "-e", f"out={out}",
                        "-e", json.dumps(settings)], check=True, capture_output=True, cwd=ROOT,
                       env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".ansible" / "collections")))
        out.write_text(gateway_config_here(out.read_text(), tmp_path))
        process = subprocess.Popen([HAPROXY, "-db", "-f", str(out)])  # pylint: disable=consider-using-with
        started.append(process)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        deadline = time.monotonic() + 20
        while True:  # both servers UP: the stat socket says so once the first checks passed
            assert process.poll() is None, "haproxy exited"
            state = show_stat(tmp_path / "admin.sock")
            if sum(1 for line in state.splitlines() if line.startswith("triton_openai,gpu-") and ",UP," in line) == 2:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        return url, servers

    yield start
    for thing in started:
        if isinstance(thing, subprocess.Popen):
            thing.terminate()
            thing.wait()
        else:
            thing.shutdown()


def test_a_request_a_dying_server_closed_unanswered_is_answered_by_another(gateway):
    url, servers = gateway("close")
    answers = [requests.post(url, json=CHAT, timeout=10) for attempt in range(20)]
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
    assert all(a.text.count("data:") == 3 for a in answers)
    assert servers["gpu-bad"].bodies, "no request reached the dying server: the test proves nothing"
    # each retried request reached the good server whole, body and all
    assert len(servers["gpu-good"].bodies) == 20
    assert {json.loads(body)["messages"][0]["content"] for body in servers["gpu-good"].bodies} == {"the sea " * 50}


def test_an_answer_once_started_is_never_replayed(gateway):
    url, servers = gateway("cut")
    cut = 0
    for attempt in range(20):
        try:
            requests.post(url, json=CHAT, timeout=10)
        except requests.exceptions.ChunkedEncodingError:
            cut += 1
    assert cut == len(servers["gpu-bad"].bodies) > 0
    # every request reached exactly one server: none was sent again after its answer had started
    assert len(servers["gpu-good"].bodies) + len(servers["gpu-bad"].bodies) == 20
