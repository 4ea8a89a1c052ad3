# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filter preflight_check_failures: every problem found by a role's checks, one message each."""

from __future__ import annotations

from ansible_collections.onprem.triton.plugins.module_utils.preflight import failure_messages

DOCUMENTATION = r"""
name: preflight_check_failures
short_description: The problems found by a role's checks, one message per problem
version_added: "0.3.0"
description:
  - A role's C(tasks/preflight.yml) runs each of its checks with C(ignore_errors) and registers the result
    as C(__<role>_check_<what>), so that one bad value does not hide the next one; its last task fails
    with every problem found (C(roles/common/tasks/preflight_report.yml)).
  - This filter reads those registered results and returns the message of each failed one (each failed item
    of a looped check, each C(argument_errors) entry). Passed and skipped checks give nothing.
positional: _input
options:
  _input:
    description: Registered results of checks (C(assert) tasks and the like), in the order they ran.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Stop with every problem found above
  ansible.builtin.fail:
    msg: "{{ item }}"
  loop: "{{ query('ansible.builtin.vars', *query('ansible.builtin.varnames', '^__triton_server_check_'))
            | onprem.triton.preflight_check_failures }}"
"""

RETURN = r"""
_value:
  description: One message per problem, whitespace folded to single spaces; empty when every check passed.
  type: list
  elements: str
"""


def preflight_check_failures(results):
    """The message of each failed check among registered results."""
    return [message for result in results or [] if isinstance(result, dict) and result.get("failed")
            for message in failure_messages(result)]


class FilterModule:
    """onprem.triton preflight filters."""

    def filters(self):
        return {"preflight_check_failures": preflight_check_failures}
