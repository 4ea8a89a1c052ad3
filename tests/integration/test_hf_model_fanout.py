"""The hf_model role's controller fan-out as a tree, run by ansible-playbook against local "hosts"
(each its own hf_model_dir and peer port on loopback) and the Hub double: who sent what to whom,
a host whose peer fails falls back to the controller, a lost copy is re-sent by a peer."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from tests.integration.hf_model_local_hosts import PLAYBOOK, write_inventory

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_SPEC = importlib.util.spec_from_file_location("hf_hub_double", os.path.join(ROOT, "tests/fixtures/hf_hub/server.py"))
hub_double = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(hub_double)
HUB_PORT = 18350
PEER_PORT = 18351  # + the host's index


@pytest.fixture(scope="module")
def hub():
    proc = hub_double.spawn(HUB_PORT, "--lfs-mb", "2")
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def run(tmp_path, hosts):
    (tmp_path / "report").mkdir(exist_ok=True)
    inventory = write_inventory(tmp_path / "inventory.yml", tmp_path, hosts, "http://127.0.0.1:%d" % HUB_PORT,
                                PEER_PORT, hf_model_fanout="controller")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"),
               HF_HOME=str(tmp_path / "hf_home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "local_tmp"))
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory, PLAYBOOK],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    report = {}
    for index in range(hosts):
        path = tmp_path / "report" / ("host%d.json" % index)
        report["host%d" % index] = json.loads(path.read_text())["tiny-llm"]
        path.unlink()
    return report, proc.stdout


def served_manifest(tmp_path, index):
    return json.loads((tmp_path / ("host%d" % index) / "models" / "tiny-llm" / ".hf_model_manifest.json").read_text())


def test_a_tree_the_controller_sends_once_and_a_lost_copy_comes_from_a_peer(hub, tmp_path):
    report, _out = run(tmp_path, 4)
    # round 0: host1 from host0; round 1: host2 from host0, host3 from host1 (a host that got it from a peer)
    assert [report["host%d" % i]["received_from"] for i in range(4)] == \
        ["controller", "peer host0", "peer host0", "peer host1"]
    size = report["host0"]["bytes"]
    assert report["host0"]["bytes_sent_to_peers"] >= 2 * size and report["host1"]["bytes_sent_to_peers"] >= size
    commits = set(served_manifest(tmp_path, i)["commit_sha"] for i in range(4))
    assert len(commits) == 1

    again, _out = run(tmp_path, 4)
    assert all(host["received_from"] == "" and host["bytes_sent_to_peers"] == 0 for host in again.values())

    # host2 loses its copy: a host that holds it sends it, not the controller
    import shutil
    shutil.rmtree(tmp_path / "host2")
    lost, _out = run(tmp_path, 4)
    assert lost["host2"]["received_from"] == "peer host0"
    assert [lost["host%d" % i]["received_from"] for i in (0, 1, 3)] == ["", "", ""]
    assert served_manifest(tmp_path, 2)["commit_sha"] in commits


@pytest.fixture
def broken_peer_port():
    """Something else listens on host0's peer port and drops every connection: host0 cannot serve,
    and a pull from it fails at once."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", PEER_PORT))
    listener.listen(16)
    stop = threading.Event()

    def drop():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _address = listener.accept()
                connection.close()
            except socket.timeout:
                continue

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)
    listener.close()


def test_hosts_whose_peer_fails_get_their_copy_from_the_controller(hub, tmp_path, broken_peer_port):
    report, out = run(tmp_path, 3)
    assert report["host0"]["received_from"] == "controller"
    # host1 (round 0) and host2 (round 1) pull from host0, fail, and the controller sends theirs
    assert report["host1"]["received_from"] == "controller" and report["host2"]["received_from"] == "controller"
    assert "while pulling" in out or "peer http://127.0.0.1:%d" % PEER_PORT in out
    for index in range(3):
        assert served_manifest(tmp_path, index)["name"] == "tiny-llm"
        assert not any((tmp_path / ("host%d" % index) / "models" / ".staging").glob("tiny-llm@*"))
