"""plugins/modules/nvidia_gpu_info.py.

nvidia-smi is exercised for real through small executables written by the
tests (replaying what the H100 printed, or failing as a host without a driver
does); only NVML, a C library that needs a GPU, is replaced by a stand-in.
"""
import json
import os
import stat
import types

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.onprem.triton.plugins.modules import nvidia_gpu_info

H100 = os.path.join(os.path.dirname(__file__), "..", "..", "..", "fixtures", "nvidia", "h100")


class ModuleExit(Exception):
    def __init__(self, result, failed):
        super().__init__(result.get("msg"))
        self.result = result
        self.failed = failed


@pytest.fixture(autouse=True)
def capture_exit(monkeypatch):
    def exit_json(self, **result):
        raise ModuleExit(result, failed=False)

    def fail_json(self, **result):
        raise ModuleExit(result, failed=True)

    monkeypatch.setattr(nvidia_gpu_info.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(nvidia_gpu_info.AnsibleModule, "fail_json", fail_json)


def run_module(**args):
    with patch_module_args(args):
        with pytest.raises(ModuleExit) as caught:
            nvidia_gpu_info.main()
    return caught.value


def fixture_text(name):
    with open(os.path.join(H100, name)) as handle:
        return handle.read()


def write_smi(tmp_path, script):
    path = tmp_path / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def recorded_smi(tmp_path, recording):
    """An nvidia-smi that prints exactly what a recorded machine printed (tests/fixtures/nvidia/<recording>)."""
    folder = os.path.join(os.path.dirname(H100), recording)
    return write_smi(tmp_path, """
case "$1" in
  --query-gpu=index,uuid,name,memory.total,compute_cap,mig.mode.current,pci.bus_id,driver_version)
    [ "$2" = "--format=csv,noheader,nounits" ] || exit 2; cat '%s';;
  --version) cat '%s';;
  *) exit 2;;
esac
""" % (os.path.abspath(os.path.join(folder, "nvidia_smi_query.csv")),
       os.path.abspath(os.path.join(folder, "nvidia_smi_version.txt"))))


@pytest.fixture
def h100_smi(tmp_path):
    """An nvidia-smi that prints exactly what the H100 printed, and checks its arguments."""
    return recorded_smi(tmp_path, "h100")


@pytest.fixture
def no_nvml(monkeypatch):
    monkeypatch.setattr(nvidia_gpu_info, "HAS_PYNVML", False)
    monkeypatch.setattr(nvidia_gpu_info, "PYNVML_IMPORT_ERROR", ImportError("No module named 'pynvml'"))


def test_smi_result_equals_what_the_module_returned_on_two_h200s(tmp_path, no_nvml):
    result = run_module(nvidia_smi_path=recorded_smi(tmp_path, "h200x2")).result
    with open(os.path.join(os.path.dirname(H100), "h200x2", "nvidia_gpu_info_smi.json")) as handle:
        expected = json.load(handle)
    assert result["ansible_facts"]["nvidia_gpu_info"] == expected
    assert [gpu["index"] for gpu in result["gpus"]] == [0, 1]
    assert {gpu["memory_total_mib"] for gpu in result["gpus"]} == {143771}


def test_smi_result_equals_what_the_module_returned_on_the_h100(h100_smi, no_nvml):
    result = run_module(nvidia_smi_path=h100_smi).result
    expected = json.loads(fixture_text("nvidia_gpu_info_smi.json"))
    facts = result["ansible_facts"]["nvidia_gpu_info"]
    assert facts == expected
    assert result["changed"] is False
    assert result["count"] == 1 and result["gpus"][0]["memory_total_mib"] == 81559


def test_no_driver_no_nvml_gives_count_zero_and_reason(tmp_path, monkeypatch, no_nvml):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no nvidia-smi anywhere we look
    monkeypatch.setattr(nvidia_gpu_info, "_SMI_DIRS", [str(tmp_path)])
    exited = run_module()
    assert not exited.failed
    assert exited.result["count"] == 0
    assert exited.result["gpus"] == []
    assert exited.result["source"] == "none"
    assert "No module named 'pynvml'" in exited.result["reason"]
    assert "nvidia-smi not found" in exited.result["reason"]


def test_driver_not_loaded_gives_count_zero_with_smi_message(tmp_path, no_nvml):
    smi = write_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it couldn'\"'\"'t communicate with the NVIDIA driver.'; exit 9\n")
    exited = run_module(backend="nvidia-smi", nvidia_smi_path=smi)
    assert exited.result["count"] == 0
    assert "exited 9" in exited.result["reason"]
    assert "communicate with the NVIDIA driver" in exited.result["reason"]


def test_garbled_smi_output_fails_clearly(tmp_path, no_nvml):
    smi = write_smi(tmp_path, "echo 'this is not csv'\n")
    exited = run_module(nvidia_smi_path=smi)
    assert exited.failed
    assert "Could not parse nvidia-smi output" in exited.result["msg"]


class FakeNVMLError(Exception):
    pass


def fake_pynvml(init_error=None, mig_supported=False):
    """Stand-in for the NVML bindings, answering with the H100's values."""
    gpu = json.loads(fixture_text("nvidia_gpu_info.json"))["gpus"][0]
    calls = []

    def init():
        calls.append("init")
        if init_error:
            raise FakeNVMLError(init_error)

    def mig_mode(handle):
        if not mig_supported:
            raise FakeNVMLError("Not Supported")
        return [0, 0]

    return types.SimpleNamespace(
        NVMLError=FakeNVMLError,
        calls=calls,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlSystemGetDriverVersion=lambda: "580.159.04",
        nvmlSystemGetCudaDriverVersion=lambda: 13000,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda index: ("handle", index),
        nvmlDeviceGetCudaComputeCapability=lambda handle: (9, 0),
        nvmlDeviceGetMigMode=mig_mode,
        nvmlDeviceGetUUID=lambda handle: gpu["uuid"],
        nvmlDeviceGetName=lambda handle: gpu["name"],
        # 81559 MiB plus a few bytes: the module rounds down to whole MiB.
        nvmlDeviceGetMemoryInfo=lambda handle: types.SimpleNamespace(total=81559 * 1024 * 1024 + 512),
        nvmlDeviceGetPciInfo=lambda handle: types.SimpleNamespace(busId=gpu["pci_bus_id"]),
    )


def test_nvml_path_matches_the_h100_nvml_result(monkeypatch):
    nvml = fake_pynvml(mig_supported=True)
    monkeypatch.setattr(nvidia_gpu_info, "pynvml", nvml)
    monkeypatch.setattr(nvidia_gpu_info, "HAS_PYNVML", True)
    facts = run_module().result["ansible_facts"]["nvidia_gpu_info"]
    assert facts == json.loads(fixture_text("nvidia_gpu_info.json"))
    assert nvml.calls == ["init", "shutdown"]


def test_nvml_mig_not_supported_is_reported_as_unsupported(monkeypatch):
    monkeypatch.setattr(nvidia_gpu_info, "pynvml", fake_pynvml(mig_supported=False))
    monkeypatch.setattr(nvidia_gpu_info, "HAS_PYNVML", True)
    assert run_module(backend="nvml").result["gpus"][0]["mig_mode"] == "unsupported"


def test_nvml_init_failure_falls_back_to_smi(monkeypatch, h100_smi):
    monkeypatch.setattr(nvidia_gpu_info, "pynvml", fake_pynvml(init_error="Driver Not Loaded"))
    monkeypatch.setattr(nvidia_gpu_info, "HAS_PYNVML", True)
    result = run_module(nvidia_smi_path=h100_smi).result
    assert result["source"] == "nvidia-smi"
    assert result["count"] == 1


def test_nvml_only_without_driver_reports_why(monkeypatch):
    monkeypatch.setattr(nvidia_gpu_info, "pynvml", fake_pynvml(init_error="Driver Not Loaded"))
    monkeypatch.setattr(nvidia_gpu_info, "HAS_PYNVML", True)
    result = run_module(backend="nvml").result
    assert result["count"] == 0
    assert result["reason"] == "NVML could not initialise: Driver Not Loaded"
