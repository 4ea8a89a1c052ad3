"""plugins/filter/nvidia.py: the filters wrap module_utils and raise AnsibleFilterError on bad input."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.triton.plugins.filter.nvidia import FilterModule

FILTERS = FilterModule().filters()
TABLE = {"t": {"cuda": "13.0.2", "min_driver": "580.95.05", "forward_compat": []}}


def test_triton_driver_check_filter():
    assert FILTERS["triton_driver_check"]("580.159.04", "t", TABLE)["ok"] is True
    assert FILTERS["triton_driver_check"]("575.1", "t", TABLE)["ok"] is False


@pytest.mark.parametrize("driver,tag", [("580.1", "missing"), ("not-a-version", "t")])
def test_triton_driver_check_filter_errors(driver, tag):
    with pytest.raises(AnsibleFilterError):
        FILTERS["triton_driver_check"](driver, tag, TABLE)


def test_branch_filter():
    assert FILTERS["nvidia_driver_branch"]("580.159.04") == 580
    with pytest.raises(AnsibleFilterError):
        FILTERS["nvidia_driver_branch"]("")


BRANCHES = {
    "580": {"proprietary": {"pinned": ["cuda-drivers-580"]}, "open": {"pinned": ["nvidia-open-580"]}},
    "590": {"proprietary": {"branch_pin": ["nvidia-driver-pinning-590"], "pinned": ["cuda-drivers"]},
            "open": {"branch_pin": ["nvidia-driver-pinning-590"], "pinned": ["nvidia-open"]}},
    "610": {"proprietary": {"branch_pin": ["nvidia-driver-pinning-610"], "pinned": ["cuda-drivers"]},
            "open": {"branch_pin": ["nvidia-driver-pinning-610"], "pinned": ["nvidia-open"]}},
    "615": {"open": {"branch_pin": ["nvidia-driver-pinning-615"], "pinned": ["nvidia-open"]}},
}


def test_other_branch_packages_keep_the_names_the_new_branch_shares():
    other = FILTERS["nvidia_driver_other_branch_packages"]
    # 590 -> 610 proprietary: the old pinning package goes, cuda-drivers (same name) moves.
    assert other(BRANCHES, "610", "proprietary") == [
        "cuda-drivers-580", "nvidia-open-580", "nvidia-driver-pinning-590", "nvidia-open", "nvidia-driver-pinning-615"]
    # 590 proprietary -> 615 open: the proprietary metapackage goes too.
    assert "cuda-drivers" in other(BRANCHES, "615", "open")
    assert "nvidia-open" not in other(BRANCHES, "615", "open")
    with pytest.raises(AnsibleFilterError):
        other(BRANCHES, "615", "proprietary")


@pytest.mark.parametrize("version,branch", [("1:610.43.02-1", "610"), ("590.48.01-1", "590"),
                                            ("535.261.03-1~deb12u1", "535"), ("", ""), ("3.0.10-8", "")])
def test_package_branch(version, branch):
    assert FILTERS["nvidia_driver_package_branch"](version) == branch
