# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""Filters for the NVIDIA roles: driver requirements compared numerically."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.onprem.triton.plugins.module_utils.nvidia import (
    check_branch_for_container,
    check_driver_for_container,
    driver_branch,
    other_branch_packages,
    package_branch,
)


def triton_driver_check(driver_version, tag, table, allow_forward_compat=True):
    """{{ '580.159.04' | onprem.triton.triton_driver_check('25.12-vllm-python-py3', table) }}"""
    try:
        return check_driver_for_container(str(driver_version), str(tag), table, bool(allow_forward_compat))
    except (KeyError, ValueError) as exc:
        raise AnsibleFilterError("triton_driver_check: %s" % exc)


def triton_driver_branch_check(branch, tag, table, allow_forward_compat=True, version=""):
    """{{ '590' | onprem.triton.triton_driver_branch_check('25.12-vllm-python-py3', table, true, '') }}:
    the driver a host is about to get (a branch, or an exact version) against the container."""
    try:
        return check_branch_for_container(branch, str(tag), table, bool(allow_forward_compat), str(version or ""))
    except (KeyError, ValueError) as exc:
        raise AnsibleFilterError("triton_driver_branch_check: %s" % exc)


def nvidia_driver_branch(driver_version):
    """{{ '580.159.04' | onprem.triton.nvidia_driver_branch }} -> 580"""
    try:
        return driver_branch(str(driver_version))
    except ValueError as exc:
        raise AnsibleFilterError("nvidia_driver_branch: %s" % exc)


def nvidia_driver_other_branch_packages(branches, branch, flavour):
    """{{ branches | onprem.triton.nvidia_driver_other_branch_packages('610', 'proprietary') }}: what the
    role installs and holds for the other branches and flavours of the source, not for this one."""
    try:
        return other_branch_packages(branches, str(branch), str(flavour))
    except (KeyError, AttributeError, TypeError) as exc:
        raise AnsibleFilterError("nvidia_driver_other_branch_packages: %s" % exc)


def nvidia_driver_package_branch(version):
    """{{ '1:610.43.02-1' | onprem.triton.nvidia_driver_package_branch }} -> '610' ('' when not a driver version)"""
    return package_branch(version) or ""


class FilterModule:
    def filters(self):
        return {
            "triton_driver_check": triton_driver_check,
            "triton_driver_branch_check": triton_driver_branch_check,
            "nvidia_driver_branch": nvidia_driver_branch,
            "nvidia_driver_other_branch_packages": nvidia_driver_other_branch_packages,
            "nvidia_driver_package_branch": nvidia_driver_package_branch,
        }
