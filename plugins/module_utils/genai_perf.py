# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""Reading GenAI-Perf results: the summary file it writes per run
(profile_export_genai_perf.json), laid out by the playbook onprem.triton.benchmark as
<run dir>/<host>/<model>/concurrency<N>/<genai-perf's own folder>/, turned into one row per
run and a table. Pure functions, no third-party imports."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

EXPORT_FILE = "profile_export_genai_perf.json"

# (key in a row, GenAI-Perf metric, statistic)
METRICS = (
    ("output_token_throughput", "output_token_throughput", "avg"),
    ("request_throughput", "request_throughput", "avg"),
    ("request_latency_p50", "request_latency", "p50"),
    ("request_latency_p95", "request_latency", "p95"),
    ("time_to_first_token_p50", "time_to_first_token", "p50"),
    ("time_to_first_token_p95", "time_to_first_token", "p95"),
    ("inter_token_latency_p50", "inter_token_latency", "p50"),
    ("output_sequence_length_avg", "output_sequence_length", "avg"),
    ("input_sequence_length_avg", "input_sequence_length", "avg"),
    ("request_count", "request_count", "avg"),
)

# (header, key in a row, format of the value)
COLUMNS = (
    ("HOST", "host", "%s"),
    ("MODEL", "model", "%s"),
    ("CONCURRENCY", "concurrency", "%d"),
    ("TOKENS/S", "output_token_throughput", "%.1f"),
    ("REQ/S", "request_throughput", "%.2f"),
    ("LATENCY p50 ms", "request_latency_p50", "%.1f"),
    ("LATENCY p95 ms", "request_latency_p95", "%.1f"),
    ("TTFT p50 ms", "time_to_first_token_p50", "%.1f"),
)


class GenaiPerfFormatError(ValueError):
    """A file that is not a GenAI-Perf summary this code understands."""


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _stat(data, metric, statistic):
    entry = data.get(metric)
    if not isinstance(entry, dict):
        return None
    return _number(entry.get(statistic))


def _model(config):
    # genai-perf 0.0.13 and later: model_names; earlier releases: model (a list)
    names = config.get("model_names", config.get("model"))
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        return None
    return ",".join(str(name) for name in names)


def _concurrency(config):
    # genai-perf 0.0.13 and later: perf_analyzer.stimulus.concurrency; earlier: concurrency
    stimulus = (config.get("perf_analyzer") or {}).get("stimulus") or {}
    value = stimulus.get("concurrency", config.get("concurrency"))
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def summarize(data):
    """One row (dict) from the content of a profile_export_genai_perf.json.

    Keys: model, concurrency, endpoint_url, streaming and the METRICS keys (float, or None
    where GenAI-Perf did not measure it, e.g. no time to first token without streaming).
    Raises GenaiPerfFormatError when the file is not a GenAI-Perf summary of a concurrency run.
    """
    if not isinstance(data, dict) or not isinstance(data.get("input_config"), dict):
        raise GenaiPerfFormatError("no input_config: not a GenAI-Perf summary")
    config = data["input_config"]
    model = _model(config)
    concurrency = _concurrency(config)
    if model is None:
        raise GenaiPerfFormatError("input_config names no model")
    if concurrency is None:
        raise GenaiPerfFormatError("input_config has no concurrency (a request-rate run?)")
    endpoint = config.get("endpoint") if isinstance(config.get("endpoint"), dict) else {}
    row = {
        "model": model,
        "concurrency": concurrency,
        "endpoint_url": endpoint.get("url", config.get("u")),
        "streaming": endpoint.get("streaming", config.get("streaming")),
    }
    for key, metric, statistic in METRICS:
        row[key] = _stat(data, metric, statistic)
    if row["output_token_throughput"] is None and row["request_throughput"] is None:
        raise GenaiPerfFormatError("neither output_token_throughput nor request_throughput: not a GenAI-Perf summary")
    return row


def find_exports(run_dir):
    """(host, path) of every GenAI-Perf summary under run_dir/<host>/, sorted."""
    found = []
    for host in sorted(os.listdir(run_dir)):
        host_dir = os.path.join(run_dir, host)
        if not os.path.isdir(host_dir):
            continue
        for folder, dirs, files in os.walk(host_dir):
            dirs.sort()
            if EXPORT_FILE in files:
                found.append((host, os.path.join(folder, EXPORT_FILE)))
    return found


def read_run(run_dir):
    """(rows, errors): a row per summary under run_dir, sorted by host, model and concurrency;
    errors lists the files that could not be read, with why."""
    rows, errors = [], []
    for host, path in find_exports(run_dir):
        try:
            with open(path) as handle:
                row = summarize(json.load(handle))
        except (OSError, ValueError) as exc:
            errors.append("%s: %s" % (path, exc))
            continue
        row["host"] = host
        row["path"] = path
        rows.append(row)
    rows.sort(key=lambda r: (r["host"], r["model"], r["concurrency"]))
    return rows, errors


def _cell(row, key, fmt):
    value = row.get(key)
    return "-" if value is None else fmt % value


def format_table(rows):
    """Table lines for a terminal: header, rule, one line per row."""
    lines = [[header for header, _key, _fmt in COLUMNS]]
    lines += [[_cell(row, key, fmt) for _header, key, fmt in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    # text columns to the left, numbers to the right
    align = [str.ljust if fmt == "%s" else str.rjust for _header, _key, fmt in COLUMNS]

    def fmt_line(cells):
        return "  ".join(align[i](cell, widths[i]) for i, cell in enumerate(cells)).rstrip()

    return [fmt_line(lines[0]), fmt_line(["-" * width for width in widths])] + [fmt_line(line) for line in lines[1:]]


def series(rows):
    """{host: {model: [(concurrency, tokens/s), ...]}} for plotting, concurrency ascending;
    runs without a throughput figure are left out."""
    result = {}
    for row in rows:
        if row.get("output_token_throughput") is None:
            continue
        result.setdefault(row["host"], {}).setdefault(row["model"], []).append((row["concurrency"], row["output_token_throughput"]))
    for models in result.values():
        for points in models.values():
            points.sort()
    return result
