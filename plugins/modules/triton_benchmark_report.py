#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: triton_benchmark_report
short_description: Summarise GenAI-Perf runs per host in a table and plot throughput against concurrency
version_added: "0.1.0"
description:
  - Reads every GenAI-Perf summary (C(profile_export_genai_perf.json)) under O(path), laid out as
    C(<path>/<host>/<anything>/profile_export_genai_perf.json) (the layout of the playbook
    C(onprem.triton.benchmark)); the model and the concurrency of each run are read from the
    C(input_config) that GenAI-Perf writes into the file, the host from the folder name.
  - Returns one row per run (output tokens per second, requests per second, request latency p50 and p95,
    time to first token p50 and p95, inter-token latency p50) and the same as table lines for a terminal.
  - With O(plot), writes C(<path>/<host>/<plot_name>) per host, a PNG of output tokens per second
    against concurrency with one line per model. A PNG is rewritten only when its content changes.
  - Understands the summaries of GenAI-Perf 0.0.8 to 0.0.16 (C(model)/C(concurrency) at the top of
    C(input_config), or C(model_names) and C(perf_analyzer.stimulus.concurrency)).
author:
  - onprem.triton maintainers (@onprem-triton)
requirements:
  - matplotlib (only with O(plot)), on the host that runs the module (usually the controller)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: In check mode the results are read and the table returned; no PNG is written.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  path:
    description: The folder of one benchmark run, holding one folder per host.
    type: path
    required: true
  plot:
    description: Write a PNG of throughput against concurrency per host.
    type: bool
    default: true
  plot_name:
    description: File name of the PNG, written in each host's folder.
    type: str
    default: throughput.png
  require_results:
    description: Fail when O(path) holds no readable GenAI-Perf summary.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Summarise the run
  onprem.triton.triton_benchmark_report:
    path: /srv/fleet-reports/benchmark/20260101T120000
  register: __benchmark_report

- name: Show the table
  ansible.builtin.debug:
    msg: "{{ __benchmark_report.table }}"

- name: Table only, no matplotlib needed
  onprem.triton.triton_benchmark_report:
    path: /srv/fleet-reports/benchmark/20260101T120000
    plot: false
"""

RETURN = r"""
rows:
  description:
    - One dict per GenAI-Perf run, sorted by host, model and concurrency. Latencies in milliseconds;
      a metric GenAI-Perf did not measure (the time to first token without streaming) is null.
  returned: always
  type: list
  elements: dict
  sample:
    - host: gpu-01
      model: llama3_8b
      concurrency: 4
      output_token_throughput: 1843.2
      request_throughput: 14.4
      request_latency_p50: 271.0
      request_latency_p95: 302.5
      time_to_first_token_p50: 31.2
      time_to_first_token_p95: 40.8
      inter_token_latency_p50: 1.9
      output_sequence_length_avg: 128.0
      input_sequence_length_avg: 512.0
      request_count: 100.0
      endpoint_url: gpu-01:8001
      streaming: true
      path: /srv/fleet-reports/benchmark/20260101T120000/gpu-01/llama3_8b/concurrency4/llama3_8b-triton-vllm-concurrency4/profile_export_genai_perf.json
table:
  description: The rows as lines of a table (host, model, concurrency, tokens/s, requests/s, latency p50 and p95, TTFT p50).
  returned: always
  type: list
  elements: str
  sample:
    - "HOST    MODEL      CONCURRENCY  TOKENS/S  REQ/S  LATENCY p50 ms  LATENCY p95 ms  TTFT p50 ms"
    - "------  ---------  -----------  --------  -----  --------------  --------------  -----------"
    - "gpu-01  llama3_8b            4    1843.2  14.40           271.0           302.5         31.2"
plots:
  description: The PNG of each host (written, or in check mode to be written).
  returned: always
  type: list
  elements: str
  sample: [/srv/fleet-reports/benchmark/20260101T120000/gpu-01/throughput.png]
errors:
  description: Summaries that could not be read, with the reason; they are left out of the rows.
  returned: always
  type: list
  elements: str
  sample: ["/srv/.../profile_export_genai_perf.json: input_config has no concurrency (a request-rate run?)"]
"""

import io
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.onprem.triton.plugins.module_utils.genai_perf import format_table, read_run, series

MATPLOTLIB_IMPORT_ERROR = None
try:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
except ImportError:
    MATPLOTLIB_IMPORT_ERROR = traceback.format_exc()


def render_plot(host, models):
    """PNG bytes of tokens/s against concurrency for one host, a line per model."""
    figure = Figure(figsize=(7, 4.5), dpi=100)
    axes = figure.add_subplot()
    ticks = set()
    for model in sorted(models):
        points = models[model]
        ticks.update(point[0] for point in points)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=model)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted(ticks))
    axes.set_xticklabels([str(tick) for tick in sorted(ticks)])
    axes.minorticks_off()
    axes.set_ylim(bottom=0)
    axes.set_xlabel("concurrency (requests in flight)")
    axes.set_ylabel("output tokens/s")
    axes.set_title("%s: output token throughput" % host)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    # no Software/date metadata: the same results give the same bytes
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


class BenchmarkReport:
    """Reads a run folder, returns the rows and table, writes the plots."""

    def __init__(self, module):
        self.module = module
        self.params = module.params

    def _write_if_changed(self, path, content):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                if handle.read() == content:
                    return False
        if not self.module.check_mode:
            with open(path + ".tmp", "wb") as handle:
                handle.write(content)
            self.module.set_mode_if_different(path + ".tmp", "0644", False)
            self.module.atomic_move(path + ".tmp", path)
        return True

    def run(self):
        path = self.params["path"]
        if not os.path.isdir(path):
            self.module.fail_json(msg="%s is not a folder" % path)
        rows, errors = read_run(path)
        result = {"changed": False, "rows": rows, "table": format_table(rows), "plots": [], "errors": errors}
        if not rows and self.params["require_results"]:
            self.module.fail_json(msg="no GenAI-Perf summary (profile_export_genai_perf.json) could be read under %s" % path, **result)
        if self.params["plot"]:
            for host, models in sorted(series(rows).items()):
                target = os.path.join(path, host, self.params["plot_name"])
                result["changed"] |= self._write_if_changed(target, render_plot(host, models))
                result["plots"].append(target)
        return result


def argument_spec():
    return {
        "path": {"type": "path", "required": True},
        "plot": {"type": "bool", "default": True},
        "plot_name": {"type": "str", "default": "throughput.png"},
        "require_results": {"type": "bool", "default": True},
    }


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if module.params["plot"] and MATPLOTLIB_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("matplotlib"), exception=MATPLOTLIB_IMPORT_ERROR)
    module.exit_json(**BenchmarkReport(module).run())


if __name__ == "__main__":
    main()
