# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filter triton_drift_rows: one host's drift as table rows."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: triton_drift_rows
short_description: Turn one host's drift list into table rows
version_added: "0.1.0"
description:
  - Takes the host variables of one host (C(hostvars[host])), whose C(triton_drift) list the C(drift) task files
    of the roles fill (used by the playbook C(onprem.triton.drift)), and returns one row per difference -
    host, component, item, what the inventory wants, what the host has.
positional: _input
options:
  _input:
    description: The host's variables, with C(inventory_hostname) and C(triton_drift).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Rows of every host
  ansible.builtin.debug:
    msg: "{{ groups['triton_servers'] | map('extract', hostvars) | map('onprem.triton.triton_drift_rows') | flatten }}"
"""

RETURN = r"""
_value:
  description: Rows of five strings - host, component, item, wants, has.
  type: list
  elements: list
"""


def triton_drift_rows(hostvars):
    """Return [host, component, item, wants, has] for each difference of one host."""
    try:
        host = hostvars["inventory_hostname"]
        drift = hostvars.get("triton_drift") or []
    except (KeyError, TypeError, AttributeError):
        raise AnsibleFilterError("triton_drift_rows expects a host's variables (hostvars[host])")
    if not isinstance(drift, list):
        raise AnsibleFilterError("triton_drift of %s must be a list, got %r" % (host, drift))
    return [[str(host), str(entry.get("component", "")), str(entry.get("item", "")), str(entry.get("wants", "")),
             str(entry.get("has", ""))] for entry in drift]


class FilterModule:
    """onprem.triton day-2 filters."""

    def filters(self):
        return {"triton_drift_rows": triton_drift_rows}
