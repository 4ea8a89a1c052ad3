# SPDX-License-Identifier: Apache-2.0
"""The triton_server role's OpenAI launcher (roles/triton_server/files/triton_openai_launch.py): the
frontend gets its key as the flag upstream's main.py takes, while the process's command line, as the
kernel shows it to every user in /proc/PID/cmdline, never holds it."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCHER = Path(__file__).resolve().parents[3] / "roles" / "triton_server" / "files" / "triton_openai_launch.py"
SPEC = importlib.util.spec_from_file_location("triton_openai_launch", LAUNCHER)
launch = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(launch)
KEY = "sk-launch-test-0123456789abcdef0123456789"


def test_the_key_becomes_upstreams_restriction_flag_and_leaves_the_environment():
    environ = {"TRITON_OPENAI_API_KEY": KEY, "PATH": "/bin"}
    argv = launch.frontend_argv(["launch.py", "/x/main.py", "--openai-port=9000"], environ)
    assert argv == ["/x/main.py", "--openai-port=9000",
                    "--openai-restricted-api", "inference,model-repository", "authorization", "Bearer " + KEY]
    assert environ == {"PATH": "/bin"}


@pytest.mark.parametrize("argv, environ, error", [
    (["launch.py", "/x/main.py"], {}, "TRITON_OPENAI_API_KEY is empty"),
    (["launch.py", "/x/main.py"], {"TRITON_OPENAI_API_KEY": ""}, "TRITON_OPENAI_API_KEY is empty"),
    (["launch.py", "/x/main.py", "--openai-restricted-api", "inference", "authorization", "Bearer k"],
     {"TRITON_OPENAI_API_KEY": KEY}, "must not be given on the command line"),
    (["launch.py", "/x/main.py", "--openai-restricted-api=inference"], {"TRITON_OPENAI_API_KEY": KEY},
     "must not be given on the command line"),
    (["launch.py"], {"TRITON_OPENAI_API_KEY": KEY}, "usage"),
])
def test_broken_forms_are_refused(argv, environ, error):
    with pytest.raises(SystemExit, match=error):
        launch.frontend_argv(argv, environ)


def test_in_process_the_frontend_sees_the_key_but_proc_cmdline_does_not(tmp_path):
    """A stand-in main.py records what it sees: sys.argv (with the key), its own /proc/self/cmdline
    and environment (without), and that it imports from its own folder as upstream's does."""
    (tmp_path / "engine.py").write_text("NAME = 'engine of the frontend folder'\n")
    (tmp_path / "main.py").write_text(
        "import json, os, sys\nimport engine\n"
        "cmdline = open('/proc/self/cmdline', 'rb').read().decode()\n"
        "json.dump({'argv': sys.argv, 'cmdline': cmdline, 'env': dict(os.environ), 'engine': engine.NAME,"
        " 'name': __name__}, open(os.path.join(os.path.dirname(__file__), 'seen.json'), 'w'))\n")
    env = dict(os.environ, TRITON_OPENAI_API_KEY=KEY)
    done = subprocess.run([sys.executable, str(LAUNCHER), str(tmp_path / "main.py"), "--openai-port=9000"],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["argv"][-1] == "Bearer " + KEY and seen["name"] == "__main__"
    assert seen["engine"] == "engine of the frontend folder"
    assert KEY not in seen["cmdline"] and "--openai-port=9000" in seen["cmdline"]
    assert "TRITON_OPENAI_API_KEY" not in seen["env"]
