# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""The Triton release table (roles/_common/vars/triton_releases.yml) and what follows from it.

Pure helpers, no Ansible import: the lookup onprem.triton.triton_releases reads the table, the
filters of plugins/filter/triton_release.py and the model repository renderer call these, and the
unit tests call them on the same file. Every refusal names the variable at fault.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.onprem.triton.plugins.module_utils.variable_error import VariableError

# Image backends (triton_server_backend, the tag's middle part) and the model backend each serves.
IMAGE_BACKENDS = ("vllm", "trtllm")
MODEL_BACKEND_IMAGE = {"vllm": "vllm", "tensorrtllm": "trtllm"}
LAYOUT_STATUSES = ("supported", "deprecated", "removed")
TRTLLM_LAYOUT_NAMES = ("inflight_batcher", "llmapi")


class TritonReleaseError(VariableError):
    """A release, backend or layout the table does not offer; names the variable at fault."""


def known_releases(table):
    """Release names, newest first ("26.08", "26.07", "25.12", ...)."""
    return sorted((table.get("releases") or {}), key=_release_key, reverse=True)


def _release_key(name):
    match = re.match(r"^([0-9]{2})\.([0-9]{2})$", str(name))
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def release_entry(table, release, variable="triton_release"):
    """The table's entry of `release`, with its name under "release"."""
    releases = table.get("releases") or {}
    name = str(release)
    if name not in releases:
        # An unquoted 25.10 in YAML is the float 25.1.
        hint = "" if re.match(r"^[0-9]{2}\.[0-9]{2}$", name) else " (a release is a quoted YY.MM string, e.g. \"25.10\")"
        raise TritonReleaseError(variable, "Triton release %r is not in the release table (known: %s)%s; add it to "
                                 "roles/_common/vars/triton_releases.yml with its sources"
                                 % (name, ", ".join(known_releases(table)), hint))
    entry = dict(releases[name])
    entry["release"] = name
    return entry


def offered_backends(entry):
    """Image backends the table confirms for a release."""
    return [backend for backend in IMAGE_BACKENDS if (entry.get("images") or {}).get(backend)]


def image(entry, backend, variable="triton_server_backend"):
    """The image facts of one backend of a release; refused when the table does not offer it."""
    images = entry.get("images") or {}
    if backend not in IMAGE_BACKENDS:
        raise TritonReleaseError(variable, "must be one of %s, got %r" % (", ".join(IMAGE_BACKENDS), backend))
    if not images.get(backend):
        raise TritonReleaseError(variable, "%s is not offered by Triton release %s (the release table confirms: %s)%s"
                                 % (backend, entry["release"], ", ".join(offered_backends(entry)) or "none",
                                    _unconfirmed(entry, backend)))
    return images[backend]


def _unconfirmed(entry, word):
    notes = [note for note in entry.get("unconfirmed") or [] if word in note]
    return "; unconfirmed: %s" % "; ".join(notes) if notes else ""


def image_tag(table, release, backend):
    """The image tag of a backend of a release, or "" when the table has none (no error: role
    defaults use this and the preflight explains an empty tag)."""
    entry = (table.get("releases") or {}).get(str(release)) or {}
    return str(((entry.get("images") or {}).get(backend) or {}).get("tag") or "")


def driver_table(table):
    """{image tag: {cuda, min_driver, forward_compat}} for every image of every release: the table
    nvidia_driver's check_driver_for_container / check_branch_for_container compare against."""
    containers = {}
    for name in known_releases(table):
        for backend, facts in sorted((table["releases"][name].get("images") or {}).items()):
            if not facts:
                continue
            containers[facts["tag"]] = {"cuda": str(facts["cuda"]), "min_driver": str(facts["min_driver"]),
                                        "forward_compat": list(facts.get("forward_compat") or [])}
    return containers


def trtllm_layouts(entry):
    """{layout: status} of the release's TensorRT-LLM image ({} when it has none)."""
    return dict(((entry.get("images") or {}).get("trtllm") or {}).get("layouts") or {})


def offered_layouts(entry):
    return [layout for layout in TRTLLM_LAYOUT_NAMES if trtllm_layouts(entry).get(layout) == "supported"]


def default_layout(entry):
    """The layout a TensorRT-LLM model gets without trtllm.layout; None when no layout is offered."""
    trtllm = (entry.get("images") or {}).get("trtllm") or {}
    layout = trtllm.get("default_layout")
    return layout if layout in offered_layouts(entry) else None


def check_layout(entry, layout, variable, release_variable="triton_release"):
    """Refuse a TensorRT-LLM layout the release does not offer, saying why and what it offers."""
    trtllm = (entry.get("images") or {}).get("trtllm")
    if not trtllm:
        raise TritonReleaseError(variable, "TensorRT-LLM is not offered by Triton release %s (%s; the release table "
                                 "confirms: %s)%s" % (entry["release"], release_variable,
                                                      ", ".join(offered_backends(entry)) or "none",
                                                      _unconfirmed(entry, "trtllm")))
    offered = offered_layouts(entry)
    if layout in offered:
        return layout
    status = trtllm_layouts(entry).get(layout)
    why = ("is %s in TensorRT-LLM %s" % (status, trtllm.get("tensorrt_llm", "?")) if status
           else "is not confirmed for TensorRT-LLM %s" % trtllm.get("tensorrt_llm", "?"))
    raise TritonReleaseError(variable, "layout %r %s (Triton release %s, %s); layouts offered: %s"
                             % (layout, why, entry["release"], release_variable, ", ".join(offered) or "none"))


def branch_end_of_life(table, branch):
    """The end of life of a driver branch as the table has it ('YYYY-MM'), or None (not published,
    not read, or a branch the table does not list)."""
    entry = (table.get("driver_branches") or {}).get(str(branch)) or {}
    return str(entry["eol"]) if entry.get("eol") else None


def branch_past_end_of_life(table, branch, today):
    """True when `today` ('YYYY-MM-DD') is after the month of the branch's end of life (NVIDIA gives
    a month: the branch is supported to its last day). A branch without a date is not past it."""
    eol = branch_end_of_life(table, branch)
    return bool(eol and today and str(today)[:7] > eol)


def validate_table(table):
    """Problems of the table's shape, as a list of strings (empty: sound). Run by the unit tests."""
    problems = []
    releases = table.get("releases") or {}
    if str(table.get("default")) not in releases:
        problems.append("default %r is not a release of the table" % table.get("default"))
    sources = table.get("sources") or {}
    for branch, entry in (table.get("driver_branches") or {}).items():
        if not re.match(r"^[0-9]{3}$", str(branch)):
            problems.append("driver branch %r is not three digits" % branch)
        if entry.get("eol") is not None and not re.match(r"^20[0-9]{2}-(0[1-9]|1[0-2])$", str(entry["eol"])):
            problems.append("driver branch %s: eol %r is not YYYY-MM" % (branch, entry["eol"]))
        if entry.get("source") not in sources:
            problems.append("driver branch %s: source %r is not described under sources" % (branch, entry.get("source")))
    for name, entry in releases.items():
        if not re.match(r"^[0-9]{2}\.[0-9]{2}$", str(name)):
            problems.append("release %r is not YY.MM" % name)
        images = entry.get("images") or {}
        if not images:
            problems.append("%s: no image" % name)
        for backend, facts in images.items():
            where = "%s %s" % (name, backend)
            if backend not in IMAGE_BACKENDS:
                problems.append("%s: unknown backend" % where)
                continue
            if facts.get("tag") != "%s-%s-python-py3" % (name, backend):
                problems.append("%s: tag %r is not %s-%s-python-py3" % (where, facts.get("tag"), name, backend))
            for key in ("cuda", "min_driver", "source"):
                if not facts.get(key):
                    problems.append("%s: no %s" % (where, key))
            for word in re.split(r"[,\s]+", str(facts.get("source") or "")):
                if word and word not in sources:
                    problems.append("%s: source %r is not described under sources" % (where, word))
            version_key = "vllm" if backend == "vllm" else "tensorrt_llm"
            if not facts.get(version_key):
                problems.append("%s: no %s version" % (where, version_key))
            for layout, status in (facts.get("layouts") or {}).items():
                if layout not in TRTLLM_LAYOUT_NAMES or status not in LAYOUT_STATUSES:
                    problems.append("%s: layout %s: %s" % (where, layout, status))
            if backend == "trtllm" and facts.get("default_layout") is not None \
                    and (facts.get("layouts") or {}).get(facts["default_layout"]) != "supported":
                problems.append("%s: default_layout %s is not a supported layout" % (where, facts["default_layout"]))
    return problems


def upgrade_findings(table, current, target, backend, models, driver_version=None, planned_branch=None,
                     known_branches=(), allow_forward_compat=True, refusal=None, kernel_modules=None, today=None):
    """What moving one host from release `current` to `target` implies, without changing anything.

    backend: the host's image backend (vllm | trtllm); models: its served triton_models;
    driver_version: the running driver (None when unknown); planned_branch: the branch nvidia_driver
    would install with the inventory as it is; known_branches: the branches nvidia_driver knows for
    the host's OS and source, a list or {branch: [kernel-module flavours it offers]}; kernel_modules:
    the host's flavour (a branch that does not offer it is named with the flavour to set); refusal: {"variable", "msg"} when the model repository preflight of
    the target release refused the inventory (None when it passed); today: the run's date
    ('YYYY-MM-DD'): a branch past its end of life then (table driver_branches) is never advised.
    Returns a list of {"kind": image|driver|model|variable, "what", "action"}.
    """
    from ansible_collections.onprem.triton.plugins.module_utils.nvidia import (  # pylint: disable=import-outside-toplevel
        check_branch_for_container, check_driver_for_container, driver_branch)
    findings = []

    def add(kind, what, action):
        findings.append({"kind": kind, "what": what, "action": action})

    old = release_entry(table, current, "triton_release (current)")
    new = release_entry(table, target, "upgrade_triton_release")
    old_tag, new_tag = image_tag(table, current, backend), image_tag(table, target, backend)
    if not new_tag:
        add("variable", "triton_server_backend=%s" % backend,
            "refused: %s is not offered by Triton release %s (the release table confirms: %s)"
            % (backend, target, ", ".join(offered_backends(new)) or "none"))
        return findings
    add("image", "%s -> %s" % (old_tag or "?", new_tag), "the server restarts on the new image (rolling, through the gate)")
    drivers = driver_table(table)
    needed = drivers[new_tag]["min_driver"]
    if driver_version:
        check = check_driver_for_container(driver_version, new_tag, drivers, allow_forward_compat)
        add("driver", "running %s" % driver_version,
            "ok (%s)" % check["reason"] if check["ok"] else "needs a newer driver first: %s" % check["reason"])
    else:
        add("driver", "running driver unknown (no GPU facts)", "needs %s or newer for %s" % (needed, new_tag))
    if planned_branch:
        check = check_branch_for_container(planned_branch, new_tag, drivers, allow_forward_compat)
        newer = sorted(int(b) for b in known_branches if int(b) >= driver_branch(needed))
        # The lowest sufficient branch that is not past its end of life on the day of the run.
        alive = [b for b in newer if not branch_past_end_of_life(table, b, today)]
        ended = [b for b in newer if b not in alive]

        def advice():
            flavours = known_branches.get(str(alive[0])) or [] if isinstance(known_branches, dict) else []
            switch = " and nvidia_driver_kernel_modules to %s (the only modules branch %s offers)" % (
                flavours[0], alive[0]) if kernel_modules and len(flavours) == 1 and kernel_modules not in flavours else ""
            skipped = " (%s past its end of life on %s)" % (
                ", ".join("%d: %s" % (b, branch_end_of_life(table, b)) for b in ended), today) if ended else ""
            return "set nvidia_driver_branch to %s%s%s" % (alive[0], switch, skipped)

        if check["ok"] and not branch_past_end_of_life(table, planned_branch, today):
            add("driver", "nvidia_driver_branch %s" % planned_branch, "ok (%s)" % check["reason"])
        elif check["ok"]:
            add("variable", "nvidia_driver_branch=%s" % planned_branch,
                "runs %s, but branch %s reached its end of life (%s) before %s; %s" % (
                    new_tag, planned_branch, branch_end_of_life(table, planned_branch), today,
                    advice() if alive else "no branch nvidia_driver knows for this OS is both new enough and "
                    "supported: add one to its vars/ first"))
        else:
            add("variable", "nvidia_driver_branch=%s" % planned_branch,
                "refused by the nvidia_driver preflight: %s; %s" % (
                    check["reason"], advice() if alive else
                    "no branch nvidia_driver knows for this OS (%s) is new enough%s: add one to its vars/ first"
                    % (", ".join(str(b) for b in sorted(int(b) for b in known_branches)),
                       " and not past its end of life" if ended else "")))
    for model in models or []:
        name = model.get("name", "?")
        if model.get("backend") == "vllm":
            old_v = ((old.get("images") or {}).get("vllm") or {}).get("vllm", "?")
            new_v = ((new.get("images") or {}).get("vllm") or {}).get("vllm", "?")
            add("model", name, "re-rendered and reloaded: model.json checked against vLLM %s (was %s)" % (new_v, old_v))
        elif model.get("backend") == "tensorrtllm":
            trt = model.get("trtllm") or {}
            layout_now = trt.get("layout") or default_layout(old) or "inflight_batcher"
            layout_new = trt.get("layout") or default_layout(new)
            if layout_new is None:
                continue  # the refusal (backend not offered) says it
            if layout_now != layout_new:
                add("model", name, "re-rendered as layout %s (was %s, the default of %s); no engine is used"
                    % (layout_new, layout_now, current))
            elif layout_new == "inflight_batcher" and trt.get("build"):
                add("model", name, "engine rebuilt with the TensorRT-LLM of %s (its fingerprint holds the image)" % new_tag)
            else:
                add("model", name, "re-rendered; python models copied from the %s image" % target)
    if refusal:
        add("variable", refusal.get("variable") or "?", "refused by the model_repository preflight: %s" % refusal.get("msg"))
    return findings
