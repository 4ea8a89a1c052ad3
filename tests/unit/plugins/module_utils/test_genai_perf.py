# SPDX-License-Identifier: Apache-2.0
"""Unit tests of module_utils/genai_perf: reading GenAI-Perf summaries, against real
genai-perf 0.0.16 output (tests/unit/fixtures/genai_perf/README.md says how it was made)."""

import json
import shutil
from pathlib import Path

import pytest

from ansible_collections.onprem.triton.plugins.module_utils import genai_perf

RUN = Path(__file__).resolve().parents[2] / "fixtures" / "genai_perf" / "run"
EXPORTS = sorted(RUN.glob("gpu-a/demo/concurrency*/*/profile_export_genai_perf.json"))


def load(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", EXPORTS, ids=[p.parent.name for p in EXPORTS])
def test_summarize_reads_model_concurrency_and_metrics_of_a_real_summary(path):
    data = load(path)
    row = genai_perf.summarize(data)
    assert row["model"] == "demo"
    assert row["concurrency"] == data["input_config"]["perf_analyzer"]["stimulus"]["concurrency"]
    assert path.parent.name.endswith("concurrency%d" % row["concurrency"])
    assert row["streaming"] is True and row["endpoint_url"] == data["input_config"]["endpoint"]["url"]
    assert row["output_token_throughput"] == data["output_token_throughput"]["avg"]
    assert row["request_throughput"] == data["request_throughput"]["avg"]
    assert row["request_latency_p50"] == data["request_latency"]["p50"]
    assert row["request_latency_p95"] == data["request_latency"]["p95"]
    assert row["time_to_first_token_p50"] == data["time_to_first_token"]["p50"]
    assert row["inter_token_latency_p50"] == data["inter_token_latency"]["p50"]
    assert row["request_count"] == 20.0
    assert row["time_to_first_token_p50"] < row["request_latency_p50"] <= row["request_latency_p95"]


def test_summarize_reads_the_layout_of_older_genai_perf_releases():
    # genai-perf up to 0.0.12 kept the model list and the concurrency at the top of input_config
    data = {"input_config": {"model": ["llama"], "concurrency": 8, "url": "gpu-01:8001", "streaming": True},
            "output_token_throughput": {"unit": "tokens/sec", "avg": 812.5},
            "request_latency": {"unit": "ms", "avg": 90.1, "p50": 88.0, "p95": 120.0}}
    row = genai_perf.summarize(data)
    assert (row["model"], row["concurrency"], row["output_token_throughput"]) == ("llama", 8, 812.5)
    assert row["request_latency_p95"] == 120.0
    assert row["time_to_first_token_p50"] is None and row["request_throughput"] is None


def test_summarize_without_streaming_has_no_time_to_first_token():
    data = load(EXPORTS[0])
    del data["time_to_first_token"], data["inter_token_latency"]
    row = genai_perf.summarize(data)
    assert row["time_to_first_token_p50"] is None and row["inter_token_latency_p50"] is None
    assert row["output_token_throughput"] is not None


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.pop("input_config"), "no input_config"),
    (lambda d: d["input_config"].pop("model_names"), "names no model"),
    (lambda d: d["input_config"]["perf_analyzer"].update(stimulus={"request_rate": 10.0}), "no concurrency"),
    (lambda d: [d.pop("output_token_throughput"), d.pop("request_throughput")], "neither"),
])
def test_summarize_refuses_what_it_cannot_read(mutate, reason):
    data = load(EXPORTS[0])
    mutate(data)
    with pytest.raises(genai_perf.GenaiPerfFormatError, match=reason):
        genai_perf.summarize(data)


@pytest.mark.parametrize("data", [[], "x", None])
def test_summarize_refuses_non_objects(data):
    with pytest.raises(genai_perf.GenaiPerfFormatError):
        genai_perf.summarize(data)


def test_read_run_sorts_by_host_model_concurrency_and_lists_unreadable_files(tmp_path):
    shutil.copytree(RUN / "gpu-a", tmp_path / "gpu-b")
    shutil.copytree(RUN / "gpu-a", tmp_path / "gpu-a")
    (tmp_path / "benchmark.txt").write_text("a file beside the host folders is not a host\n")
    broken = tmp_path / "gpu-b" / "demo" / "concurrency8" / "x" / genai_perf.EXPORT_FILE
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    rows, errors = genai_perf.read_run(str(tmp_path))
    assert [(r["host"], r["model"], r["concurrency"]) for r in rows] == [
        (host, "demo", c) for host in ("gpu-a", "gpu-b") for c in (1, 2, 4)]
    assert len(errors) == 1 and errors[0].startswith(str(broken))
    assert all(Path(r["path"]).is_file() for r in rows)


def test_format_table_aligns_columns_and_marks_missing_figures():
    rows, _errors = genai_perf.read_run(str(RUN))
    rows.append(dict(rows[0], concurrency=16, time_to_first_token_p50=None))
    table = genai_perf.format_table(rows)
    header, rule, body = table[0], table[1], table[2:]
    assert header.split()[:3] == ["HOST", "MODEL", "CONCURRENCY"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert len(body) == 4 and len({len(line) for line in [header] + body}) == 1
    assert body[0].split()[:4] == ["gpu-a", "demo", "1", "%.1f" % rows[0]["output_token_throughput"]]
    assert body[-1].endswith(" -")
    assert genai_perf.format_table([])[0].split() == header.split()


def test_series_per_host_and_model_by_concurrency():
    rows, _errors = genai_perf.read_run(str(RUN))
    rows = list(reversed(rows)) + [dict(rows[0], model="other", output_token_throughput=None)]
    points = genai_perf.series(rows)
    assert list(points) == ["gpu-a"] and list(points["gpu-a"]) == ["demo"]
    assert [c for c, _t in points["gpu-a"]["demo"]] == [1, 2, 4]
    assert all(t > 0 for _c, t in points["gpu-a"]["demo"])
