# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""Lookup returning the collection's Triton release table."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: triton_releases
author: onprem.triton maintainers (@onprem-triton)
short_description: The Triton release table of the collection
version_added: 0.1.0
description:
  - Returns the release table kept in C(roles/_common/vars/triton_releases.yml) of this collection, the one place
    where what each Triton release ships is written down with its sources. A dict with C(default) (the release
    pinned when the inventory sets no C(triton_release)), C(sources) and C(releases).
  - Takes no terms. Use the filters C(onprem.triton.triton_release_facts), C(onprem.triton.triton_release_image) and
    C(onprem.triton.triton_driver_table) to read it.
"""

EXAMPLES = r"""
- name: The release pinned by default
  ansible.builtin.debug:
    msg: "{{ lookup('onprem.triton.triton_releases').default }}"

- name: The vLLM image tag of the pinned release
  ansible.builtin.debug:
    msg: "{{ lookup('onprem.triton.triton_releases') | onprem.triton.triton_release_image(triton_release, 'vllm') }}"
"""

RETURN = r"""
_raw:
  description: The release table (one dict).
  type: list
  elements: dict
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.lookup import LookupBase

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core requires PyYAML
    yaml = None

# plugins/lookup/ -> the collection root -> the internal _common role's vars.
TABLE_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "roles", "_common", "vars", "triton_releases.yml")
TABLE_KEY = "_common_triton_releases"


def load_table(path=TABLE_PATH):
    with open(path) as handle:
        document = yaml.safe_load(handle)
    return document[TABLE_KEY]


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleLookupError("triton_releases takes no terms; filter its result (triton_release_facts)")
        try:
            return [load_table()]
        except (IOError, OSError, KeyError, yaml.YAMLError) as exc:
            raise AnsibleLookupError("cannot read the Triton release table %s: %s" % (TABLE_PATH, to_native(exc)))
