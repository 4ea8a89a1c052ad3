# SPDX-License-Identifier: Apache-2.0
"""plugins/filter/json_object_problem.py: why a slurped file is not a JSON object."""

import base64

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.triton.plugins.filter.json_object_problem import FilterModule, json_object_problem


def _slurped(raw):
    return base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b'{"chat_template": "{{ messages }}", "model_max_length": 8192}', ""),
        ('{"bos_token": "\u00e9"}'.encode("utf-8"), ""),
        # a raw newline inside a string (the echo of molecule triton_server once wrote this)
        (b'{"chat_template": "a\nb"}', "is not valid JSON: Invalid control character at: line 1 column 21 (char 20)"),
        (b"", "is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"<html>401</html>", "is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'["a"]', "is JSON but not an object (a list)"),
        (b'{"x": "\xff"}', "is not UTF-8 text ("),
    ],
)
def test_problems(raw, problem):
    found = json_object_problem(_slurped(raw))
    assert found.startswith(problem) if problem else found == ""


@pytest.mark.parametrize("content", [None, "not base64!"])
def test_bad_input(content):
    with pytest.raises(AnsibleFilterError):
        json_object_problem(content)


def test_registered():
    assert FilterModule().filters()["json_object_problem"] is json_object_problem
