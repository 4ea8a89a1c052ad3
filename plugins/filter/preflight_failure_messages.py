# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filter preflight_failure_messages: the reason a failed check gave, as one line per problem."""

from __future__ import annotations

from ansible_collections.onprem.triton.plugins.module_utils.preflight import failure_messages

DOCUMENTATION = r"""
name: preflight_failure_messages
short_description: Turn the result of a failed check into one line per problem, prefixed with its stage
version_added: "0.2.0"
description:
  - Used by the first play of C(site.yml) (C(playbooks/preflight.yml)), which runs every role's preflight
    in a C(block)/C(rescue) so that it can go on after a problem and report every problem at once.
  - Reads C(ansible_failed_result) as the rescue sees it, whatever failed. An C(assert) gives its C(msg),
    a looped C(assert) the C(msg) of each failed item, the validation of a role's argument_specs each of
    its C(argument_errors), a module its C(msg).
positional: _input
options:
  _input:
    description: C(ansible_failed_result) in a C(rescue) section.
    type: dict
    required: true
  stage:
    description: The stage the problem belongs to (a role name), put in front of each line.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Note the problem
  ansible.builtin.set_fact:
    __problems: "{{ __problems + [ansible_failed_result | onprem.triton.preflight_failure_messages('hf_model')] }}"
"""

RETURN = r"""
_value:
  description: One line per problem (the stage, a colon, the message), joined by newlines.
  type: str
"""


def preflight_failure_messages(result, stage):
    """'<stage>: <message>' for each problem in a failed task's result."""
    return "\n".join("%s: %s" % (stage, message) for message in failure_messages(result))


class FilterModule:
    """onprem.triton preflight filters."""

    def filters(self):
        return {"preflight_failure_messages": preflight_failure_messages}
