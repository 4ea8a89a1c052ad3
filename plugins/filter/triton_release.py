# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""Filters reading the Triton release table (lookup onprem.triton.triton_releases)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.triton.plugins.module_utils.triton_release import (
    branch_end_of_life,
    branch_past_end_of_life,
    TritonReleaseError,
    check_layout,
    default_layout,
    driver_table,
    image,
    image_tag,
    known_releases,
    offered_backends,
    offered_layouts,
    release_entry,
    upgrade_findings,
)


def triton_release_facts(table, release, variable="triton_release"):
    """{{ lookup('onprem.triton.triton_releases') | onprem.triton.triton_release_facts('26.07') }}: the entry of a
    release plus what the collection derives from it (offered backends and layouts, the default layout).
    An unknown release fails, listing the known ones and naming `variable`."""
    try:
        entry = release_entry(table, release, variable)
    except TritonReleaseError as exc:
        raise AnsibleFilterError(str(exc))
    entry["offered_backends"] = offered_backends(entry)
    entry["trtllm_offered_layouts"] = offered_layouts(entry)
    entry["trtllm_default_layout"] = default_layout(entry)
    entry["known_releases"] = known_releases(table)
    return entry


def triton_release_image(table, release, backend):
    """{{ table | onprem.triton.triton_release_image('25.12', 'vllm') }} -> '25.12-vllm-python-py3';
    '' when the table has no such image (the preflight explains it)."""
    return image_tag(table, release, backend)


def triton_release_check(table, release, backend, variable="triton_server_backend", release_variable="triton_release"):
    """The reason a release cannot serve a backend, or '' when it can (for assert tasks)."""
    try:
        image(release_entry(table, release, release_variable), backend, variable)
    except TritonReleaseError as exc:
        return str(exc)
    return ""


def triton_release_layout_check(table, release, layout, variable, release_variable="triton_release"):
    """The reason a release does not offer a TensorRT-LLM layout, or ''."""
    try:
        check_layout(release_entry(table, release, release_variable), layout, variable, release_variable)
    except TritonReleaseError as exc:
        return str(exc)
    return ""


def triton_driver_table(table):
    """{image tag: {cuda, min_driver, forward_compat}} of every image in the table."""
    return driver_table(table)


def triton_upgrade_findings(table, current, target, backend, models, driver_version=None, planned_branch=None,
                            known_branches=None, allow_forward_compat=True, refusal=None, kernel_modules=None,
                            today=None):
    """What moving a host from `current` to `target` implies (see module_utils upgrade_findings)."""
    try:
        return upgrade_findings(table, current, target, backend, models, driver_version or None,
                                str(planned_branch) if planned_branch else None, known_branches or [],
                                bool(allow_forward_compat), refusal or None, kernel_modules or None,
                                str(today) if today else None)
    except (TritonReleaseError, KeyError, ValueError) as exc:
        raise AnsibleFilterError("triton_upgrade_findings: %s" % exc)


def triton_driver_branch_eol(table, branch, today):
    """{{ table | onprem.triton.triton_driver_branch_eol('610', '2026-11-30') }} ->
    {"eol": "2026-08" or None, "past": true|false}: the table's end of life of a driver branch."""
    return {"eol": branch_end_of_life(table, str(branch)), "past": branch_past_end_of_life(table, str(branch), str(today))}


def triton_driver_branches_supported(table, branches, today):
    """The branches of `branches` not past their end of life on `today`, in their order."""
    return [str(b) for b in branches if not branch_past_end_of_life(table, str(b), str(today))]


def triton_upgrade_lines(host_findings):
    """(host, findings) -> one 'HOST | KIND | WHAT | ACTION' line per finding."""
    host, findings = host_findings
    return ["%s | %s | %s | %s" % (host, item["kind"], item["what"], item["action"]) for item in findings or []]


class FilterModule:
    def filters(self):
        return {
            "triton_release_facts": triton_release_facts,
            "triton_release_image": triton_release_image,
            "triton_release_check": triton_release_check,
            "triton_release_layout_check": triton_release_layout_check,
            "triton_driver_table": triton_driver_table,
            "triton_driver_branch_eol": triton_driver_branch_eol,
            "triton_driver_branches_supported": triton_driver_branches_supported,
            "triton_upgrade_findings": triton_upgrade_findings,
            "triton_upgrade_lines": triton_upgrade_lines,
        }
