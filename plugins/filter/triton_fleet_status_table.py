# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filter triton_fleet_status_table: the fleet status as a table for a terminal."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: triton_fleet_status_table
short_description: Lay out the status of every host as one table
version_added: "0.1.0"
description:
  - Takes the C(triton_ops_status) fact of each host (published by the C(status) entry point of the
    role M(onprem.triton.triton_ops), used by the playbook C(onprem.triton.status)) and returns the lines
    of one table - one line per model of each host - with the host, its unit, GPUs and driver, the
    repository generation, the weights (revision and commit) and, per model, READY or not and why, the
    GPUs the inventory plans next to those its processes hold on the driver (C(?) when the driver could
    not say; a ready model on other GPUs is flagged C(GPU MISMATCH) in WHY and its host is not counted
    as serving), and the time to first token of a real generation.
  - A host with no model (unit down, server unreachable) gets one line saying why.
  - A host with other server instances (C(model_repository_instances)) has one status per instance
    (C(triton_ops_statuses)); their lines name the host as C(<host>/<instance>), and the host counts as
    serving when every instance does.
positional: _input
options:
  _input:
    description: The status facts, one dict per server instance (C(main) false for the other instances).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Print the fleet status
  ansible.builtin.debug:
    msg: "{{ groups['triton_servers'] | map('extract', hostvars, 'triton_ops_statuses') | flatten | onprem.triton.triton_fleet_status_table }}"
"""

RETURN = r"""
_value:
  description: The table lines (a header, a rule, then one line per model), and a last summary line.
  type: list
  elements: str
"""

COLUMNS = ("HOST", "UNIT", "GPUS / DRIVER", "GENERATION", "WEIGHTS", "MODEL", "STATE", "GPUS plan/runs", "TTFT ms", "WHY")


def _placement(status, name):
    """(cell, problem): the model's planned GPUs next to those its processes hold, and a
    problem when they differ (a model that is ready holds no GPU, or holds others)."""
    entry = (status.get("placement") or {}).get(name)
    if not isinstance(entry, dict):
        return "-", ""
    planned, actual = entry.get("planned"), entry.get("actual")
    plan_text = ",".join(str(gpu) for gpu in planned) if planned else "any"
    if actual is None:
        return "%s / ?" % plan_text, ""
    runs_text = ",".join(str(gpu) for gpu in actual) or "none"
    if planned and sorted(int(gpu) for gpu in planned) != sorted(int(gpu) for gpu in actual):
        return "%s / %s" % (plan_text, runs_text), "GPU MISMATCH: planned %s, runs on %s" % (plan_text, runs_text)
    return "%s / %s" % (plan_text, runs_text), ""


def _gpus(status):
    gpus = status.get("gpus") or []
    if not gpus:
        return "no GPU"
    names = sorted(set(gpus))
    label = ", ".join("%dx %s" % (gpus.count(name), name) for name in names)
    return "%s / %s" % (label, status.get("driver") or "?")


def _weights(status):
    parts = []
    for manifest in status.get("weights") or []:
        commit = str(manifest.get("commit_sha") or "")[:7]
        parts.append("%s@%s (%s)" % (manifest.get("name") or manifest.get("repo_id") or "?", manifest.get("revision") or "?", commit))
    return ", ".join(parts) or "-"


def _model_rows(status):
    timings = dict((m.get("name"), m.get("generation") or {}) for m in status.get("generations") or [] if isinstance(m, dict))
    failures = dict((m.get("name"), m.get("failures")) for m in status.get("generations") or [] if isinstance(m, dict) and m.get("failures"))
    rows = []
    for model in status.get("models") or []:
        name = model.get("name")
        generation = timings.get(name) or {}
        state = model.get("state") or ("READY" if model.get("ready") else "NOT LOADED")
        why = model.get("reason") or ""
        ttft = generation.get("ttft_ms")
        if name in failures and not why:
            why = "; ".join(str(failure) for failure in failures[name])
        if model.get("ready") and name in timings and ttft is None and not why:
            why = "no answer"
        gpus, mismatch = _placement(status, name)
        if mismatch and model.get("ready"):
            why = "; ".join(part for part in (mismatch, why) if part)
        rows.append((name, state, gpus, "%.1f" % ttft if isinstance(ttft, (int, float)) else "-", why))
    return rows


def triton_fleet_status_table(statuses):
    """Return the fleet status as table lines."""
    if not isinstance(statuses, list) or not all(isinstance(status, dict) for status in statuses):
        raise AnsibleFilterError("triton_fleet_status_table expects a list of triton_ops_status dicts")
    lines = []
    # A host serves every model when each of its server instances does.
    host_ready = {}
    for status in sorted(statuses, key=lambda s: (str(s.get("host")), not s.get("main", True), str(s.get("instance")))):
        name = str(status.get("host"))
        if not status.get("main", True):
            name += "/" + str(status.get("instance"))
        host = (name, str(status.get("unit_state") or "?"), _gpus(status),
                str(status.get("generation") or "-"), _weights(status))
        rows = _model_rows(status)
        ready = bool(rows) and all(row[1] == "READY" and row[4] == "" for row in rows)
        host_ready[str(status.get("host"))] = host_ready.get(str(status.get("host")), True) and ready
        if not rows:
            rows = [("-", "DOWN", "-", "-", str(status.get("server") or "server did not answer"))]
        for row in rows:
            lines.append(host + row)
    hosts_ready = sum(1 for ready in host_ready.values() if ready)
    widths = [max([len(COLUMNS[i])] + [len(str(line[i])) for line in lines]) for i in range(len(COLUMNS))]

    def fmt(cells):
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()

    table = [fmt(COLUMNS), fmt(["-" * width for width in widths])] + [fmt(line) for line in lines]
    table.append("%d of %d host(s) serving every model" % (hosts_ready, len(host_ready)))
    return table


class FilterModule:
    """onprem.triton day-2 filters."""

    def filters(self):
        return {"triton_fleet_status_table": triton_fleet_status_table}
