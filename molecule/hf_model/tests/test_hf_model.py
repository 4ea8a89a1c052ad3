"""State of the hosts after the download-once converge (and its idempotence run)."""

import json
import os
import urllib.request

import pytest

TOKEN = "hf_test_read"
DOUBLE = "http://127.0.0.1:%s" % os.environ.get("HF_HUB_DOUBLE_PORT", "18310")
MODELS = {"tiny-llm": "onprem-test/tiny-llm", "gated-llm": "onprem-test/gated-llm"}


def manifest_of(host, name):
    return json.loads(host.file("/opt/models/%s/.hf_model_manifest.json" % name).content_string)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_is_a_symlink_to_a_verified_version(host, name):
    link = host.file("/opt/models/" + name)
    assert link.is_symlink
    manifest = manifest_of(host, name)
    assert link.linked_to.startswith("/opt/models/.versions/%s@%s-" % (name, manifest["commit_sha"]))
    assert manifest["repo_id"] == MODELS[name]
    assert manifest["files"]
    for entry in manifest["files"]:
        path = "/opt/models/%s/%s" % (name, entry["path"])
        served = host.file(path)
        assert served.is_file and served.size == entry["size"]
        assert served.mode == 0o644 and served.user == "root"
        assert host.check_output("sha256sum %s" % path).split()[0] == entry["sha256"]


def test_filters_applied(host):
    files = [f["path"] for f in manifest_of(host, "tiny-llm")["files"]]
    assert "model-00001-of-00002.safetensors" in files
    assert not any(f.startswith("original/") for f in files)
    assert all(f.endswith((".safetensors", ".json")) for f in [f["path"] for f in manifest_of(host, "gated-llm")["files"]])


def test_no_staging_left_and_dirs_readable(host):
    assert host.check_output("find /opt/models/.staging -mindepth 1 ! -name .lock") == ""
    assert host.file("/opt/models").mode == 0o755
    assert host.file("/opt/models/.versions").mode == 0o755


def test_token_absent_from_files_and_journal(host):
    found = host.run("grep -rIl --exclude-dir=proc --exclude-dir=sys -e %s /opt /etc /root /tmp /var/log /var/tmp" % TOKEN)
    assert found.stdout == "", found.stdout
    journal = host.run("journalctl --no-pager -o cat")
    assert journal.rc == 0
    assert "operation=install" in journal.stdout  # hf_model_sync logged its invocations ...
    assert TOKEN not in journal.stdout  # ... and the receivers never even got the token


def test_token_absent_from_controller_copy():
    controller_dir = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "hf_model_controller")
    manifests = 0
    for base, _dirs, names in os.walk(controller_dir):
        for name in names:
            with open(os.path.join(base, name), "rb") as handle:
                assert TOKEN.encode() not in handle.read(), os.path.join(base, name)
            manifests += name == ".hf_model_manifest.json"
    assert manifests == 2


def test_hub_served_each_file_once():
    with urllib.request.urlopen(DOUBLE + "/_stats") as response:
        stats = json.load(response)
    downloaded = stats["get"]
    assert downloaded, "the double served nothing"
    assert set(downloaded.values()) == {1}, downloaded
    # tiny-llm without original/ (6 files) and gated-llm's json + safetensors files (5)
    assert len(downloaded) == 11, sorted(downloaded)


def _copies():
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "hf_model_copies.jsonl")
    with open(path) as handle:
        return dict((line["host"], line) for line in map(json.loads, handle))


def test_controller_sent_one_copy_and_the_others_pulled_from_a_peer():
    """hf_model_controller_copies 1: the controller sends to the first host only; the second
    and third pull from it (round 0: position 1 from 0; round 1: position 2 from 0)."""
    copies = _copies()
    assert sorted(copies) == ["hf-model-1", "hf-model-2", "hf-model-3"], copies
    assert copies["hf-model-1"]["received_from"] == ["controller"]
    assert copies["hf-model-2"]["received_from"] == ["peer hf-model-1"]
    assert copies["hf-model-3"]["received_from"] == ["peer hf-model-1"]
    # what hf-model-1 served is the two copies twice (both models, to two peers), manifests included
    sent = copies["hf-model-1"]["bytes_sent"]
    assert sent > 0 and copies["hf-model-2"]["bytes_sent"] == 0 and copies["hf-model-3"]["bytes_sent"] == 0


@pytest.mark.parametrize("port", [18321, 18322, 18323])
def test_no_host_serves_after_the_run(host, port):
    assert not host.socket("tcp://127.0.0.1:%d" % port).is_listening
