"""The production inventory's shipped settings pass every role's preflight.

inventories/production/group_vars is used as it is (linked, not copied); only what cannot be
real here is replaced: the two hosts are fresh Debian 12 systemd containers (the Molecule base
image; nothing installed yet, so the run is a dry run, --check, as a review before a first
deploy would be), the vault holds test values, the PCI bus is a sysfs-shaped tree with the
recorded H100 (0x2330) and nvidia-smi replays what the real H100 printed
(tests/fixtures/nvidia/h100). The driver preflight compares
the driver the defaults would install with each group's Triton image; the TensorRT-LLM hosts
also pass the post-install driver check against the recorded H100's running driver (580.159.04).
"""
import json
import os
import subprocess
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLAYBOOK = os.path.join(os.path.dirname(__file__), "playbooks", "production_preflight.yml")
H100 = os.path.join(ROOT, "tests", "fixtures", "nvidia", "h100")
IMAGE = "onprem-triton/debian12-systemd:latest"
HOSTS = {"triton_vllm": "gpu-vllm-01.example.internal", "triton_trtllm": "gpu-trtllm-01.example.internal"}
# The same container options as the Molecule instances (CONTRIBUTING.md).
RUN = ["docker", "run", "-d", "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
       "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "--cgroupns", "host",
       "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock", "--network", "host",
       "--stop-signal", "SIGRTMIN+3"]
# What the real H100 printed, replayed; installed in each host as /usr/local/bin/nvidia-smi.
SMI = """#!/bin/sh
# TEST STAND-IN for nvidia-smi: replays what a real H100 printed (tests/fixtures/nvidia/h100).
case "$1" in
  --query-gpu=*) cat /opt/h100/nvidia_smi_query.csv;;
  --version) cat /opt/h100/nvidia_smi_version.txt;;
  *) exit 2;;
esac
"""


def _docker(*args, **kwargs):
    return subprocess.run(["docker"] + list(args), capture_output=True, text=True, check=True, timeout=120,
                          **kwargs)


@pytest.fixture
def fresh_hosts(tmp_path):
    """Two fresh systemd hosts (containers) with the recorded H100 on their PCI bus and nvidia-smi."""
    names = {group: "prodtest-%s-%s" % (group, uuid.uuid4().hex[:6]) for group in HOSTS}
    smi = tmp_path / "nvidia-smi"
    smi.write_text(SMI)
    smi.chmod(0o755)
    try:
        for name in names.values():
            _docker(*(RUN[1:] + ["--name", name, IMAGE, "/lib/systemd/systemd"]))
            _docker("exec", name, "mkdir", "-p", "/opt/h100", "/srv/pci/0000:00:06.0")
            for fixture in ("nvidia_smi_query.csv", "nvidia_smi_version.txt"):
                _docker("cp", os.path.join(H100, fixture), "%s:/opt/h100/%s" % (name, fixture))
            _docker("cp", str(smi), "%s:/usr/local/bin/nvidia-smi" % name)
            _docker("exec", name, "sh", "-c", "cd /srv/pci/0000:00:06.0 && echo 0x10de > vendor"
                    " && echo 0x030200 > class && echo 0x2330 > device")
        yield names
    finally:
        for name in names.values():
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def _inventory(tmp_path, names):
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    lines = ["all:", "  children:", "    triton_servers:", "      children:"]
    for group, host in HOSTS.items():
        lines += ["        %s:" % group, "          hosts:", "            %s:" % host,
                  "              ansible_host: %s" % names[group],
                  "              ansible_connection: community.docker.docker",
                  "              ansible_python_interpreter: /usr/bin/python3"]
    (inventory / "hosts.yml").write_text("\n".join(lines) + "\n")
    # The production group_vars themselves, unchanged.
    (inventory / "group_vars").symlink_to(os.path.join(ROOT, "inventories", "production", "group_vars"))
    return inventory


def test_production_defaults_pass_every_preflight(tmp_path, fresh_hosts):
    extra = {
        "vault_hf_token": "hf_production_test_not_a_secret",
        "vault_triton_repository_api_key": "production-test-repository-key",
        "nvidia_driver_sysfs_pci_path": "/srv/pci",
    }
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"),
               ANSIBLE_NOCOLOR="1")
    before = {name: _docker("exec", name, "sh", "-c", "dpkg -l | md5sum; ls -R /etc /opt | md5sum").stdout
              for name in fresh_hosts.values()}
    result = subprocess.run(["ansible-playbook", "--check", "-i", str(_inventory(tmp_path, fresh_hosts)),
                             PLAYBOOK, "-e", json.dumps(extra)],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "PRODUCTION PREFLIGHT OK gpu-vllm-01.example.internal image=25.12-vllm-python-py3" in out
    assert "PRODUCTION PREFLIGHT OK gpu-trtllm-01.example.internal image=25.12-trtllm-python-py3" in out
    # the driver the defaults install meets each image, checked before anything is installed
    assert "branch R590 meets 590.44.01, the minimum for 25.12-vllm-python-py3" in out
    assert "branch R590 meets 580.95.05, the minimum for 25.12-trtllm-python-py3" in out
    # the recorded H100's running driver, read through the replayed nvidia-smi
    assert "driver 580.159.04 >= 580.95.05, the minimum for 25.12-trtllm-python-py3" in out
    # a preflight changes nothing on the hosts
    for name, state in before.items():
        assert _docker("exec", name, "sh", "-c", "dpkg -l | md5sum; ls -R /etc /opt | md5sum").stdout == state
