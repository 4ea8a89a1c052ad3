# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filter json_object_problem: why a slurped file is not a JSON object ('' when it is one)."""

from __future__ import annotations

import base64
import binascii
import json

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: json_object_problem
short_description: Say why a slurped file is not a JSON object
version_added: "0.1.0"
description:
  - Takes the base64 C(content) of M(ansible.builtin.slurp) and returns an empty string when the file is a
    JSON object, else what is wrong with it (the decoder's message, with line and column), so a preflight
    check can name its variable and the file instead of failing inside C(from_json).
  - "transformers reads C(tokenizer_config.json) with C(json.load) and uses it as a dict
    (C(get_tokenizer_config), models/auto/tokenization_auto.py): a file that is not a JSON object makes
    Triton's OpenAI frontend exit at start."
positional: _input
options:
  _input:
    description: The C(content) of a M(ansible.builtin.slurp) result (base64).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse a tokenizer config that is not JSON
  ansible.builtin.assert:
    that: (slurped.content | onprem.triton.json_object_problem) == ''
    fail_msg: "my_tokenizer: {{ slurped.source }} {{ slurped.content | onprem.triton.json_object_problem }}"
"""

RETURN = r"""
_value:
  description: Empty when the content is a JSON object, else a sentence saying what is wrong.
  type: str
"""


def json_object_problem(content):
    """'' when the base64 content decodes to a JSON object, else the problem."""
    if not isinstance(content, str):
        raise AnsibleFilterError("json_object_problem expects the base64 content of a slurp result")
    try:
        raw = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as error:
        raise AnsibleFilterError("json_object_problem expects base64 content: %s" % error) from error
    try:
        # as transformers reads it: open(..., encoding='utf-8') then json.load
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        return "is not UTF-8 text (%s)" % error
    except json.JSONDecodeError as error:
        return "is not valid JSON: %s" % error
    if not isinstance(value, dict):
        return "is JSON but not an object (a %s)" % type(value).__name__
    return ""


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {"json_object_problem": json_object_problem}
