"""Logic of hf_model_sync: selection, verification, manifest comparison, atomic switch."""

import hashlib
import json
import os
import shutil
import sys
from types import SimpleNamespace

import pytest

# The checkout is the collection; scripts/setup.sh links it as .ansible/collections/ansible_collections/onprem/triton.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".ansible", "collections"))

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.onprem.triton.plugins.module_utils import hf_model as hf
from ansible_collections.onprem.triton.plugins.modules import hf_model_sync

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Stands in for HfApi + hf_hub_download; records what was fetched."""

    def __init__(self):
        self.commits = {}
        self.refs = {}
        self.fetched = []
        self.api_calls = 0
        self.corrupt = set()
        self.errors = []  # raised by model_info, first one first

    def add(self, ref, sha, files):
        self.commits[sha] = files
        self.refs[ref] = sha

    def api_factory(self, endpoint, token):
        return self

    def model_info(self, repo_id, revision=None, files_metadata=False):
        self.api_calls += 1
        if self.errors:
            raise self.errors.pop(0)
        sha = self.refs.get(revision, revision)
        siblings = []
        for name, data in sorted(self.commits[sha].items()):
            lfs = None
            if name.endswith(".safetensors"):
                lfs = SimpleNamespace(size=len(data), sha256=hashlib.sha256(data).hexdigest())
            siblings.append(SimpleNamespace(rfilename=name, size=len(data), blob_id=blob_id(data), lfs=lfs))
        return SimpleNamespace(sha=sha, siblings=siblings)

    def download(self, repo_id, filename, revision, local_dir, endpoint, token):
        self.fetched.append(filename)
        data = self.commits[revision][filename]
        if filename in self.corrupt:
            data = data[:-1] + b"X"
        path = os.path.join(local_dir, filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)


FILES_A = {"config.json": b'{"a": 1}', "model.safetensors": b"A" * 4096, "original/x.pth": b"P" * 100}
FILES_B = {"config.json": b'{"a": 2}', "model.safetensors": b"B" * 4096, "original/x.pth": b"Q" * 100}


@pytest.fixture
def hub():
    fake = FakeHub()
    fake.add("main", COMMIT_A, FILES_A)
    fake.add("next", COMMIT_B, FILES_B)
    return fake


def params(models_dir, **extra):
    base = {"name": "tiny", "models_dir": str(models_dir), "operation": "download", "repo_id": "o/tiny",
            "revision": "main", "allow_patterns": None, "ignore_patterns": ["original/*"], "token": "hf_secret",
            "endpoint": None, "offline": False, "commit_sha": None, "version": None, "total_bytes": 0,
            "min_free_bytes": 0,
            "keep_versions": 1, "keep_referenced_in": []}
    base.update(extra)
    return base


def sync(hub, models_dir, check_mode=False, **extra):
    return hf.ModelSync(params(models_dir, **extra), check_mode=check_mode,
                        api_factory=hub.api_factory, downloader=hub.download).run()


# --- pure helpers ---------------------------------------------------------

@pytest.mark.parametrize("allow,ignore,expected", [
    (None, None, ["a.json", "model.safetensors", "original/x.pth"]),
    (["*.safetensors"], None, ["model.safetensors"]),
    (None, ["original/"], ["a.json", "model.safetensors"]),
    (["*.json", "original/*"], ["*.pth"], ["a.json"]),
])
def test_select_files(allow, ignore, expected):
    siblings = [{"path": p} for p in ("original/x.pth", "model.safetensors", "a.json")]
    assert [f["path"] for f in hf.select_files(siblings, allow, ignore)] == expected


def test_select_files_rejects_path_escape():
    with pytest.raises(hf.SyncError, match="unsafe"):
        hf.select_files([{"path": "../etc/passwd"}])


def test_verify_file_checks_size_sha256_and_blob_id(tmp_path):
    (tmp_path / "f").write_bytes(b"hello")
    good = {"path": "f", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    assert hf.verify_file(str(tmp_path), good)[0] is None
    assert "bytes" in hf.verify_file(str(tmp_path), dict(good, size=6))[0]
    assert "sha256" in hf.verify_file(str(tmp_path), dict(good, sha256="0" * 64))[0]
    assert hf.verify_file(str(tmp_path), {"path": "f", "size": 5, "blob_id": blob_id(b"hello")})[0] is None
    assert "blob id" in hf.verify_file(str(tmp_path), {"path": "f", "size": 5, "blob_id": "0" * 40})[0]
    assert "missing" in hf.verify_file(str(tmp_path), {"path": "g", "size": 1})[0]


def test_check_space_names_the_variable(tmp_path):
    with pytest.raises(hf.SyncError, match="hf_model_min_free_bytes"):
        hf.check_space(str(tmp_path), 1 << 62, 0)
    assert hf.check_space(str(tmp_path), 1, 0) > 0


# --- the sync ------------------------------------------------------------

def test_first_sync_downloads_verifies_and_links(hub, tmp_path):
    result = sync(hub, tmp_path)
    assert result["changed"] and result["commit_sha"] == COMMIT_A
    assert sorted(hub.fetched) == ["config.json", "model.safetensors"]
    assert result["bytes_downloaded"] == result["total_bytes"] == 4096 + 8
    link = tmp_path / "tiny"
    assert os.readlink(str(link)) == ".versions/tiny@" + result["version"]
    assert result["version"].startswith(COMMIT_A + "-")
    manifest = json.loads((link / hf.MANIFEST_NAME).read_text())
    assert manifest["commit_sha"] == COMMIT_A and "hf_secret" not in json.dumps(manifest)
    assert manifest["files"][1]["sha256"] == hashlib.sha256(FILES_A["model.safetensors"]).hexdigest()
    assert oct(os.stat(str(link / "model.safetensors")).st_mode & 0o777) == "0o644"
    assert not (link / ".cache").exists()


def test_unchanged_rerun_downloads_nothing(hub, tmp_path):
    sync(hub, tmp_path)
    hub.fetched = []
    result = sync(hub, tmp_path)
    assert not result["changed"] and result["bytes_downloaded"] == 0 and hub.fetched == []


def test_changed_selection_on_the_same_commit_syncs_again(hub, tmp_path):
    first = sync(hub, tmp_path)
    second = sync(hub, tmp_path, ignore_patterns=None)
    assert second["changed"] and second["commit_sha"] == first["commit_sha"]
    assert second["version"] != first["version"] and "original/x.pth" in second["files"]
    assert (tmp_path / "tiny" / "original" / "x.pth").read_bytes() == FILES_A["original/x.pth"]
    assert not sync(hub, tmp_path, ignore_patterns=None)["changed"]


def test_pinned_commit_needs_no_hub_call(hub, tmp_path):
    sync(hub, tmp_path, revision=COMMIT_A)
    calls = hub.api_calls
    assert not sync(hub, tmp_path, revision=COMMIT_A)["changed"]
    assert hub.api_calls == calls


def test_check_mode_reports_and_touches_nothing(hub, tmp_path):
    result = sync(hub, tmp_path, check_mode=True)
    assert result["changed"] and result["would_download"] == ["config.json", "model.safetensors"]
    assert result["bytes_to_download"] == 4104
    assert os.listdir(str(tmp_path)) == [] and hub.fetched == []


def test_new_revision_switches_and_keeps_one_previous(hub, tmp_path):
    sync(hub, tmp_path)
    result = sync(hub, tmp_path, revision="next")
    assert result["changed"] and result["commit_sha"] == COMMIT_B
    assert (tmp_path / "tiny" / "model.safetensors").read_bytes() == FILES_B["model.safetensors"]
    assert [d[5:45] for d in sorted(os.listdir(str(tmp_path / ".versions")))] == [COMMIT_A, COMMIT_B]
    hub.add("main", "c" * 40, FILES_A)
    sync(hub, tmp_path)
    assert [d[5:45] for d in sorted(os.listdir(str(tmp_path / ".versions")))] == [COMMIT_B, "c" * 40]


def _versions(models_dir):
    return [d[5:45] for d in sorted(os.listdir(str(models_dir / ".versions")))]


def test_a_copy_a_kept_repository_generation_serves_is_never_pruned(hub, tmp_path):
    """The pruning hole: A served and last-good, B synced but its gate failed (rolled back to
    A's generation), C synced for the next attempt. Pruning by age kept B and removed A, the
    weights the running server and its rollback target read."""
    # the generation is one of another server instance's repository (<root>-<instance>)
    models, repository = tmp_path / "models", tmp_path / "repository-gpu23"
    models.mkdir()
    sync(hub, models)
    generation = repository / "generations" / "0001" / "tiny_llm" / "1"
    generation.mkdir(parents=True)
    (generation / "model.json").write_text('{"model": "%s"}' % os.path.realpath(str(models / "tiny")))
    sync(hub, models, revision="next", keep_referenced_in=[str(tmp_path / "repository") + "*"])
    hub.add("main", "c" * 40, FILES_A)
    result = sync(hub, models, keep_referenced_in=[str(tmp_path / "repository") + "*"])
    assert _versions(models) == [COMMIT_A, COMMIT_B, "c" * 40]
    assert "kept " in result["msg"] and COMMIT_A in result["msg"], result["msg"]
    # once no generation reads it, the age rule applies again
    (generation / "model.json").write_text("{}")
    hub.add("main", "d" * 40, FILES_A)
    sync(hub, models, keep_referenced_in=[str(tmp_path / "repository") + "*"])
    assert _versions(models) == ["c" * 40, "d" * 40]


def test_corrupt_download_keeps_the_served_copy(hub, tmp_path):
    sync(hub, tmp_path)
    hub.corrupt.add("model.safetensors")
    with pytest.raises(hf.SyncError, match="sha256"):
        sync(hub, tmp_path, revision="next")
    assert os.readlink(str(tmp_path / "tiny")).startswith(".versions/tiny@" + COMMIT_A)
    assert (tmp_path / "tiny" / "model.safetensors").read_bytes() == FILES_A["model.safetensors"]
    assert not (tmp_path / ".staging" / ("tiny@" + COMMIT_B) / "model.safetensors").exists()
    hub.corrupt.clear()
    assert sync(hub, tmp_path, revision="next")["commit_sha"] == COMMIT_B


def test_hub_errors_become_sync_errors(hub, tmp_path):
    hub.errors.append(RuntimeError("connection refused"))
    with pytest.raises(hf.SyncError, match="cannot reach the Hub"):
        sync(hub, tmp_path)


def test_no_matching_files(hub, tmp_path):
    with pytest.raises(hf.SyncError, match="allow_patterns"):
        sync(hub, tmp_path, allow_patterns=["*.gguf"])


@pytest.mark.parametrize("extra,message", [
    ({"name": "../x"}, "plain directory name"),
    ({"models_dir": "relative"}, "absolute"),
    ({"operation": "plan", "commit_sha": "main"}, "40-character"),
])
def test_bad_input(hub, tmp_path, extra, message):
    values = params(extra.pop("models_dir", tmp_path), **extra)
    with pytest.raises(hf.SyncError, match=message):
        hf.ModelSync(values, api_factory=hub.api_factory, downloader=hub.download).run()


def test_unmanaged_directory_is_not_replaced(hub, tmp_path):
    (tmp_path / "tiny").mkdir()
    with pytest.raises(hf.SyncError, match="not managed"):
        sync(hub, tmp_path)


def test_offline(hub, tmp_path):
    with pytest.raises(hf.SyncError, match="HF_HUB_OFFLINE"):
        sync(hub, tmp_path, offline=True)
    sync(hub, tmp_path)
    calls = hub.api_calls
    result = sync(hub, tmp_path, offline=True)
    assert not result["changed"] and hub.api_calls == calls


def test_plan_and_install_for_receivers(hub, tmp_path):
    source = tmp_path / "controller"
    host = tmp_path / "host"
    sent = sync(hub, source)
    plan = hf.ModelSync(params(host, operation="plan", commit_sha=COMMIT_A, version=sent["version"],
                               total_bytes=sent["total_bytes"])).run()
    assert plan["needed"] and not plan["changed"]
    os.makedirs(os.path.dirname(plan["staging_path"]))
    shutil.copytree(sent["version_path"], plan["staging_path"])
    installed = hf.ModelSync(params(host, operation="install", commit_sha=COMMIT_A, version=sent["version"])).run()
    assert installed["changed"] and installed["files"] == sent["files"]
    again = hf.ModelSync(params(host, operation="plan", commit_sha=COMMIT_A, version=sent["version"])).run()
    assert not again["needed"]
    assert not hf.ModelSync(params(host, operation="install", commit_sha=COMMIT_A,
                                   version=sent["version"])).run()["changed"]
    other = hf.version_key(COMMIT_A, ["config.json"])
    assert hf.ModelSync(params(host, operation="plan", commit_sha=COMMIT_A, version=other)).run()["needed"]


def test_install_rejects_a_tampered_transfer(hub, tmp_path):
    sent = sync(hub, tmp_path / "controller")
    host = tmp_path / "host"
    staging = host / ".staging" / ("tiny@" + COMMIT_A)
    shutil.copytree(sent["version_path"], str(staging))
    (staging / "model.safetensors").write_bytes(b"Z" * 4096)
    with pytest.raises(hf.SyncError, match="sha256"):
        hf.ModelSync(params(host, operation="install", commit_sha=COMMIT_A)).run()
    assert not (host / "tiny").exists()


# --- the module entry point -----------------------------------------------

class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


@pytest.fixture
def module_run(monkeypatch):
    def exit_json(self, **kwargs):
        raise ExitJson(kwargs)

    def fail_json(self, **kwargs):
        raise FailJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(args):
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
        hf_model_sync.main()
    return run


def test_main_requires_repo_id_for_download(module_run, tmp_path):
    with pytest.raises(FailJson) as failure:
        module_run({"name": "tiny", "models_dir": str(tmp_path)})
    assert "repo_id" in failure.value.args[0]["msg"]


def test_main_reports_sync_errors_with_the_model_name(module_run, tmp_path):
    with pytest.raises(FailJson) as failure:
        module_run({"name": "tiny", "models_dir": str(tmp_path), "repo_id": "o/t", "offline": True,
                    "token": "hf_secret"})
    assert failure.value.args[0]["msg"].startswith("tiny: offline")
    assert "hf_secret" not in json.dumps(failure.value.args[0])


def test_token_is_no_log():
    assert hf_model_sync.ARGUMENT_SPEC["token"]["no_log"] is True
