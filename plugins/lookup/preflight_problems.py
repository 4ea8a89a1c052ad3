# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""Lookup preflight_problems: every problem the checks of a role found, one message each."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: preflight_problems
author: onprem.triton maintainers (@onprem-triton)
short_description: The problems found by a role's preflight checks, one message per problem
version_added: 0.3.0
description:
  - A role's C(tasks/preflight.yml) runs each of its checks with C(ignore_errors) and registers the result
    as C(__<role>_check_<what>), so that one bad value does not hide the next one. This lookup reads those
    results (in the order they were registered) and returns the message of each failed one (each failed
    item of a looped check, each C(argument_errors) entry). Passed and skipped checks give nothing.
  - Used by C(roles/_common/tasks/preflight_report.yml) (a role's last preflight task fails with every
    problem) and by C(playbooks/tasks/preflight_stage.yml) (the fleet-wide preflight report).
options:
  _terms:
    description: Role names (the C(<role>) of C(__<role>_check_<what>)).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Stop with every problem the checks of triton_server found
  ansible.builtin.fail:
    msg: "{{ item }}"
  loop: "{{ query('onprem.triton.preflight_problems', 'triton_server') }}"
"""

RETURN = r"""
_raw:
  description: One message per problem, whitespace folded to single spaces; empty when every check passed.
  type: list
  elements: str
"""

import re

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.onprem.triton.plugins.module_utils.preflight import check_failures

ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def registered_checks(variables, role):
    """The registered check results of a role, in the order the variables hold them."""
    prefix = "__%s_check_" % role
    return [value for name, value in (variables or {}).items() if name.startswith(prefix)]


class LookupModule(LookupBase):
    """Reads the registered checks of each role named."""

    def run(self, terms, variables=None, **kwargs):
        problems = []
        for role in terms:
            if not isinstance(role, str) or not ROLE_NAME.match(role):
                raise AnsibleLookupError("preflight_problems takes role names, not %r" % (role,))
            problems.extend(check_failures(registered_checks(variables, role)))
        return problems
