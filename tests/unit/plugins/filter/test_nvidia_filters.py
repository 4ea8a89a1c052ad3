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
