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

from tests.integration.role_check import run_cases_as_hosts

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


# One run for every case below: each case is a host of its own (connection local, its own PCI tree),
# so each meets the preflight alone and a refused host does not stop the others. Host variables rank
# below the role's vars/ (as _nvidia_driver_today): such a case runs on its own with -e (run_preflight).
# Cases that pass: (host, variables, devices, what the output must say).
PASSING = [
    # NVIDIA's repository, branch 590: the first that runs the default container (CUDA 13.1).
    ("defaults-h100", {}, [NIC, H100],
     ["PREFLIGHT OK branch=590 pin=nvidia-driver-pinning-590 packages=cuda-drivers",
      "branch R590 meets 590.44.01, the minimum for 25.12-vllm-python-py3"]),
    # the TensorRT-LLM image of a release follows triton_release
    ("trtllm-follows-release", {"triton_release": "26.07", "triton_server_backend": "trtllm"}, [H100],
     ["branch R590 meets 590.44.01, the minimum for 26.07-trtllm-python-py3 (CUDA 13.1.0)"]),
    ("distribution-driver-with-a-container-it-runs",
     {"nvidia_driver_source": "distribution", "nvidia_driver_triton_container_tag": "25.10-trtllm-python-py3"}, [H100],
     ["PREFLIGHT OK branch=535 pin= packages=nvidia-kernel-dkms,nvidia-smi,libcuda1",
      "branch R535 is forward-compatible for 25.10-trtllm-python-py3"]),
    # the newer vLLM images on the branch they need
    ("26.07-on-610", {"triton_release": "26.07", "nvidia_driver_branch": "610"}, [H100],
     ["PREFLIGHT OK branch=610 pin=nvidia-driver-pinning-610 packages=cuda-drivers",
      "branch R610 meets 610.43.02, the minimum for 26.07-vllm-python-py3"]),
    ("26.08-on-615-open", {"triton_release": "26.08", "nvidia_driver_branch": "615", "nvidia_driver_kernel_modules": "open"},
     [H100], ["PREFLIGHT OK branch=615 pin=nvidia-driver-pinning-615 packages=nvidia-open",
              "branch R615 meets 615.61, the minimum for 26.08-vllm-python-py3"]),
    ("open-modules-on-hopper", {"nvidia_driver_kernel_modules": "open"}, [H100],
     ["pin=nvidia-driver-pinning-590 packages=nvidia-open"]),
]
# Cases refused: (host, variables, devices, what the output must say).
REFUSED = [
    ("no-gpu", {}, [NIC], ["No NVIDIA GPU on the PCI bus", "nvidia_driver_require_gpu: false"]),
    ("unknown-branch", {"nvidia_driver_branch": "999"}, [H100],
     ["nvidia_driver_branch=999 is unknown", "known branches: 550, 570, 575, 580, 590"]),
    ("branch-of-other-source", {"nvidia_driver_source": "cuda_repo", "nvidia_driver_branch": "535"}, [H100],
     ["nvidia_driver_branch=535 is unknown for nvidia_driver_source=cuda_repo"]),
    ("version-outside-branch", {"nvidia_driver_version": "550.1-1"}, [H100],
     ["nvidia_driver_version=550.1-1 is not a version of branch 590"]),
    # The shipped defaults before this check: branch 580 for the 25.12 vLLM image (CUDA 13.1).
    ("branch-too-old-for-container", {"nvidia_driver_branch": "580"}, [H100],
     ["branch R580 is older than 590.44.01, the minimum for 25.12-vllm-python-py3",
      "nvidia_driver_branch=580", "nvidia_driver_triton_container_tag=25.12-vllm-python-py3"]),
    ("distribution-branch-too-old", {"nvidia_driver_source": "distribution"}, [H100],
     ["branch R535 is older than 590.44.01", "nvidia_driver_source=distribution"]),
    ("exact-version-too-old", {"nvidia_driver_branch": "590", "nvidia_driver_version": "590.10.01-1"}, [H100],
     ["driver 590.10.01 is older than 590.44.01", "nvidia_driver_version=590.10.01-1"]),
    ("unknown-container", {"nvidia_driver_triton_container_tag": "24.01-vllm-python-py3"}, [H100],
     ["nvidia_driver_triton_container_tag=24.01-vllm-python-py3 is not in the driver table",
      "nvidia_driver_triton_containers_extra"]),
    # One variable, triton_release: the container the driver is checked against follows it.
    ("release-needs-a-newer-branch", {"triton_release": "26.07"}, [H100],
     ["branch R590 is older than 610.43.02, the minimum for 26.07-vllm-python-py3 (CUDA 13.3.0)",
      "nvidia_driver_triton_container_tag=26.07-vllm-python-py3"]),
    # 615 ships open kernel modules only (NVIDIA's CUDA repository from 615, role README).
    ("615-proprietary", {"triton_release": "26.08", "nvidia_driver_branch": "615"}, [H100],
     ["nvidia_driver_kernel_modules=proprietary is not offered for branch 615"]),
    ("26.08-on-610", {"triton_release": "26.08", "nvidia_driver_branch": "610"}, [H100],
     ["branch R610 is older than 615.61, the minimum for 26.08-vllm-python-py3"]),
    ("unknown-release", {"triton_release": "26.99"}, [H100],
     ["nvidia_driver_triton_container_tag is empty", "Triton release '26.99' is not in the release table",
      "known: 26.08, 26.07, 25.12"]),
    ("backend-not-in-release", {"triton_release": "26.08", "triton_server_backend": "trtllm"}, [H100],
     ["trtllm is not offered by Triton release 26.08 (the release table confirms: vllm)"]),
    ("open-modules-on-volta", {"nvidia_driver_kernel_modules": "open"}, [H100, V100],
     ["0000:00:07.0 (device 0x1db4) is older than Turing", "set nvidia_driver_kernel_modules to proprietary"]),
    ("too-little-disk", {"nvidia_driver_min_free_disk_mib": 10 ** 9}, [H100], ["nvidia_driver_min_free_disk_mib=1000000000"]),
]


@pytest.fixture(scope="module")
def preflight_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("nvidia_driver_preflight")
    cases = {}
    for host, extra_vars, devices, _expected in PASSING + REFUSED:
        (tmp_path / host).mkdir()
        cases[host] = dict(extra_vars, nvidia_driver_sysfs_pci_path=make_pci(tmp_path / host, devices))
    return run_cases_as_hosts(tmp_path, PLAYBOOK, cases)


@pytest.mark.parametrize("host, expected", [(case[0], case[3]) for case in PASSING],
                         ids=[case[0] for case in PASSING])
def test_a_supported_driver_for_the_container_passes(preflight_runs, host, expected):
    run, hosts = preflight_runs
    assert not hosts[host].failed, hosts[host].text[-3000:] or run.stdout[-3000:]
    for text in expected:
        assert text in hosts[host].text, (text, hosts[host].text[-3000:])


@pytest.mark.parametrize("host, expected", [(case[0], case[3]) for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_bad_input_is_refused_naming_the_variable(preflight_runs, host, expected):
    run, hosts = preflight_runs
    assert hosts[host].failed, hosts[host].text[-3000:] or run.stdout[-3000:]
    for text in expected:
        assert text in hosts[host].text, (text, hosts[host].text[-3000:])


EOL_WARNING = "WARNING: nvidia_driver_branch=610 is past its end of life (2026-08"


@pytest.mark.parametrize("today,warned", [("2026-11-30", True), ("2026-08-31", False)])
def test_a_branch_past_its_end_of_life_is_warned_about_not_refused(tmp_path, today, warned):
    """R610 (a New Feature Branch) ended in August 2026 (the release table's driver_branches)."""
    rc, out = run_preflight(tmp_path, {"triton_release": "26.07", "nvidia_driver_branch": "610",
                                       "_nvidia_driver_today": today,
                                       "nvidia_driver_sysfs_pci_path": make_pci(tmp_path, [H100])})
    assert rc == 0, out
    assert "PREFLIGHT OK branch=610" in out
    assert (EOL_WARNING in out) is warned, out
    if warned:
        assert "known for this source and not past it: 550, 570, 575, 580, 590, 615" in " ".join(out.split()), out


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
