# SPDX-License-Identifier: Apache-2.0
"""onprem.triton.triton_check run by ansible-playbook with a Python that has
neither tritonclient nor numpy, against a real tritonserver (the Triton
fixture): what the triton_server gate does by default, on the GPU host
(`triton_server_gate_delegate_to: inventory_hostname`, protocol http).

Over HTTP the module needs only the standard library and ansible's
module_utils: readiness, the repository index behind the restricted API (with
its header, as the role starts the server) and a real generation pass. gRPC
still needs tritonclient, and says so naming the option `protocol`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.http as httpclient

from tests.fixtures.triton.server import TritonServer, write_text_echo_model, write_vllm_model

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / ".ansible" / "collections"  # scripts/setup.sh links the checkout there
PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "triton_check_bare_python.yml"
PROMPT = "the quick brown fox"
# As roles/triton_server starts the server: the repository API needs a header.
REPO_HEADER, REPO_KEY = "x-triton-repository-key", "s3cret-repo-key"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A fresh virtual environment without pip or packages: a host's bare python3."""
    venv = tmp_path_factory.mktemp("bare-venv")
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", "--clear", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    for package in ("tritonclient", "numpy", "geventhttpclient", "grpc"):
        found = subprocess.run([str(python), "-c", "import " + package], capture_output=True, text=True,
                               check=False)
        # Not a skip: this test means nothing on an interpreter that has them.
        assert found.returncode != 0, "%s imports %s: the test needs a Python without it" % (python, package)
        assert "No module named '%s'" % package in found.stderr, found.stderr
    return str(python)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_vllm_model(repo, "demo")
    write_text_echo_model(repo, "echo")
    srv = TritonServer(repo, http_port=18050, grpc_port=18051, metrics_port=18052, load_models=["demo", "echo"],
                       extra_args=["--http-restricted-api=model-repository:%s=%s" % (REPO_HEADER, REPO_KEY)])
    with srv:
        srv.wait_model_ready("demo")
        srv.wait_model_ready("echo")
        yield srv
    srv.cleanup()


def gate(python, **extra_vars):
    """(rc, module result, output) of the playbook's one task."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    extra_vars = dict({"ansible_python_interpreter": python, "gate_protocol": "http", "gate_headers": {},
                       "gate_prompt": PROMPT}, **extra_vars)
    done = subprocess.run(["ansible-playbook", "-i", "localhost,", str(PLAYBOOK), "-e", json.dumps(extra_vars)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False)
    output = done.stdout + done.stderr
    # ansible.cfg enables profile_tasks, which prints lines around the JSON.
    report = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index("{"):])[0]
    return done.returncode, report["plays"][0]["tasks"][0]["hosts"]["localhost"], output


def test_http_gate_reads_and_generates_on_a_python_without_tritonclient(bare_python, server):
    rc, result, output = gate(
        bare_python, gate_url=server.http_url, gate_headers={REPO_HEADER: REPO_KEY},
        gate_models=[{"name": "demo"}, {"name": "echo"}], gate_expected_substring="quick brown")
    assert rc == 0 and not result.get("failed"), result.get("msg", output)
    assert REPO_KEY not in output  # headers are no_log
    assert result["protocol"] == "http" and result["url"] == server.http_url
    assert result["server"]["live"] is True and result["server"]["ready"] is True
    assert result["server"]["version"] == "2.51.0" and "model_repository" in result["server"]["extensions"]
    # The repository index (behind the restricted API), the configs and the metadata: exactly what
    # tritonclient's HTTP client returns (this test process has it).
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        assert result["repository_index"] == client.get_model_repository_index(headers={REPO_HEADER: REPO_KEY})
        assert [m["config"] for m in result["models"]] == [client.get_model_config(n) for n in ("demo", "echo")]
        metadata = client.get_server_metadata()
    finally:
        client.close()
    assert sorted(result["repository_index"], key=lambda e: e["name"]) == [
        {"name": "demo", "version": "1", "state": "READY"}, {"name": "echo", "version": "1", "state": "READY"}]
    assert [result["server"]["version"], result["server"]["extensions"]] == [metadata["version"],
                                                                             metadata["extensions"]]
    demo, echo = result["models"]
    assert demo["ready"] and demo["state"] == "READY" and demo["decoupled"] is True and demo["backend"] == "vllm"
    assert demo["config"]["name"] == "demo" and demo["config"]["model_transaction_policy"] == {"decoupled": True}
    assert [i["name"] for i in demo["config"]["input"]][:1] == ["text_input"]
    assert demo["generation"]["endpoint"] == "generate_stream"
    assert demo["generation"]["text"] == " the quick brown fox"
    assert (demo["generation"]["output_tokens"], demo["generation"]["output_tokens_source"]) == (4, "num_output_tokens")
    assert echo["decoupled"] is False and echo["backend"] == "python"
    assert echo["generation"]["endpoint"] == "generate" and echo["generation"]["text"] == " the quick brown fox"
    assert all(c["passed"] for m in (demo, echo) for c in m["checks"])


def test_http_gate_of_a_pinned_version_and_readiness_only(bare_python, server):
    rc, result, output = gate(bare_python, gate_url=server.http_url, gate_headers={REPO_HEADER: REPO_KEY},
                              gate_models=[{"name": "demo", "version": "1"}], gate_generate=False)
    assert rc == 0 and not result.get("failed"), result.get("msg", output)
    assert result["models"][0]["ready"] and result["models"][0]["config"]["backend"] == "vllm"
    assert "generation" not in result["models"][0]


def test_http_gate_without_the_repository_header_is_refused_at_once(bare_python, server):
    rc, result, output = gate(bare_python, gate_url=server.http_url, gate_models=[{"name": "demo"}],
                              gate_wait_timeout=30)
    assert rc == 2 and result["failed"], output
    assert result["error_kind"] == "forbidden" and result["attempts"] == 1, result["msg"]
    # Triton's JSON error body ({"error": ...}) is in the message.
    assert "repository index: refused by the server (403): This API is restricted, expecting header '%s'" \
        % REPO_HEADER in result["msg"]


def test_http_gate_of_an_unknown_model_and_of_a_server_down(bare_python, server):
    rc, result, output = gate(bare_python, gate_url=server.http_url, gate_headers={REPO_HEADER: REPO_KEY},
                              gate_models=[{"name": "no_such_model"}], gate_wait_timeout=30)
    assert rc == 2 and result["error_kind"] == "unknown_model" and result["attempts"] == 1, output
    assert "model no_such_model is not in the repository" in result["msg"]
    rc, result, output = gate(bare_python, gate_url="127.0.0.1:18059", gate_models=[{"name": "demo"}],
                              gate_wait_timeout=1.5)
    assert rc == 2 and result["error_kind"] == "connection_refused", output
    assert result["attempts"] >= 2 and "not ready after 1.5s" in result["msg"]


def test_grpc_on_a_python_without_tritonclient_names_the_option(bare_python, server):
    rc, result, output = gate(bare_python, gate_url=server.grpc_url, gate_protocol="grpc",
                              gate_models=[{"name": "demo"}])
    assert rc == 2 and result["failed"], output
    assert "tritonclient[grpc]" in result["msg"] and "protocol: grpc" in result["msg"], result["msg"]
    assert "protocol: http" in result["msg"] and "needs nothing" in result["msg"], result["msg"]
