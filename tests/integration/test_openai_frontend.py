# SPDX-License-Identifier: Apache-2.0
"""The OpenAI frontend as the triton_server role starts it, against the real `openai` client.

The command is the one in the unit the role renders (tests/unit/roles/triton_server/render.yml):
`python3 <launcher> <main.py> FLAG...`, run here with the role's launcher and the frontend's
contract double (tests/fixtures/openai_frontend, which says why) in place of the image's main.py,
over the real tritonserver of the Triton fixture. The key comes from the rendered env file, as
`docker run --env-file` would pass it.
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import requests
import tritonclient.grpc as grpcclient
import yaml

from tests.fixtures.triton.server import prepare_backend_dir, pytriton_paths, write_vllm_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit" / "roles"))
from role_render import render  # noqa: E402  pylint: disable=wrong-import-position,import-error

LAUNCHER = ROOT / "roles" / "triton_server" / "files" / "triton_openai_launch.py"
DOUBLE = ROOT / "tests" / "fixtures" / "openai_frontend" / "openai_frontend" / "main.py"
DEFAULTS = yaml.safe_load((ROOT / "roles" / "triton_server" / "defaults" / "main.yml").read_text())
IMAGE_LAUNCHER = "/usr/local/lib/onprem-triton/triton_openai_launch.py"
IMAGE_MAIN = "/opt/tritonserver/python/openai/openai_frontend/main.py"
KEY = "sk-onprem-test-0123456789abcdef0123456789"
PORTS = {"triton_server_openai_port": 18490, "triton_server_http_port": 18491, "triton_server_grpc_port": 18492,
         "triton_server_metrics_port": 18493}
# What a chat template of a real tokenizer does: roles and contents in a fixed frame.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def rendered_unit(tmp, **overrides):
    """The path of the unit the role renders with the OpenAI frontend on (its env file beside it)."""
    settings = dict(PORTS, triton_server_openai_enabled=True, triton_server_openai_api_key=KEY,
                    triton_server_repository_api_key="r" * 20, triton_server_http_address="127.0.0.1",
                    triton_server_grpc_address="127.0.0.1", triton_server_model_repository_path=str(tmp / "repo"),
                    triton_server_models_dir=str(tmp / "weights"), triton_server_models=["demo"])
    settings.update(overrides)
    return render("triton_server", str(tmp / "unit.service"), **settings)


def unit_command(tmp, **overrides):
    """(argv, env) of the frontend as the rendered unit starts it, paths mapped to this machine."""
    unit = rendered_unit(tmp, **overrides)
    text = Path(unit).read_text()
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)\n", text, re.S | re.M).group(1).replace("\\\n", " ")
    argv = shlex.split(exec_start)
    command = argv[argv.index("python3"):]
    assert command[1:3] == [IMAGE_LAUNCHER, IMAGE_MAIN], command
    env_file = dict(line.split("=", 1) for line in Path(unit + ".env").read_text().splitlines()
                    if line and not line.startswith("#"))
    return [sys.executable, str(LAUNCHER), str(DOUBLE)] + command[3:], env_file


def tritonserver_on_path(tmp):
    """A `tritonserver` on PATH as the image has one: the fixture's binary and backends."""
    server_dir, libs = pytriton_paths()
    backends = prepare_backend_dir(tmp / "backends")
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "tritonserver"
    wrapper.write_text(f"#!/bin/sh\nexec {server_dir}/bin/tritonserver --backend-directory={backends} "
                       '--allow-gpu-metrics=false "$@"\n')
    wrapper.chmod(0o755)
    return {"PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
            "LD_LIBRARY_PATH": str(libs)}


def lay_out(tmp):
    write_vllm_model(tmp / "repo", "demo")
    tokenizer = tmp / "weights" / "demo"
    tokenizer.mkdir(parents=True)
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE,
                                                                 "bos_token": "<s>", "eos_token": "</s>"}))
    return tokenizer


class Frontend:
    """The frontend process; stopped as docker stop does (SIGTERM)."""

    def __init__(self, argv, env, port):
        self.port = port
        self.log = open(Path(env["LOG_DIR"]) / f"frontend-{port}-{time.time_ns()}.log", "w+b")  # noqa: SIM115
        env = {k: v for k, v in env.items() if k != "LOG_DIR"}
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,  # noqa: S603
                                        start_new_session=True)

    def wait_ready(self, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/health/ready", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise AssertionError("frontend not ready: " + self.output())

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def run_env(tmp, env_file):
    return dict({k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}, **tritonserver_on_path(tmp),
                **env_file, LOG_DIR=str(tmp))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openai")
    lay_out(tmp)
    argv, env_file = unit_command(tmp)
    frontend = Frontend(argv, run_env(tmp, env_file), PORTS["triton_server_openai_port"])
    try:
        yield frontend.wait_ready(), argv
    finally:
        frontend.stop()


def client(key=KEY):
    return openai.OpenAI(api_key=key, base_url=f"http://127.0.0.1:{PORTS['triton_server_openai_port']}/v1",
                         max_retries=0, timeout=30)


def test_the_unit_starts_the_frontend_with_the_shipped_defaults(served):
    flags = served[1][3:]
    assert f"--default-max-tokens={DEFAULTS['triton_server_openai_default_max_tokens']}" in flags
    assert "--enable-kserve-frontends" in flags and "--backend=vllm" in flags
    assert "--kserve-http-port=18491" in flags and "--kserve-grpc-port=18492" in flags
    assert not any(KEY in flag for flag in flags)
    assert DEFAULTS["triton_server_openai_enabled"] is False  # opt-in: the other scenarios run it off


@pytest.mark.usefixtures("served")
def test_models_lists_the_served_model():
    assert [model.id for model in client().models.list().data] == ["demo"]
    assert client().models.retrieve("demo").owned_by == "Triton Inference Server"


@pytest.mark.usefixtures("served")
def test_chat_completion_through_the_chat_template():
    answer = client().chat.completions.create(model="demo", max_tokens=5,
                                              messages=[{"role": "user", "content": "the quick brown fox"}])
    # the fixture's engine repeats the prompt word by word: the prompt is the template's frame
    assert answer.choices[0].message.content == " user: the quick brown fox"
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 5


@pytest.mark.usefixtures("served")
def test_chat_completion_streams_token_by_token():
    stream = client().chat.completions.create(model="demo", max_tokens=7, stream=True,
                                              stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "the quick brown fox"}])
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) == 7 and "".join(deltas) == " user: the quick brown fox assistant: user:"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 7


@pytest.mark.usefixtures("served")
def test_default_max_tokens_is_the_roles():
    answer = client().chat.completions.create(model="demo", messages=[{"role": "user", "content": "sea"}])
    assert answer.usage.completion_tokens == DEFAULTS["triton_server_openai_default_max_tokens"]


@pytest.mark.usefixtures("served")
def test_completions_streaming_and_not():
    whole = client().completions.create(model="demo", prompt="the quick brown fox", max_tokens=6)
    assert whole.choices[0].text == " the quick brown fox the quick"
    stream = client().completions.create(model="demo", prompt="the quick brown fox", max_tokens=6, stream=True)
    parts = [c.choices[0].text for c in stream if c.choices]
    assert "".join(parts) == " the quick brown fox the quick"


@pytest.mark.usefixtures("served")
def test_kserve_endpoints_stay_on_the_roles_ports():
    """What the gate, the watchdog and the day-2 playbooks use."""
    answer = requests.post("http://127.0.0.1:18491/v2/models/demo/generate", timeout=30,
                           json={"text_input": "the quick brown fox", "sampling_parameters": '{"max_tokens": 2}',
                                 "exclude_input_in_output": True}).json()
    assert answer["text_output"] == " the quick"
    assert grpcclient.InferenceServerClient("127.0.0.1:18492").is_model_ready("demo")


@pytest.mark.usefixtures("served")
def test_a_wrong_or_missing_key_is_refused_and_health_stays_open():
    with pytest.raises(openai.AuthenticationError, match="This API is restricted"):
        client("sk-wrong-key-0123456789abcdef0123456789").chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        client("sk-wrong").models.list()
    base = f"http://127.0.0.1:{PORTS['triton_server_openai_port']}"
    missing = requests.post(f"{base}/v1/completions", json={"model": "demo", "prompt": "hi"}, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_auth"
    assert requests.get(f"{base}/health/ready", timeout=10).status_code == 200
    assert "nv_inference_request_success" in requests.get(f"{base}/metrics", timeout=10).text


def test_the_key_is_on_no_command_line_and_not_in_the_servers_environment(served):
    frontend = served[0]
    seen = []
    for proc in Path("/proc").iterdir():
        try:
            if KEY.encode() in (proc / "cmdline").read_bytes():
                seen.append(proc.name)
        except OSError:
            continue
    assert seen == []
    children = subprocess.run(["pgrep", "-P", str(frontend.process.pid)], capture_output=True, text=True,
                              check=False).stdout.split()
    assert children, "the frontend starts tritonserver"
    for child in children:
        assert KEY.encode() not in Path(f"/proc/{child}/environ").read_bytes()


@pytest.mark.usefixtures("served")
def test_requests_the_frontend_refuses():
    c = client()
    # FastAPI's {"detail": ...}: the openai client keeps it in the error's response
    with pytest.raises(openai.BadRequestError) as refused:
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.response.json()["detail"] == "Unknown model: nope"
    with pytest.raises(openai.BadRequestError) as refused:
        c.chat.completions.create(model="demo", n=2, messages=[{"role": "user", "content": "hi"}])
    assert "only single choice" in refused.value.response.json()["detail"]
    with pytest.raises(openai.BadRequestError) as refused:
        c.chat.completions.create(model="demo", stream_options={"include_usage": True},
                                  messages=[{"role": "user", "content": "hi"}])
    assert "stream_options" in refused.value.response.json()["detail"]
    with pytest.raises(openai.UnprocessableEntityError):
        c.chat.completions.create(model="demo", messages=[])


# --- the broken forms: what the launcher and the frontend refuse -----------------------------------

def _run(argv, env, timeout=60):
    env = {k: v for k, v in env.items() if k != "LOG_DIR"}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_the_launcher_refuses_an_empty_key_or_one_on_the_command_line(tmp_path):
    lay_out(tmp_path)
    argv, env_file = unit_command(tmp_path)
    env = run_env(tmp_path, env_file)
    empty = _run(argv, dict(env, TRITON_OPENAI_API_KEY=""))
    assert empty.returncode != 0 and "TRITON_OPENAI_API_KEY is empty" in empty.stderr
    flagged = _run(argv + ["--openai-restricted-api", "inference", "authorization", "Bearer " + KEY], env)
    assert flagged.returncode != 0 and "must not be given on the command line" in flagged.stderr


@pytest.mark.parametrize("change, error", [
    (lambda a: a + ["--metrics-port=18493"], "unrecognized arguments: --metrics-port=18493"),
    (lambda a: [f for f in a if not f.startswith("--model-repository")], "the following arguments are required: --model-repository"),
    (lambda a: [f.replace("--backend=vllm", "--backend=trtllm") for f in a], "invalid choice: 'trtllm'"),
    (lambda a: a + ["--uvicorn-log-level=loud"], "invalid choice: 'loud'"),
])
def test_the_frontend_refuses_flags_as_argparse_does(tmp_path, change, error):
    """main.py parse_args(): the double fails the way upstream's argparse does (exit 2)."""
    lay_out(tmp_path)
    argv, env_file = unit_command(tmp_path)
    done = _run(change(argv), run_env(tmp_path, env_file))
    assert done.returncode == 2 and error in done.stderr, done.stderr


def test_the_frontend_refuses_a_tokenizer_folder_without_its_files(tmp_path):
    lay_out(tmp_path)
    (tmp_path / "weights" / "empty").mkdir()
    argv, env_file = unit_command(tmp_path, triton_server_openai_tokenizer=str(tmp_path / "weights" / "empty"))
    done = _run(argv, run_env(tmp_path, env_file))
    assert done.returncode != 0 and "Can't load tokenizer" in done.stderr


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unknown_restricted_api_fails_the_start_and_no_tokenizer_fails_chat(tmp_path):
    """api_restriction.py: an unknown API name exits 1; without --tokenizer, chat answers 500."""
    lay_out(tmp_path)
    ports = {"triton_server_openai_port": _free_port(), "triton_server_http_port": _free_port(),
             "triton_server_grpc_port": _free_port(), "triton_server_metrics_port": _free_port()}
    argv, env_file = unit_command(tmp_path, **ports)
    env = run_env(tmp_path, env_file)
    bad = argv[:2] + [argv[2]] + argv[3:] + ["--openai-restricted-api", "inference,billing", "k", "v"]
    done = _run([bad[0]] + bad[2:], env, timeout=120)  # the double alone: the launcher would refuse the flag
    assert done.returncode == 1 and "[ERROR] Failed to initialize FastAPI frontend: Unknown API 'billing'" in done.stderr
    no_tokenizer = [f for f in argv if not f.startswith("--tokenizer")]
    frontend = Frontend(no_tokenizer, env, ports["triton_server_openai_port"]).wait_ready()
    try:
        c = openai.OpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{ports['triton_server_openai_port']}/v1", max_retries=0)
        with pytest.raises(openai.InternalServerError) as failed:
            c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
        assert failed.value.response.json()["detail"] == "Unknown tokenizer"
        assert c.completions.create(model="demo", prompt="the sea", max_tokens=2).choices[0].text == " the sea"
    finally:
        frontend.stop()


# --- the check module's OpenAI probe against it ----------------------------------------------------

def _check_module(openai_options):
    args = json.dumps({"url": "127.0.0.1:18491", "models": ["demo"], "wait_timeout": 30,
                       "openai": dict({"url": "127.0.0.1:18490"}, **openai_options)})
    done = subprocess.run(["ansible", "localhost", "-m", "onprem.triton.triton_check", "-a", args],
                          capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
                                   ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".ansible" / "collections")))
    # "localhost | SUCCESS => {...}" (or FAILED!): the JSON after the arrow
    result = json.JSONDecoder().raw_decode(done.stdout.split(" => ", 1)[1].lstrip())[0]
    return done.returncode, result


def test_the_check_module_probes_the_openai_api(served):
    rc, result = _check_module({"api_key": KEY, "max_tokens": 4})
    assert rc == 0, result
    assert result["openai"]["models"] == ["demo"]
    assert result["openai"]["refusals"] == {"wrong_key": 401, "missing_key": 401}
    generation = result["openai"]["generation"]
    assert generation["chunks"] == 4 and generation["output_tokens"] == 4 and generation["output_tokens_source"] == "usage"
    assert generation["ttft_ms"] > 0 and generation["output_tokens_per_second"] > 0
    assert KEY not in json.dumps(result)


def test_the_check_module_says_plainly_that_its_key_was_refused(served):
    rc, result = _check_module({"api_key": "sk-stale-0123456789abcdef0123456789"})
    assert rc != 0 and result["error_kind"] == "forbidden"
    assert "OpenAI API: the key given was refused" in result["msg"] and "This API is restricted" in result["msg"]


def test_the_stop_window_is_the_frontends_own_exit_timeout_and_it_stops_inside_it(tmp_path, served):
    """The frontend takes no --exit-timeout-secs: its server keeps the Python API's 30 s, whatever
    triton_server_exit_timeout says, and docker stop must wait that long (+5 s) before it kills
    (a kill makes systemd record the unit failed). Last in this file: it stops the shared frontend."""
    text = Path(rendered_unit(tmp_path, triton_server_exit_timeout=5)).read_text()
    assert re.search(r"^ExecStop=\S+ stop --time 35 ", text, re.M) and "\nTimeoutStopSec=60\n" in text, text
    assert "--exit-timeout-secs" not in text
    frontend = served[0]
    started = time.monotonic()
    os.killpg(frontend.process.pid, signal.SIGTERM)
    assert frontend.process.wait(timeout=35) == 0, frontend.output()[-2000:]
    print(f"the frontend and its server stopped {time.monotonic() - started:.1f} s after SIGTERM")
