"""The sandbox host after `make deploy` (tests/run.sh deploy runs this with testinfra on
docker://onprem-triton-sandbox): every stage left real, running state."""
import json

import requests

HTTP = "http://127.0.0.1:18500"
# triton_server_name is "sandbox" (inventories/sandbox)
STATE_DIR = "/var/lib/triton-server/sandbox"


def test_docker_runs_with_the_merged_nested_settings(host):
    docker = host.service("docker")
    assert docker.is_running and docker.is_enabled
    daemon = json.loads(host.file("/etc/docker/daemon.json").content_string)
    # the role's default: Docker's own choice, overlay2 on the sandbox host's /var/lib/docker volume
    assert "storage-driver" not in daemon
    assert host.check_output("docker info --format '{{.Driver}}'") == "overlay2"
    assert daemon["bridge"] == "none" and daemon["iptables"] is False
    assert daemon["log-opts"]["max-size"]


def test_model_weights_are_the_pinned_revision(host):
    weights = host.file("/opt/models/tiny-llm")
    assert weights.exists
    assert host.file("/opt/models/tiny-llm/config.json").is_file
    listing = host.check_output("find -L /opt/models/tiny-llm -name '*.safetensors'")
    assert listing.strip(), "no safetensors were synced"
    assert not host.file("/opt/models/tiny-llm/original").exists, "ignore_patterns were not applied"


def test_repository_generation_is_current_and_valid(host):
    current = host.file("/opt/triton/repository/current")
    assert current.is_symlink
    config = host.file("/opt/triton/repository/current/tiny_llm/config.pbtxt").content_string
    assert 'backend: "vllm"' in config
    model_json = json.loads(host.file("/opt/triton/repository/current/tiny_llm/1/model.json").content_string)
    # The generation pins the exact copy hf_model installed, not the moving symlink.
    synced_copy = host.check_output("readlink -f /opt/models/tiny-llm")
    assert synced_copy.startswith("/opt/models/.versions/tiny-llm@")
    assert model_json["model"] == synced_copy
    assert model_json["gpu_memory_utilization"] == 0.9


def test_triton_unit_is_active_enabled_and_on_loopback_only(host):
    service = host.service("triton-sandbox")
    assert service.is_running and service.is_enabled
    for port in (18500, 18501, 18502):
        # gRPC binds 127.0.0.1 as the IPv4-mapped [::ffff:127.0.0.1]: still loopback.
        listeners = host.check_output(f"ss -Hltn 'sport = :{port}'").splitlines()
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listeners}
        assert addresses, f"nothing listens on port {port}"
        assert addresses <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, f"port {port} on {addresses}"


def test_the_served_model_answers_a_real_prompt():
    # The instance shares the controller's network: its loopback is ours.
    assert requests.get(f"{HTTP}/v2/health/ready", timeout=5).status_code == 200
    answer = requests.post(
        f"{HTTP}/v2/models/tiny_llm/generate",
        json={"text_input": "the sea is wide", "parameters": {"stream": False},
              "sampling_parameters": json.dumps({"max_tokens": 4})},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["text_output"].endswith(" the sea is wide")


def test_the_gate_ran_on_the_host_with_only_its_python(host):
    """The sandbox leaves triton_server_gate_delegate_to at its default (the host itself): the
    gate that passed during converge ran on a python3 with no tritonclient, as a GPU host has."""
    assert host.run("python3 -c 'import tritonclient'").rc != 0
    assert host.run("python3 -c 'import numpy'").rc != 0
    assert host.file(STATE_DIR + "/last-good.json").is_file, "no last-good record: the gate did not pass"
