"""hf_model_sync run by Ansible (the real module and the real, unmodified
huggingface_hub client) against the Hub double in tests/fixtures/hf_hub."""

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The Hub double is a script folder, not a package: load it under a name of its own.
_SPEC = importlib.util.spec_from_file_location("hf_hub_double", os.path.join(ROOT, "tests/fixtures/hf_hub/server.py"))
hub_double = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(hub_double)
PORT = 18320
ENDPOINT = "http://127.0.0.1:%d" % PORT
TOKEN = "hf_test_read"


def call(path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(ENDPOINT + path, data=data)) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def hub():
    proc = hub_double.spawn(PORT, "--lfs-mb", "4")
    yield
    proc.terminate()
    proc.wait(10)


@pytest.fixture(autouse=True)
def reset(hub):
    call("/_reset", {})


def ansible_env(tmp_path):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, ".ansible", "collections"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "HF_HOME": str(tmp_path / "hf_home"),
        "ANSIBLE_REMOTE_TMP": str(tmp_path / "remote_tmp"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local_tmp"),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    })
    env.pop("HF_TOKEN", None)
    return env


def module_command(models_dir, check=False, **args):
    params = {"name": "tiny", "repo_id": "onprem-test/tiny-llm", "models_dir": str(models_dir),
              "endpoint": ENDPOINT, "min_free_bytes": 0}
    params.update(args)
    command = [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-i", "localhost,",
               "-c", "local", "-m", "onprem.triton.hf_model_sync", "-a", json.dumps(params)]
    return command + (["--check"] if check else [])


def sync(tmp_path, models_dir, check=False, **args):
    proc = subprocess.run(module_command(models_dir, check, **args), env=ansible_env(tmp_path), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result, proc.stdout + proc.stderr


def kill_processes_mentioning(text):
    killed = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmdline = handle.read().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
            except ProcessLookupError:
                pass
    return killed


def served_ok(models_dir, name="tiny"):
    """The served copy is complete: every file matches its manifest's sha256."""
    root = os.path.join(str(models_dir), name)
    with open(os.path.join(root, ".hf_model_manifest.json")) as handle:
        manifest = json.load(handle)
    for entry in manifest["files"]:
        with open(os.path.join(root, entry["path"]), "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == entry["sha256"], entry["path"]
    return manifest["commit_sha"]


def test_check_then_sync_then_rerun_downloads_nothing(tmp_path):
    models = tmp_path / "models"
    planned, _output = sync(tmp_path, models, check=True, revision="v1.0")
    assert planned["changed"] and "model-00001-of-00002.safetensors" in planned["would_download"]
    assert not models.exists() and call("/_stats")["get"] == {}

    first, _output = sync(tmp_path, models, revision="v1.0", ignore_patterns=["original/*"])
    assert first["changed"] and first["bytes_downloaded"] == first["total_bytes"] > 6 * 1024 * 1024
    assert served_ok(models) == first["commit_sha"]
    gets = call("/_stats")["get"]
    assert set(gets.values()) == {1} and len(gets) == len(first["files"]) == 6

    second, _output = sync(tmp_path, models, revision="v1.0", ignore_patterns=["original/*"])
    assert not second["changed"] and second["bytes_downloaded"] == 0
    assert call("/_stats")["get"] == gets  # not one more byte from the Hub


def test_killed_download_keeps_old_copy_and_next_run_completes(tmp_path):
    models = tmp_path / "models"
    old, _output = sync(tmp_path, models, revision="main")
    new_sha = call("/_commit", {"repo": "onprem-test/tiny-llm", "ref": "main"})["sha"]
    call("/_reset", {})
    call("/_control", {"rate": 2 * 1024 * 1024})  # ~3.5 s for the new revision
    proc = subprocess.Popen(module_command(models, revision="main"), env=ansible_env(tmp_path), cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while call("/_stats")["bytes_sent"] < old["total_bytes"] // 2 and time.time() < deadline:
        time.sleep(0.05)
    # Kill ansible and the module process under it (which runs in a session of its own), mid-file.
    os.killpg(proc.pid, signal.SIGKILL)
    killed = kill_processes_mentioning(str(tmp_path / "remote_tmp"))
    proc.wait(10)
    assert killed, "the module process was not found"
    sent_before_kill = call("/_stats")["bytes_sent"]
    assert 0 < sent_before_kill < old["total_bytes"]
    assert served_ok(models) == old["commit_sha"]  # the old copy is still the one served, intact
    assert os.path.isdir(str(models / ".staging" / ("tiny@" + new_sha)))

    call("/_control", {"rate": 0})
    done, output = sync(tmp_path, models, revision="main")
    assert done.get("changed"), output
    assert done["changed"] and done["commit_sha"] == new_sha
    assert served_ok(models) == new_sha
    assert done["bytes_downloaded"] < done["total_bytes"]  # resumed, not started over
    assert not os.path.exists(str(models / ".staging" / ("tiny@" + new_sha)))


@pytest.mark.parametrize("args,message", [
    ({"token": "hf_wrong"}, "token was rejected"),
    ({"repo_id": "onprem-test/gated-llm"}, "is gated and this token has no access: accept the license"),
    ({"repo_id": "onprem-test/gated-llm", "token": "hf_test_nogate"}, "is gated and this token has no access"),
    ({"repo_id": "onprem-test/no-such-model"}, "model repository onprem-test/no-such-model was not found"),
    ({"revision": "no-such-branch"}, "revision 'no-such-branch' does not exist in model onprem-test/tiny-llm"),
])
def test_plain_errors_and_nothing_changed(tmp_path, args, message):
    models = tmp_path / "models"
    result, output = sync(tmp_path, models, **args)
    assert result.get("failed") and message in result["msg"], result["msg"]
    assert not (models / "tiny").exists()
    assert "hf_wrong" not in output and "hf_test_nogate" not in output


def test_gated_with_access_and_token_kept_secret(tmp_path):
    models = tmp_path / "models"
    result, output = sync(tmp_path, models, name="gated", repo_id="onprem-test/gated-llm", token=TOKEN)
    assert result["changed"] and served_ok(models, "gated") == result["commit_sha"]
    assert TOKEN not in output
    for base, _subdirs, names in os.walk(str(tmp_path)):
        for name in names:
            with open(os.path.join(base, name), "rb") as handle:
                assert TOKEN.encode() not in handle.read(), os.path.join(base, name)


def test_not_enough_disk_is_refused_before_download(tmp_path):
    models = tmp_path / "models"
    result, _output = sync(tmp_path, models, min_free_bytes=1 << 60)
    assert result.get("failed") and "not enough disk space" in result["msg"]
    assert call("/_stats")["get"] == {}
