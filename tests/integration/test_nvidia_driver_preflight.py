"""The nvidia_driver preflight refuses bad input with a message naming the variable.

Runs the real role (tasks_from: preflight.yml) with ansible-playbook against this
machine (Debian 12, no GPU). The PCI bus is a directory tree shaped like
/sys/bus/pci/devices (nvidia_driver_sysfs_pci_path), so a V100 or an H100 can be
"present"; an unsupported OS comes from a fact cache holding this machine's real
facts with the distribution changed.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLAYBOOK = os.path.join(os.path.dirname(__file__), "playbooks", "nvidia_driver_preflight.yml")


def make_pci(tmp_path, devices):
    """devices: list of (slot, vendor, class, device) as sysfs prints them."""
    bus = tmp_path / "pci"
    bus.mkdir()
    for slot, vendor, klass, device in devices:
        dev = bus / slot
        dev.mkdir()
        (dev / "vendor").write_text(vendor + "\n")
        (dev / "class").write_text(klass + "\n")
        (dev / "device").write_text(device + "\n")
    return str(bus)


H100 = ("0000:00:06.0", "0x10de", "0x030200", "0x2330")
V100 = ("0000:00:07.0", "0x10de", "0x030200", "0x1db4")
NIC = ("0000:00:03.0", "0x8086", "0x020000", "0x100e")


def run_preflight(tmp_path, extra_vars, env_extra=None):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"),
               ANSIBLE_NOCOLOR="1")
    env.update(env_extra or {})
    extra = dict({"ansible_python_interpreter": sys.executable}, **extra_vars)
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", PLAYBOOK, "-e", json.dumps(extra)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120, check=False)
    return result.returncode, result.stdout + result.stderr


def test_defaults_pass_on_debian12_with_an_h100(tmp_path):
    rc, out = run_preflight(tmp_path, {"nvidia_driver_sysfs_pci_path": make_pci(tmp_path, [NIC, H100])})
    assert rc == 0, out
    assert "PREFLIGHT OK branch=535 packages=nvidia-kernel-dkms,nvidia-smi,libcuda1" in out


@pytest.mark.parametrize("extra_vars,devices,expected", [
    pytest.param({}, [NIC], ["No NVIDIA GPU on the PCI bus", "nvidia_driver_require_gpu: false"], id="no-gpu"),
    pytest.param({"nvidia_driver_branch": "999"}, [H100],
                 ["nvidia_driver_branch=999 is unknown", "known branches: 535"], id="unknown-branch"),
    pytest.param({"nvidia_driver_source": "cuda_repo", "nvidia_driver_branch": "535"}, [H100],
                 ["nvidia_driver_branch=535 is unknown for nvidia_driver_source=cuda_repo"], id="branch-of-other-source"),
    pytest.param({"nvidia_driver_version": "550.1-1"}, [H100],
                 ["nvidia_driver_version=550.1-1 is not a version of branch 535"], id="version-outside-branch"),
    pytest.param({"nvidia_driver_kernel_modules": "open"}, [H100, V100],
                 ["0000:00:07.0 (device 0x1db4) is older than Turing", "set nvidia_driver_kernel_modules to proprietary"],
                 id="open-modules-on-volta"),
    pytest.param({"nvidia_driver_min_free_disk_mib": 10 ** 9}, [H100],
                 ["nvidia_driver_min_free_disk_mib=1000000000"], id="too-little-disk"),
])
def test_bad_input_is_refused_naming_the_variable(tmp_path, extra_vars, devices, expected):
    rc, out = run_preflight(tmp_path, dict(extra_vars, nvidia_driver_sysfs_pci_path=make_pci(tmp_path, devices)))
    assert rc != 0
    for text in expected:
        assert text in out


def test_open_modules_on_hopper_pass(tmp_path):
    rc, out = run_preflight(tmp_path, {"nvidia_driver_kernel_modules": "open",
                                       "nvidia_driver_sysfs_pci_path": make_pci(tmp_path, [H100])})
    assert rc == 0, out
    assert "packages=nvidia-open-kernel-dkms" in out


def test_unsupported_os_is_refused(tmp_path):
    cache = tmp_path / "facts"
    env = {"ANSIBLE_CACHE_PLUGIN": "jsonfile", "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache),
           "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "0"}
    gather = tmp_path / "gather.yml"
    gather.write_text("- hosts: all\n  gather_facts: true\n  gather_subset: [min, virtual, mounts]\n  tasks: []\n")
    subprocess.run(["ansible-playbook", "-c", "local", "-i", "localhost,", str(gather),
                    "-e", "ansible_python_interpreter=" + sys.executable],
                   env=dict(os.environ, **env), capture_output=True, check=True, timeout=120)
    # Rewrite the cached facts, whichever layout this ansible-core's jsonfile cache uses.
    (cached,) = list(cache.iterdir())
    stored = json.loads(cached.read_text())
    facts = json.loads(stored["__payload__"]) if "__payload__" in stored else stored
    facts.update(ansible_distribution="Fedora", ansible_distribution_major_version="40",
                 ansible_distribution_version="40", ansible_os_family="RedHat")
    if "__payload__" in stored:
        stored["__payload__"] = json.dumps(facts)
    cached.write_text(json.dumps(stored if "__payload__" in stored else facts))
    rc, out = run_preflight(tmp_path, {"nvidia_driver_sysfs_pci_path": make_pci(tmp_path, [H100])}, env)
    assert rc != 0
    assert "Fedora 40 is not supported by onprem.triton.nvidia_driver" in out
