# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""Pure helpers shared by the nvidia_gpu_info module and the driver filters.

Everything here is side-effect free so that unit tests can exercise it
without a GPU: parsing nvidia-smi's CSV output, normalising MIG states and
comparing driver versions numerically (never as strings: '10' < '8' as
strings, and '580.95.05' < '580.159.04' must hold).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# Order matters: parse_query_csv maps the columns by position.
SMI_QUERY_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "compute_cap",
    "mig.mode.current",
    "pci.bus_id",
    "driver_version",
)

_NOT_AVAILABLE = ("[n/a]", "n/a", "[not supported]", "not supported", "")


class NvidiaParseError(ValueError):
    """Output of nvidia-smi that does not have the expected shape."""


def version_tuple(version):
    """Turn '580.159.04' into (580, 159, 4); raise ValueError on junk.

    Leading zeros are dropped on purpose: '04' and '4' are the same
    component in NVIDIA's versions.
    """
    text = str(version).strip()
    if not re.match(r"^\d+(\.\d+)*$", text):
        raise ValueError("not a numeric dotted version: %r" % (version,))
    return tuple(int(part) for part in text.split("."))


def compare_versions(left, right):
    """Return -1, 0 or 1 comparing two dotted versions numerically.

    Missing trailing components count as zero, so '580' == '580.0.0'.
    """
    a = list(version_tuple(left))
    b = list(version_tuple(right))
    width = max(len(a), len(b))
    a += [0] * (width - len(a))
    b += [0] * (width - len(b))
    return (a > b) - (a < b)


def driver_branch(version):
    """The branch of a driver version: '580.159.04' -> 580."""
    return version_tuple(version)[0]


def normalise_mig_mode(value):
    """Map NVML / nvidia-smi MIG states onto enabled | disabled | unsupported."""
    if value is None:
        return "unsupported"
    if isinstance(value, int):
        return "enabled" if value else "disabled"
    text = str(value).strip().lower()
    if text in ("enabled", "1"):
        return "enabled"
    if text in ("disabled", "0"):
        return "disabled"
    return "unsupported"


def _value_or_none(text):
    return None if text.strip().lower() in _NOT_AVAILABLE else text.strip()


def parse_query_csv(text, fields=SMI_QUERY_FIELDS):
    """Parse `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`.

    Returns (gpus, driver_version). GPU names may not contain commas in
    practice, but split from both ends anyway so that one would survive.
    """
    gpus = []
    driver_versions = set()
    width = len(fields)
    name_at = fields.index("name")
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) > width:
            # Re-join surplus cells into the name column.
            surplus = len(cells) - width
            cells = cells[:name_at] + [", ".join(cells[name_at:name_at + surplus + 1])] + cells[name_at + surplus + 1:]
        if len(cells) != width:
            raise NvidiaParseError(
                "line %d of nvidia-smi output has %d columns, expected %d: %r" % (line_no, len(cells), width, raw)
            )
        row = dict(zip(fields, cells))
        try:
            index = int(row["index"])
            memory = _value_or_none(row["memory.total"])
            memory_mib = int(float(memory)) if memory is not None else None
        except ValueError as exc:
            raise NvidiaParseError("line %d of nvidia-smi output: %s" % (line_no, exc))
        gpu = {
            "index": index,
            "uuid": row["uuid"],
            "name": row["name"],
            "memory_total_mib": memory_mib,
            "compute_capability": _value_or_none(row.get("compute_cap", "")),
            "mig_mode": normalise_mig_mode(row.get("mig.mode.current")),
            "pci_bus_id": _value_or_none(row.get("pci.bus_id", "")),
        }
        gpus.append(gpu)
        if row.get("driver_version"):
            driver_versions.add(row["driver_version"])
    if len(driver_versions) > 1:
        raise NvidiaParseError("GPUs report different driver versions: %s" % ", ".join(sorted(driver_versions)))
    gpus.sort(key=lambda gpu: gpu["index"])
    return gpus, (driver_versions.pop() if driver_versions else None)


def parse_cuda_version(text):
    """Find the driver's CUDA version in `nvidia-smi --version` or `nvidia-smi -q` output."""
    match = re.search(r"CUDA Version\s*:?\s*(\d+\.\d+)", text or "")
    return match.group(1) if match else None


def cuda_version_from_int(value):
    """NVML's nvmlSystemGetCudaDriverVersion gives 13000 for 13.0, 12080 for 12.8."""
    value = int(value)
    return "%d.%d" % (value // 1000, (value % 1000) // 10)


def check_driver_for_container(driver_version, tag, table, allow_forward_compat=True):
    """Decide whether a driver can run the Triton container `tag`.

    `table` maps container tags to {'cuda': str, 'min_driver': str,
    'forward_compat': [{'branch': int, 'min_driver': str}, ...]}. The
    forward-compatible branches (data-center GPUs with the CUDA compat
    package) count only when `allow_forward_compat` is true.

    Returns a dict {ok, reason, cuda, min_driver, via}.
    """
    if tag not in table:
        raise KeyError("container tag %r is not in the driver table (known: %s)" % (tag, ", ".join(sorted(table))))
    entry = table[tag]
    minimum = str(entry["min_driver"])
    result = {"ok": False, "cuda": str(entry.get("cuda", "")), "min_driver": minimum, "via": None, "tag": tag,
              "driver_version": driver_version}
    if compare_versions(driver_version, minimum) >= 0:
        result.update(ok=True, via="minimum",
                      reason="driver %s >= %s, the minimum for %s (CUDA %s)" % (driver_version, minimum, tag, result["cuda"]))
        return result
    branch = driver_branch(driver_version)
    for compat in entry.get("forward_compat") or []:
        if int(compat["branch"]) != branch:
            continue
        if not allow_forward_compat:
            break
        if compare_versions(driver_version, compat["min_driver"]) >= 0:
            result.update(ok=True, via="forward_compat",
                          reason="driver %s is on forward-compatible branch R%d (>= %s) for %s; data-center GPUs only"
                          % (driver_version, branch, compat["min_driver"], tag))
            return result
    result["reason"] = "driver %s is older than %s, the minimum for %s (CUDA %s)%s" % (
        driver_version, minimum, tag, result["cuda"],
        "" if not entry.get("forward_compat") else
        ", and not a usable forward-compatible branch (%s)" % ", ".join(
            "R%s>=%s" % (c["branch"], c["min_driver"]) for c in entry["forward_compat"]))
    return result


def check_branch_for_container(branch, tag, table, allow_forward_compat=True, version=""):
    """Decide, before anything is installed, whether the driver a host is about
    to get can run the Triton container `tag`.

    With an exact `version` this is check_driver_for_container. With only a
    `branch` (the newest of the branch gets installed) the branch must be at
    least the branch of the container's minimum, or one of its
    forward-compatible branches. Same result shape as check_driver_for_container.
    """
    if version:
        # A package version ("1:590.48.01-0ubuntu1"): the driver version is its upstream part.
        upstream = re.sub(r"[-~+].*$", "", str(version).rsplit(":", maxsplit=1)[-1])
        return check_driver_for_container(upstream, tag, table, allow_forward_compat)
    if tag not in table:
        raise KeyError("container tag %r is not in the driver table (known: %s)" % (tag, ", ".join(sorted(table))))
    entry = table[tag]
    minimum = str(entry["min_driver"])
    branch = int(branch)
    result = {"ok": False, "cuda": str(entry.get("cuda", "")), "min_driver": minimum, "via": None, "tag": tag,
              "driver_version": "R%d" % branch}
    if branch >= driver_branch(minimum):
        result.update(ok=True, via="minimum",
                      reason="branch R%d meets %s, the minimum for %s (CUDA %s)" % (branch, minimum, tag, result["cuda"]))
        return result
    fc_branches = [int(c["branch"]) for c in entry.get("forward_compat") or []]
    if allow_forward_compat and branch in fc_branches:
        result.update(ok=True, via="forward_compat",
                      reason="branch R%d is forward-compatible for %s; data-center GPUs only" % (branch, tag))
        return result
    result["reason"] = "branch R%d is older than %s, the minimum for %s (CUDA %s)%s" % (
        branch, minimum, tag, result["cuda"],
        "" if not fc_branches else ", and not %s forward-compatible branch (%s)" % (
            "a usable" if allow_forward_compat else "allowed to use a",
            ", ".join("R%d" % b for b in fc_branches)))
    return result


def _branch_package_names(spec):
    return list(spec.get("branch_pin") or []) + list(spec.get("pinned") or []) + list(spec.get("companions") or [])


def other_branch_packages(branches, branch, flavour):
    """What nvidia_driver installs and holds for every other branch and kernel-module flavour of a
    driver matrix source ({branch: {flavour: {branch_pin, pinned, companions}}}) and not for
    (branch, flavour): the packages a host moving to (branch, flavour) must unhold and remove.
    Names shared with the wanted set (cuda-drivers on every branch from 590) are kept; order as
    the matrix lists them, each once."""
    wanted = set(_branch_package_names(branches[str(branch)][flavour]))
    others = []
    for flavours in branches.values():
        for spec in flavours.values():
            for name in _branch_package_names(spec):
                if name not in wanted and name not in others:
                    others.append(name)
    return others


def package_branch(version):
    """The driver branch of a Debian package version ('1:610.43.02-1' -> '610'), or None when the
    version is not a driver's (three-digit branch)."""
    match = re.match(r"^(?:[0-9]+:)?([0-9]{3})\.", str(version or ""))
    return match.group(1) if match else None
