# SPDX-License-Identifier: Apache-2.0
"""The gateway role's drain and undrain entry points (what playbooks/serve.yml runs around a
server's restart) against a real HAProxy started here: its admin socket in tmp_path, one
backend per serving host, no listening port (the servers' health checks off). The serving
hosts and the gateway are this machine (connection local)."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
import http.server
import socket as socket_module

import pytest

REPO = Path(__file__).resolve().parents[2]
HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None and os.environ.get("CI") != "true",
                                reason="haproxy missing: apt-get install haproxy (the test command installs it)")
SERVERS = ["gpu-a", "gpu-b"]


def free_port():
    with socket_module.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlowServer(http.server.ThreadingHTTPServer):
    """A backend that answers each request after `delay` seconds: a request in flight."""

    delay = 0.0

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the handler's protocol)
            time.sleep(self.server.delay)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):  # pylint: disable=arguments-differ
            pass

    def __init__(self, port=None):
        super().__init__(("127.0.0.1", port or free_port()), self.Handler)


@pytest.fixture(name="gateway")
def fixture_gateway(tmp_path):
    """HAProxy on a free loopback port, gpu-a a slow backend, gpu-b a closed port; yields
    (admin socket, frontend address, the slow server)."""
    backend = SlowServer()
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    admin = tmp_path / "admin.sock"
    frontend = f"127.0.0.1:{free_port()}"
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"global\n    stats socket {admin} mode 600 level admin\ndefaults\n    mode http\n"
                      f"    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n"
                      f"frontend triton_http\n    bind {frontend}\n    default_backend triton_http\n"
                      f"backend triton_http\n    server gpu-a 127.0.0.1:{backend.server_address[1]}\n"
                      f"    server gpu-b 127.0.0.1:9 disabled\n", encoding="utf-8")
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)])  # pylint: disable=consider-using-with
    deadline = time.monotonic() + 10
    while not admin.exists():
        assert time.monotonic() < deadline and process.poll() is None, "haproxy did not start"
        time.sleep(0.1)
    yield admin, frontend, backend
    process.terminate()
    process.wait()
    backend.shutdown()


def in_flight_request(frontend):
    """Starts one request through the gateway (gpu-a carries it) and returns its thread."""
    def send():
        try:
            with urllib.request.urlopen(f"http://{frontend}/", timeout=60) as answer:
                answer.read()
        except OSError:
            pass  # cut when the test ends before the slow server answers

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def states(socket):
    out = subprocess.run(["socat", "stdio", f"UNIX-CONNECT:{socket}"], input="show stat\n", capture_output=True,
                         text=True, check=True).stdout
    return {f[1]: f[17] for f in (line.split(",") for line in out.splitlines() if line and line[0] != "#")
            if f[1] in SERVERS}


def run(tmp_path, socket, entry_point, host, drain_timeout=4, undrain_timeout=60):
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"vars": {"ansible_connection": "local",
                                                      "ansible_python_interpreter": sys.executable},
                                             "children": {"triton_gateway": {"hosts": {"gw-1": {}}},
                                                          "triton_servers": {"hosts": {h: {} for h in SERVERS}}}}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text(f"- hosts: {host}\n  gather_facts: false\n  tasks:\n"
                        f"    - ansible.builtin.include_role:\n        name: onprem.triton.gateway\n"
                        f"        tasks_from: {entry_point}\n", encoding="utf-8")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".ansible" / "collections"), ANSIBLE_NOCOLOR="1")
    done = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(playbook),
                           "-e", json.dumps({"_gateway_admin_socket": str(socket), "gateway_drain_timeout": drain_timeout,
                                             "gateway_undrain_timeout": undrain_timeout})],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_drain_takes_only_that_host_out_and_undrain_puts_it_back_once(tmp_path, gateway):
    admin, _frontend, _backend = gateway
    assert states(admin) == {"gpu-a": "no check", "gpu-b": "MAINT"}
    out = run(tmp_path, admin, "drain", "gpu-a")
    assert states(admin) == {"gpu-a": "DRAIN", "gpu-b": "MAINT"}
    assert "request(s) still in flight" not in out
    out = run(tmp_path, admin, "undrain", "gpu-a")
    assert states(admin) == {"gpu-a": "no check", "gpu-b": "MAINT"}
    assert "changed=1" in out
    # already in: nothing to change
    assert "changed=0" in run(tmp_path, admin, "undrain", "gpu-a")


def test_drain_waits_for_the_request_in_flight_to_finish(tmp_path, gateway):
    admin, frontend, backend = gateway
    backend.delay = 3
    request = in_flight_request(frontend)
    time.sleep(0.5)
    started = time.monotonic()
    out = run(tmp_path, admin, "drain", "gpu-a", drain_timeout=30)
    waited = time.monotonic() - started
    request.join(timeout=10)
    assert not request.is_alive()
    assert "request(s) still in flight" not in out
    assert 2 <= waited < 30, waited


def test_the_drain_wait_is_bounded_and_says_what_was_left_in_flight(tmp_path, gateway):
    admin, frontend, backend = gateway
    backend.delay = 20
    in_flight_request(frontend)
    time.sleep(0.5)
    started = time.monotonic()
    out = run(tmp_path, admin, "drain", "gpu-a", drain_timeout=3)
    assert time.monotonic() - started < 15
    assert "gpu-a: 1 request(s) still in flight on gateway gw-1 after gateway_drain_timeout (3 s); going ahead." in out


def test_a_gateway_not_deployed_yet_is_left_alone(tmp_path):
    # site.yml's serving play runs before playbooks/gateway.yml: no HAProxy, nothing to drain
    missing = tmp_path / "no-haproxy-here.sock"
    for entry_point in ("drain", "undrain"):
        out = run(tmp_path, missing, entry_point, "gpu-a")
        assert "changed=0" in out and "failed=0" in out


@pytest.fixture(name="checked_gateway")
def fixture_checked_gateway(tmp_path):
    """HAProxy whose gpu-a is health-checked (every 200 ms, up after 2 passes) on a port where
    nothing listens yet: a host on its way back after a restart. Yields (admin socket, port)."""
    port = free_port()
    admin = tmp_path / "admin.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"global\n    stats socket {admin} mode 600 level admin\ndefaults\n    mode http\n"
                      f"    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    timeout check 1s\n"
                      f"backend triton_http\n    server gpu-a 127.0.0.1:{port} check inter 200ms rise 2 fall 1\n",
                      encoding="utf-8")
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)])  # pylint: disable=consider-using-with
    deadline = time.monotonic() + 10
    while not admin.exists():
        assert time.monotonic() < deadline and process.poll() is None, "haproxy did not start"
        time.sleep(0.1)
    yield admin, port
    process.terminate()
    process.wait()


def test_undrain_waits_until_the_gateway_sees_the_host_up(tmp_path, checked_gateway):
    """The next host of a rolling update drains only once this one takes requests again: undrain
    returns when the health check has passed (rise), not when the state was set."""
    admin, port = checked_gateway
    run(tmp_path, admin, "drain", "gpu-a")
    assert states(admin) == {"gpu-a": "DOWN"}  # drained, and its server not answering yet
    backend = []
    threading.Timer(3, lambda: backend.append(SlowServer(port)) or threading.Thread(
        target=backend[0].serve_forever, daemon=True).start()).start()
    started = time.monotonic()
    out = run(tmp_path, admin, "undrain", "gpu-a", undrain_timeout=30)
    waited = time.monotonic() - started
    try:
        assert states(admin) == {"gpu-a": "UP"}, out[-2000:]
        assert 2.5 < waited < 30, waited
        assert "not UP on gateway" not in out
    finally:
        if backend:
            backend[0].shutdown()


def test_the_undrain_wait_is_bounded_and_says_so(tmp_path, checked_gateway):
    admin, _port = checked_gateway
    run(tmp_path, admin, "drain", "gpu-a")
    started = time.monotonic()
    out = run(tmp_path, admin, "undrain", "gpu-a", undrain_timeout=2)
    assert time.monotonic() - started < 20
    assert states(admin)["gpu-a"] == "DOWN"
    assert ("gpu-a: 1 of its servers not UP on gateway gw-1 after gateway_undrain_timeout (2 s); going ahead"
            in " ".join(out.split())), out[-2000:]


def test_undrain_takes_back_a_host_whose_check_has_not_passed_yet(tmp_path, checked_gateway):
    """A drained server still down when undrain runs (show stat says DOWN, not DRAIN) is put back
    all the same: once its health check passes it takes requests, with no second undrain."""
    admin, port = checked_gateway
    run(tmp_path, admin, "drain", "gpu-a")
    run(tmp_path, admin, "undrain", "gpu-a", undrain_timeout=1)
    assert states(admin) == {"gpu-a": "DOWN"}
    backend = SlowServer(port)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    try:
        deadline = time.monotonic() + 15
        while states(admin)["gpu-a"] != "UP":
            assert time.monotonic() < deadline, states(admin)  # DRAIN: left out of the gateway
            time.sleep(0.2)
    finally:
        backend.shutdown()
