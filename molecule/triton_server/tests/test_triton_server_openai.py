# SPDX-License-Identifier: Apache-2.0
"""Last (after test_triton_server.py, which checks the shipped default, the frontend off): the same
host converged again with triton_server_openai_enabled. The unit runs the role's launcher and the
image's OpenAI frontend (the fixture image carries its contract double, tests/fixtures/openai_frontend),
the gate passes over the KServe port as before, and the real `openai` client gets answers."""

import json
import os
import subprocess
import sys
import tempfile

import openai
import pytest
import requests
import yaml

UNIT = "triton-molecule.service"
KEY = "sk-molecule-openai-0123456789abcdef012345"
OPENAI_PORT = 18403
SETTINGS = {"triton_server_openai_enabled": True, "triton_server_openai_api_key": KEY,
            "triton_server_openai_port": OPENAI_PORT, "triton_server_models_dir": "/opt/models"}
TOKENIZER_CONFIG = {"chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                                     "{% if add_generation_prompt %}assistant:{% endif %}"}


def _converge():
    scenario = os.environ["MOLECULE_SCENARIO_DIRECTORY"]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as extra:
        yaml.safe_dump(SETTINGS, extra)  # -e @file: the key stays off the controller's command line too
    try:
        return subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", os.environ["MOLECULE_INVENTORY_FILE"],
             os.path.join(scenario, "converge_vllm.yml"), "-e", "@" + extra.name],
            capture_output=True, text=True, check=False, timeout=600, stdin=subprocess.DEVNULL,
            env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
    finally:
        os.unlink(extra.name)


@pytest.fixture(scope="module")
def converged(host):
    # printf, not echo: the instance's sh (dash) echo turns the template's backslash-n into a real
    # newline inside the JSON string, and the tokenizer config is then not JSON at all.
    host.check_output("mkdir -p /opt/models/demo && printf '%%s\\n' %s > /opt/models/demo/tokenizer_config.json",
                      json.dumps(TOKENIZER_CONFIG))
    run = _converge()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run


def client(key=KEY):
    return openai.OpenAI(api_key=key, base_url=f"http://127.0.0.1:{OPENAI_PORT}/v1", max_retries=0, timeout=30)


def test_the_unit_runs_the_frontend_through_the_launcher(host, converged):
    unit = host.check_output(f"systemctl cat {UNIT}")
    assert ("python3 /usr/local/lib/onprem-triton/triton_openai_launch.py "
            "/opt/tritonserver/python/openai/openai_frontend/main.py") in unit
    for flag in ("--tokenizer=/opt/models/demo", "--enable-kserve-frontends", "--kserve-http-port=18400",
                 "--kserve-grpc-port=18401", f"--openai-port={OPENAI_PORT}", "--host=127.0.0.1",
                 "--default-max-tokens=512"):
        assert flag in unit, flag
    assert KEY not in unit
    env = host.file("/etc/triton-server/molecule.env")
    assert env.mode == 0o600 and f"TRITON_OPENAI_API_KEY={KEY}" in env.content_string


def test_the_key_is_on_no_command_line(host, converged):
    assert host.run("pgrep -f openai_frontend/main.py").rc == 0
    assert KEY not in host.check_output("ps -eo args --no-headers")
    assert KEY not in host.check_output("docker inspect -f '{{json .Args}} {{json .Config.Cmd}}' triton-molecule")
    assert KEY not in host.check_output("journalctl --no-pager -o cat")


def test_the_openai_client_gets_answers_streamed_and_not(converged):
    assert [m.id for m in client().models.list().data] == ["demo"]
    answer = client().chat.completions.create(model="demo", max_tokens=3, messages=[{"role": "user", "content": "the sea"}])
    assert answer.choices[0].message.content == " user: the sea"
    parts = [c.choices[0].delta.content for c in client().chat.completions.create(
        model="demo", max_tokens=3, stream=True, messages=[{"role": "user", "content": "the sea"}])
        if c.choices and c.choices[0].delta.content]
    assert parts == [" user:", " the", " sea"]


def test_a_wrong_or_missing_key_is_refused(converged):
    with pytest.raises(openai.AuthenticationError):
        client("sk-wrong-0123456789abcdef0123456789abcdef").models.list()
    missing = requests.post(f"http://127.0.0.1:{OPENAI_PORT}/v1/chat/completions", timeout=10,
                            json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
    assert missing.status_code == 401


def test_kserve_and_the_check_modules_openai_probe(converged):
    args = json.dumps({"url": "127.0.0.1:18400", "models": ["demo"], "wait_timeout": 60,
                       "openai": {"url": f"127.0.0.1:{OPENAI_PORT}", "api_key": KEY, "max_tokens": 4}})
    done = subprocess.run(["ansible", "localhost", "-m", "onprem.triton.triton_check", "-a", args],
                          capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1",
                                   ANSIBLE_FORCE_COLOR="0"))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.JSONDecoder().raw_decode(done.stdout.split(" => ", 1)[1].lstrip())[0]
    assert result["openai"]["refusals"] == {"wrong_key": 401, "missing_key": 401}
    assert result["openai"]["generation"]["chunks"] == 4
