"""site.yml and serve.yml refuse bad rolling-update settings before any host changes.

triton_rollout_serial and triton_rollout_max_fail_percentage are play keywords (extra vars);
Ansible itself accepts a serial of "-5" or "0%" silently. playbooks/preflight.yml, the first
play of both, checks them; here only that stage (triton_preflight_stages), with --tags preflight,
against a one-host inventory with nothing to reach.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run(tmp_path, playbook, extra):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    triton_servers:\n      hosts:\n        gpu-a:\n"
                         "          ansible_connection: local\n          ansible_python_interpreter: %s\n"
                         % sys.executable)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"),
               ANSIBLE_NOCOLOR="1")
    extra = dict(extra, triton_preflight_stages=["rollout"])
    result = subprocess.run(["ansible-playbook", "-i", str(inventory), os.path.join(ROOT, "playbooks", playbook),
                             "--tags", "preflight", "-e", json.dumps(extra)],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120, check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("playbook", ["site.yml", "serve.yml"])
@pytest.mark.parametrize("extra, named", [
    ({"triton_rollout_serial": "-5"}, 'triton_rollout_serial must be a host count (1, 2, ...) or a percentage (1%-100%), got "-5"'),
    ({"triton_rollout_serial": "0%"}, 'got "0%"'),
    ({"triton_rollout_serial": 0}, "got 0"),
    ({"triton_rollout_max_fail_percentage": 150}, "triton_rollout_max_fail_percentage must be 0-100, got 150"),
])
def test_bad_rollout_settings_stop_the_run_first(tmp_path, playbook, extra, named):
    rc, out = run(tmp_path, playbook, extra)
    assert rc != 0, out
    assert named in " ".join(out.split()), out
    assert "NVIDIA driver" not in out and "Model repository, Triton server" not in out, out


@pytest.mark.parametrize("extra", [{}, {"triton_rollout_serial": 2}, {"triton_rollout_serial": "100%"},
                                   {"triton_rollout_max_fail_percentage": 25}])
def test_good_rollout_settings_pass(tmp_path, extra):
    rc, out = run(tmp_path, "site.yml", extra)
    assert rc == 0, out
    assert "Check triton_rollout_serial and triton_rollout_max_fail_percentage" in out
