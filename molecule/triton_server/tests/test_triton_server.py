# SPDX-License-Identifier: Apache-2.0
"""What the triton_server role leaves on the host: a supervised, gated Triton."""

import json
import os
import subprocess
import time

NAME = "molecule"
UNIT = "triton-molecule.service"
CONTAINER = "triton-molecule"
PORTS = {"http": 18400, "grpc": 18401, "metrics": 18402}
HF_TOKEN = "hf_FAKEtokenNeverPrintedAnywhere0123456789"
REPO_KEY = "molecule-repository-key-0123456789"
ENV_FILE = "/etc/triton-server/molecule.env"


def test_service_is_active_and_enabled(host):
    service = host.service(UNIT)
    assert service.is_running
    assert service.is_enabled


def test_ports_listen_on_the_configured_address_only(host):
    for port in PORTS.values():
        listening = host.check_output(f"ss -Htln 'sport = :{port}'").splitlines()
        # gRPC listens on an IPv6 socket bound to the IPv4-mapped loopback: the same address
        addresses = {line.split()[3].rsplit(":", 1)[0].strip("[]").replace("::ffff:", "") for line in listening}
        assert addresses == {"127.0.0.1"}, (port, listening)


def test_env_file_is_private_and_holds_the_secrets(host):
    env = host.file(ENV_FILE)
    assert env.mode == 0o600 and env.user == "root"
    # the secrets are really there, so their absence elsewhere means something
    assert f"HF_TOKEN={HF_TOKEN}" in env.content_string
    assert f"TRITON_REPOSITORY_API_KEY={REPO_KEY}" in env.content_string


def test_hf_token_is_absent_from_unit_processes_and_journal(host):
    unit = host.check_output(f"systemctl cat {UNIT}")
    assert "--env-file /etc/triton-server/molecule.env" in unit
    assert HF_TOKEN not in unit and REPO_KEY not in unit
    assert HF_TOKEN not in host.check_output("ps -eo args --no-headers")
    assert HF_TOKEN not in host.check_output("journalctl --no-pager -o cat")
    assert HF_TOKEN not in host.check_output("journalctl --no-pager -o verbose -u " + UNIT)


def test_unit_carries_the_server_flags(host):
    unit = host.check_output(f"systemctl cat {UNIT}")
    for flag in ("--model-control-mode=explicit", "--load-model=demo", "--strict-readiness=true",
                 "--exit-on-error=true", "--exit-timeout-secs=5", "--shm-size 1g", "--ulimit memlock=8388608",
                 "--ulimit stack=67108864", "--http-address=127.0.0.1 --http-port=18400",
                 "--model-repository=/srv/triton/repository/current",
                 "source=/srv/triton/repository,target=/srv/triton/repository,readonly",
                 "registry.onprem.test/nvidia/tritonserver:25.12-vllm-python-py3",
                 "ExecStop=/usr/bin/docker stop --time 10 triton-molecule", "Restart=always"):
        assert flag in unit, flag


def test_repository_api_needs_the_key(host):
    url = f"http://127.0.0.1:{PORTS['http']}/v2/repository/index"
    refused = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' -X POST {url}")
    allowed = host.run(f"curl -s -w ' %{{http_code}}' -X POST -H 'triton-repository-key: {REPO_KEY}' {url}")
    assert refused.stdout.strip() != "200"
    assert allowed.stdout.endswith(" 200") and '"name":"demo"' in allowed.stdout


def test_file_sd_target_list(host):
    content = host.file("/etc/prometheus/file_sd/triton-molecule.yml").content_string
    assert "127.0.0.1:18402" in content and "triton_instance: molecule" in content


def test_last_good_configuration_is_kept(host):
    state = json.loads(host.file(f"/var/lib/triton-server/{NAME}/last-good.json").content_string)
    assert state == {"repository_target": "/srv/triton/repository/generations/gen-1", "models": ["demo"],
                     "image": "registry.onprem.test/nvidia/tritonserver:25.12-vllm-python-py3"}
    assert host.file(f"/var/lib/triton-server/{NAME}/last-good.env").mode == 0o600


def _gate():
    """The rollout gate itself (onprem.triton.triton_check), run from the controller."""
    args = json.dumps({"url": f"127.0.0.1:{PORTS['grpc']}", "protocol": "grpc", "models": [{"name": "demo"}],
                       "prompt": "the quick brown fox", "expected_substring": "quick", "wait_timeout": 60,
                       "headers": {"triton-grpc-protocol-triton-repository-key": REPO_KEY}})
    return subprocess.run(["ansible", "localhost", "-m", "onprem.triton.triton_check", "-a", args],
                          capture_output=True, text=True, env=dict(os.environ, ANSIBLE_STDOUT_CALLBACK="default"),
                          check=False)


def test_the_watchdog_runs_by_default_and_sees_the_model_generate(host):
    """Nothing in this scenario sets the watchdog: the role's defaults install it and its timer runs."""
    timer = host.service("triton-molecule-watchdog.timer")
    assert timer.is_running and timer.is_enabled
    assert "OnUnitActiveSec=60" in host.check_output("systemctl cat triton-molecule-watchdog.timer")
    deadline = time.time() + 90
    while time.time() < deadline and "ok: demo" not in host.run(
            "journalctl -u triton-molecule-watchdog.service --no-pager -o cat").stdout:
        time.sleep(3)
    assert f"{UNIT}: ok: demo" in host.check_output("journalctl -u triton-molecule-watchdog.service --no-pager -o cat")
    metrics = host.file("/var/lib/prometheus/node-exporter/triton_watchdog_molecule.prom").content_string
    assert f'triton_watchdog_generation_ok{{triton_instance="{NAME}",unit="{UNIT}",model="demo"}} 1' in metrics


def test_killed_container_comes_back_and_passes_the_gate(host):
    restarts = int(host.check_output(f"systemctl show -p NRestarts --value {UNIT}"))
    started = host.check_output(f"docker inspect -f '{{{{.State.StartedAt}}}}' {CONTAINER}")
    host.check_output(f"docker kill {CONTAINER}")
    deadline = time.time() + 60
    while time.time() < deadline:
        if int(host.check_output(f"systemctl show -p NRestarts --value {UNIT}")) > restarts and \
                host.run(f"docker inspect -f '{{{{.State.Running}}}}' {CONTAINER}").stdout.strip() == "true":
            break
        time.sleep(1)
    assert int(host.check_output(f"systemctl show -p NRestarts --value {UNIT}")) == restarts + 1
    assert host.check_output(f"docker inspect -f '{{{{.State.StartedAt}}}}' {CONTAINER}") != started
    gate = _gate()
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "SUCCESS" in gate.stdout


# --- the TensorRT-LLM server of converge.yml's second play (the in-flight batching ensemble) ----------
TRTLLM_UNIT = "triton-molecule-trtllm.service"
TRTLLM_HTTP = 18410


def test_the_trtllm_server_serves_the_rendered_ensemble_and_generates(host):
    service = host.service(TRTLLM_UNIT)
    assert service.is_running and service.is_enabled
    unit = host.check_output(f"systemctl cat {TRTLLM_UNIT}")
    # the ports came as strings (as -e gives them)
    for flag in ("--http-port=18410", "--grpc-port=18411", "--metrics-port=18412", "--model-repository=/opt/triton/repository/current",
                 "registry.onprem.test/nvidia/tritonserver:25.12-trtllm-python-py3", "--load-model=tiny_llm",
                 "--load-model=tiny_llm_tensorrt_llm", "--load-model=tiny_llm_tensorrt_llm_bls", "source=/opt/triton/engines"):
        assert flag in unit, flag
    # what model_repository rendered and built, and upstream's python models copied from the image
    current = "/opt/triton/repository/current"
    for path in ("tiny_llm/config.pbtxt", "tiny_llm_tensorrt_llm/config.pbtxt", "preprocessing/1/model.py",
                 "postprocessing/1/model.py", "tiny_llm_tensorrt_llm_bls/1/model.py"):
        assert host.file(f"{current}/{path}").exists, path
    index = host.check_output(f"curl -s -X POST -H 'triton-repository-key: {REPO_KEY}' "
                              f"http://127.0.0.1:{TRTLLM_HTTP}/v2/repository/index")
    states = {entry["name"]: entry["state"] for entry in json.loads(index)}
    assert {states.get(name) for name in ("tiny_llm", "tiny_llm_tensorrt_llm", "preprocessing", "postprocessing",
                                          "tiny_llm_tensorrt_llm_bls")} == {"READY"}, states
    prompt = "the quick brown fox"
    answer = json.loads(host.check_output(
        f"curl -s -X POST http://127.0.0.1:{TRTLLM_HTTP}/v2/models/tiny_llm/generate "
        f"-d '{json.dumps({'text_input': prompt, 'max_tokens': 4})}'"))
    # the engine double answers with the prompt's own tokens (bytes): nothing else can appear
    assert answer.get("text_output"), answer
    assert set(answer["text_output"]) <= set(prompt), answer
    last_good = json.loads(host.file("/var/lib/triton-server/molecule-trtllm/last-good.json").content_string)
    assert sorted(last_good["models"]) == sorted(name for name in states if states[name] == "READY"), (last_good, states)
