"""Pure helpers of plugins/module_utils/nvidia.py: CSV parsing, versions, the driver table."""
import json
import os

import pytest
import yaml

from ansible_collections.onprem.triton.plugins.module_utils import nvidia, triton_release

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..")
H100 = os.path.join(ROOT, "tests", "fixtures", "nvidia", "h100")


def _role_table():
    """The role's driver table: derived from the release table, as vars/main.yml does."""
    with open(os.path.join(ROOT, "roles", "_common", "vars", "triton_releases.yml")) as handle:
        return triton_release.driver_table(yaml.safe_load(handle)["_common_triton_releases"])


@pytest.mark.parametrize("left,right,expected", [
    ("580.159.04", "580.95.05", 1),     # as strings '1' < '9' would say the opposite
    ("580.95.05", "580.159.04", -1),
    ("10", "8", 1),                     # the EL '10' < '8' trap
    ("535", "535.0.0", 0),
    ("535.86", "535.86.10", -1),
    ("570.86.10", "570.86.10", 0),
    ("04", "4", 0),
])
def test_compare_versions_is_numeric(left, right, expected):
    assert nvidia.compare_versions(left, right) == expected


@pytest.mark.parametrize("junk", ["", "580.x", "r535", "535-1", None])
def test_version_tuple_rejects_junk(junk):
    with pytest.raises(ValueError):
        nvidia.version_tuple(junk)


def test_parse_the_csv_the_h100_reported():
    with open(os.path.join(H100, "nvidia_smi_query.csv")) as handle:
        gpus, driver = nvidia.parse_query_csv(handle.read())
    assert driver == "580.159.04"
    assert gpus == [{
        "index": 0,
        "uuid": "GPU-afae2ef2-d2f1-87b1-3e79-128f38c8adf3",
        "name": "NVIDIA H100 80GB HBM3",
        "memory_total_mib": 81559,
        "compute_capability": "9.0",
        "mig_mode": "disabled",
        "pci_bus_id": "00000000:00:06.0",
    }]


def test_parse_several_gpus_sorted_with_mig_states_and_na():
    text = (
        "1, GPU-b, NVIDIA A100-SXM4-80GB, 81920, 8.0, Enabled, 00000000:07:00.0, 535.261.03\n"
        "\n"
        "0, GPU-a, Tesla V100-PCIE-32GB, 32768, 7.0, [N/A], 00000000:06:00.0, 535.261.03\n"
    )
    gpus, driver = nvidia.parse_query_csv(text)
    assert driver == "535.261.03"
    assert [gpu["index"] for gpu in gpus] == [0, 1]
    assert [gpu["mig_mode"] for gpu in gpus] == ["unsupported", "enabled"]
    assert gpus[0]["compute_capability"] == "7.0"
    assert gpus[1]["memory_total_mib"] == 81920


def test_parse_name_with_comma_survives():
    gpus, driver = nvidia.parse_query_csv("0, GPU-a, Odd, Name, 1024, 7.5, Disabled, 0000:01:00.0, 550.1\n")
    assert gpus[0]["name"] == "Odd, Name"
    assert gpus[0]["memory_total_mib"] == 1024
    assert driver == "550.1"


def test_parse_empty_output_is_no_gpu():
    assert nvidia.parse_query_csv("") == ([], None)


@pytest.mark.parametrize("text", [
    "0, GPU-a, NVIDIA H100\n",                                        # too few columns
    "zero, GPU-a, H100, 81559, 9.0, Disabled, 0:6.0, 580.159.04\n",   # index not a number
    "0, GPU-a, H100, lots, 9.0, Disabled, 0:6.0, 580.159.04\n",       # memory not a number
])
def test_parse_rejects_malformed_lines(text):
    with pytest.raises(nvidia.NvidiaParseError):
        nvidia.parse_query_csv(text)


def test_parse_rejects_mixed_driver_versions():
    text = ("0, GPU-a, H100, 81559, 9.0, Disabled, 0:6.0, 580.159.04\n"
            "1, GPU-b, H100, 81559, 9.0, Disabled, 0:7.0, 580.95.05\n")
    with pytest.raises(nvidia.NvidiaParseError, match="different driver versions"):
        nvidia.parse_query_csv(text)


def test_cuda_version_from_the_h100_outputs():
    with open(os.path.join(H100, "nvidia_smi_version.txt")) as handle:
        assert nvidia.parse_cuda_version(handle.read()) == "13.0"
    with open(os.path.join(H100, "nvidia_smi_q.txt")) as handle:
        assert nvidia.parse_cuda_version(handle.read()) == "13.0"
    assert nvidia.parse_cuda_version("NVIDIA-SMI version : 470.1\n") is None


@pytest.mark.parametrize("value,expected", [(13000, "13.0"), (12080, "12.8"), (12020, "12.2"), (11040, "11.4")])
def test_cuda_version_from_nvml_int(value, expected):
    assert nvidia.cuda_version_from_int(value) == expected


@pytest.mark.parametrize("value,expected", [
    (0, "disabled"), (1, "enabled"), ("Enabled", "enabled"), ("Disabled", "disabled"),
    ("[N/A]", "unsupported"), (None, "unsupported"),
])
def test_normalise_mig_mode(value, expected):
    assert nvidia.normalise_mig_mode(value) == expected


@pytest.mark.parametrize("driver,tag,ok,via", [
    ("580.159.04", "25.12-trtllm-python-py3", True, "minimum"),      # what the H100 ran
    ("580.159.04", "25.12-vllm-python-py3", False, None),            # needs 590.44.01
    ("580.95.05", "25.12-trtllm-python-py3", True, "minimum"),       # exactly the minimum
    ("580.95.4", "25.12-trtllm-python-py3", False, None),
    ("610.43.02", "26.07-vllm-python-py3", True, "minimum"),
    ("535.261.03", "25.10-trtllm-python-py3", True, "forward_compat"),  # Debian 12's driver
    ("535.54.03", "25.10-trtllm-python-py3", False, None),           # R535 but older than 535.86
    ("550.127.05", "25.10-trtllm-python-py3", False, None),          # R550 is not forward-compatible
    ("535.261.03", "25.01-vllm-python-py3", False, None),
])
def test_driver_check_against_the_role_table(driver, tag, ok, via):
    result = nvidia.check_driver_for_container(driver, tag, _role_table())
    assert result["ok"] is ok
    assert result["via"] == via
    assert tag in result["reason"]


def test_forward_compat_can_be_refused():
    result = nvidia.check_driver_for_container("535.261.03", "25.10-trtllm-python-py3", _role_table(),
                                               allow_forward_compat=False)
    assert not result["ok"]
    assert "forward-compatible" in result["reason"]


def test_unknown_tag_names_the_known_ones():
    with pytest.raises(KeyError, match="25.12-vllm-python-py3"):
        nvidia.check_driver_for_container("580.1", "99.99-vllm-python-py3", _role_table())


@pytest.mark.parametrize("recording", ["h100", "h200x2"])
def test_recorded_refusals_match_the_check(recording):
    with open(os.path.join(os.path.dirname(H100), recording, "too_new_refusal.txt")) as handle:
        recorded = handle.read()
    with open(os.path.join(os.path.dirname(H100), recording, "nvidia_gpu_info.json")) as handle:
        driver = json.load(handle)["driver_version"]
    result = nvidia.check_driver_for_container(driver, "25.12-vllm-python-py3", _role_table())
    assert recorded.startswith(result["reason"])


def test_h100_refusal_fixture_matches_the_check():
    with open(os.path.join(H100, "too_new_refusal.txt")) as handle:
        recorded = handle.read()
    result = nvidia.check_driver_for_container("580.159.04", "25.12-vllm-python-py3", _role_table())
    assert recorded.startswith(result["reason"])


@pytest.mark.parametrize("branch,version,tag,ok,via", [
    ("590", "", "25.12-vllm-python-py3", True, "minimum"),
    ("580", "", "25.12-vllm-python-py3", False, None),           # the old shipped default
    ("580", "", "25.12-trtllm-python-py3", True, "minimum"),
    ("535", "", "25.10-trtllm-python-py3", True, "forward_compat"),
    ("550", "", "25.10-trtllm-python-py3", False, None),
    ("590", "590.44.01-1", "25.12-vllm-python-py3", True, "minimum"),
    ("590", "1:590.10.01-0ubuntu1", "25.12-vllm-python-py3", False, None),
])
def test_branch_check_before_install(branch, version, tag, ok, via):
    result = nvidia.check_branch_for_container(branch, tag, _role_table(), True, version)
    assert (result["ok"], result["via"]) == (ok, via), result["reason"]
    assert tag in result["reason"]


# The default release against every OS's default branch: tests/unit/test_triton_releases.py.
