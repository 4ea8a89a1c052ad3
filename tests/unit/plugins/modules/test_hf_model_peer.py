"""hf_model_peer: a host serves its verified copy, another pulls, verifies and switches; every
refusal (token, manifest, files not served, a range it does not serve) and a resumed pull."""

import hashlib
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".ansible", "collections"))

from ansible_collections.onprem.triton.plugins.module_utils import hf_model as hf
from ansible_collections.onprem.triton.plugins.module_utils import hf_model_peer as peer
from ansible_collections.onprem.triton.plugins.modules import hf_model_peer as module

from test_hf_model_sync import FakeHub, FILES_A, COMMIT_A, sync  # noqa: E402 - same folder

TOKEN = "run-token-0123456789"


@pytest.fixture
def source(tmp_path):
    """A host holding a verified copy (synced from the Hub stand-in) and serving it on loopback."""
    hub = FakeHub()
    hub.add("main", COMMIT_A, FILES_A)
    models = tmp_path / "source"
    result = sync(hub, models)
    copy = "tiny@" + result["version"]
    server = peer.make_server("127.0.0.1", 0, str(models / ".versions"), [copy], TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    manifest = (models / ".versions" / copy / hf.MANIFEST_NAME).read_bytes()
    yield {"url": "http://127.0.0.1:%d" % server.server_address[1], "server": server, "copy": copy,
           "result": result, "manifest_sha256": hashlib.sha256(manifest).hexdigest(), "models": models}
    server.shutdown()
    server.server_close()


def receive_params(tmp_path, source, **extra):
    params = {"mode": "receive", "models_dir": str(tmp_path / "receiver"), "token": TOKEN, "name": "tiny",
              "commit_sha": source["result"]["commit_sha"], "version": source["result"]["version"],
              "source_url": source["url"], "manifest_sha256": source["manifest_sha256"],
              "keep_versions": 1, "keep_referenced_in": []}
    params.update(extra)
    return params


def test_pull_verifies_switches_and_is_idempotent(tmp_path, source):
    result = module.receive(receive_params(tmp_path, source), check_mode=False)
    assert result["changed"] and result["version"] == source["result"]["version"]
    served = tmp_path / "receiver" / "tiny"
    assert (served / "model.safetensors").read_bytes() == FILES_A["model.safetensors"]
    assert result["bytes_received"] == sum(len(FILES_A[f]) for f in ("config.json", "model.safetensors"))
    again = module.receive(receive_params(tmp_path, source), check_mode=False)
    assert not again["changed"] and again["bytes_received"] == 0
    assert source["server"].stats["bytes_sent"] >= result["bytes_received"]


def test_check_mode_pulls_nothing(tmp_path, source):
    result = module.receive(receive_params(tmp_path, source), check_mode=True)
    assert result["changed"] and not (tmp_path / "receiver" / "tiny").exists()
    assert source["server"].stats["requests"] == 0


def test_a_wrong_token_is_refused(tmp_path, source):
    with pytest.raises(hf.SyncError, match="HTTP 401"):
        module.receive(receive_params(tmp_path, source, token="wrong"), check_mode=False)
    assert source["server"].stats["refused"] == 1 and not (tmp_path / "receiver" / "tiny").exists()


def test_a_manifest_other_than_the_controllers_is_refused(tmp_path, source):
    with pytest.raises(hf.SyncError, match="differs from the controller's"):
        module.receive(receive_params(tmp_path, source, manifest_sha256="0" * 64), check_mode=False)
    assert not (tmp_path / "receiver" / "tiny").exists()


def test_a_corrupt_file_on_the_peer_fails_verification_and_serves_nothing(tmp_path, source):
    target = source["models"] / ".versions" / source["copy"] / "model.safetensors"
    os.chmod(target, 0o644)
    target.write_bytes(b"Z" * len(FILES_A["model.safetensors"]))
    with pytest.raises(hf.SyncError, match="verification failed"):
        module.receive(receive_params(tmp_path, source), check_mode=False)
    assert not os.path.lexists(tmp_path / "receiver" / "tiny")


def test_an_interrupted_pull_resumes(tmp_path, source):
    params = receive_params(tmp_path, source)
    staging = tmp_path / "receiver" / ".staging" / ("tiny@" + params["version"])
    staging.mkdir(parents=True)
    half = FILES_A["model.safetensors"][:1000]
    (staging / "model.safetensors").write_bytes(half)
    result = module.receive(params, check_mode=False)
    assert result["changed"]
    assert result["bytes_received"] == len(FILES_A["config.json"]) + len(FILES_A["model.safetensors"]) - 1000
    assert (tmp_path / "receiver" / "tiny" / "model.safetensors").read_bytes() == FILES_A["model.safetensors"]


@pytest.mark.parametrize("path", [
    "/%s/original/x.pth",          # on disk in no served copy (ignored by the selection): not in the manifest
    "/%s/../../etc/passwd",        # out of the copy
    "/tiny@other/config.json",     # a copy it was not told to serve
])
def test_only_the_manifests_files_are_served(source, path):
    url = source["url"] + (path % source["copy"] if "%s" in path else path)
    with pytest.raises(peer.HTTPError) as error:
        peer.get(url, TOKEN).read()
    assert error.value.code == 404


def test_a_range_it_does_not_serve_is_refused(source):
    url = "%s/%s/config.json" % (source["url"], source["copy"])
    with pytest.raises(peer.HTTPError) as error:
        peer.get(url, TOKEN, headers={"Range": "bytes=0-3"})
    assert error.value.code == 416


def test_serve_stops_on_its_stop_file(tmp_path, source):
    stop = tmp_path / "stop"
    results = {}
    thread = threading.Thread(target=lambda: results.update(peer.serve(
        "127.0.0.1", 0, str(source["models"] / ".versions"), [source["copy"]], TOKEN, str(stop), 30, poll=0.05)))
    thread.start()
    stop.write_text("")
    thread.join(10)
    assert not thread.is_alive() and results["stopped_by"] == "stop file" and results["served"] == [source["copy"]]
