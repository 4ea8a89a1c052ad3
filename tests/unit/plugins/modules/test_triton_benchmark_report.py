# SPDX-License-Identifier: Apache-2.0
"""Unit tests of onprem.triton.triton_benchmark_report: the module's main() as Ansible
runs it, over a copy of real GenAI-Perf output (tests/unit/fixtures/genai_perf), with the
real matplotlib writing the PNGs."""

import contextlib
import importlib.util
import io
import json
import shutil
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.onprem.triton.plugins.modules import triton_benchmark_report

RUN = Path(__file__).resolve().parents[2] / "fixtures" / "genai_perf" / "run"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib (requirements.txt) not installed")


def run_main(**args):
    stdout = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(stdout), pytest.raises(SystemExit):
        triton_benchmark_report.main()
    return json.loads(stdout.getvalue())


@pytest.fixture(name="run_dir")
def fixture_run_dir(tmp_path):
    """Two hosts: gpu-a as measured, gpu-b with a second model at half the throughput."""
    shutil.copytree(RUN / "gpu-a", tmp_path / "gpu-a")
    shutil.copytree(RUN / "gpu-a", tmp_path / "gpu-b")
    for path in (tmp_path / "gpu-a").glob("demo/*/*/profile_export_genai_perf.json"):
        data = json.loads(path.read_text())
        data["input_config"]["model_names"] = ["small"]
        data["output_token_throughput"]["avg"] /= 2
        target = tmp_path / "gpu-b" / "small" / path.relative_to(tmp_path / "gpu-a" / "demo")
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(data))
    return tmp_path


def png_size(path):
    content = Path(path).read_bytes()
    assert content.startswith(PNG_SIGNATURE)
    # IHDR: width and height, big-endian, right after the signature and the chunk header
    return int.from_bytes(content[16:20], "big"), int.from_bytes(content[20:24], "big")


@needs_matplotlib
def test_rows_table_and_a_plot_per_host(run_dir):
    result = run_main(path=str(run_dir))
    assert result["changed"] is True and not result.get("failed")
    assert [(r["host"], r["model"], r["concurrency"]) for r in result["rows"]] == [
        ("gpu-a", "demo", 1), ("gpu-a", "demo", 2), ("gpu-a", "demo", 4),
        ("gpu-b", "demo", 1), ("gpu-b", "demo", 2), ("gpu-b", "demo", 4),
        ("gpu-b", "small", 1), ("gpu-b", "small", 2), ("gpu-b", "small", 4)]
    assert len(result["table"]) == 2 + 9 and result["table"][0].split()[:3] == ["HOST", "MODEL", "CONCURRENCY"]
    assert result["plots"] == [str(run_dir / "gpu-a" / "throughput.png"), str(run_dir / "gpu-b" / "throughput.png")]
    assert all(png_size(path) == (700, 450) for path in result["plots"])
    assert result["errors"] == []
    # two lines drawn on gpu-b: its picture differs from gpu-a's
    assert Path(result["plots"][0]).read_bytes() != Path(result["plots"][1]).read_bytes()


@needs_matplotlib
def test_same_results_same_png_so_no_change(run_dir):
    first = run_main(path=str(run_dir))
    before = {p: Path(p).stat().st_mtime_ns for p in first["plots"]}
    second = run_main(path=str(run_dir))
    assert second["changed"] is False and second["rows"] == first["rows"]
    assert {p: Path(p).stat().st_mtime_ns for p in second["plots"]} == before


@needs_matplotlib
def test_changed_results_rewrite_the_png(run_dir):
    run_main(path=str(run_dir))
    path = next((run_dir / "gpu-a").glob("demo/concurrency4/*/profile_export_genai_perf.json"))
    data = json.loads(path.read_text())
    data["output_token_throughput"]["avg"] *= 3
    path.write_text(json.dumps(data))
    assert run_main(path=str(run_dir))["changed"] is True


@needs_matplotlib
def test_check_mode_reads_but_writes_nothing(run_dir):
    result = run_main(path=str(run_dir), _ansible_check_mode=True)
    assert result["changed"] is True and len(result["rows"]) == 9
    assert not list(run_dir.glob("*/throughput.png"))


def test_without_plot_no_png(run_dir):
    result = run_main(path=str(run_dir), plot=False, plot_name="other.png")
    assert result["changed"] is False and result["plots"] == [] and len(result["rows"]) == 9
    assert not list(run_dir.glob("*/*.png"))


def test_unreadable_summaries_are_reported_not_fatal(run_dir):
    bad = run_dir / "gpu-a" / "demo" / "concurrency8" / "x" / "profile_export_genai_perf.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"input_config": {"model_names": ["demo"], "perf_analyzer": {"stimulus": {"request_rate": 5}}}}))
    result = run_main(path=str(run_dir), plot=False)
    assert len(result["rows"]) == 9 and len(result["errors"]) == 1 and "no concurrency" in result["errors"][0]


def test_no_results_fails_unless_allowed(tmp_path):
    (tmp_path / "gpu-a").mkdir()
    result = run_main(path=str(tmp_path), plot=False)
    assert result["failed"] is True and "no GenAI-Perf summary" in result["msg"]
    result = run_main(path=str(tmp_path), plot=False, require_results=False)
    assert not result.get("failed") and result["rows"] == [] and len(result["table"]) == 2 and result["plots"] == []


def test_missing_folder_fails(tmp_path):
    result = run_main(path=str(tmp_path / "nowhere"), plot=False)
    assert result["failed"] is True and "is not a folder" in result["msg"]


def test_without_matplotlib_the_plot_fails_with_a_hint(run_dir, monkeypatch):
    monkeypatch.setattr(triton_benchmark_report, "MATPLOTLIB_IMPORT_ERROR", "ImportError: No module named 'matplotlib'")
    result = run_main(path=str(run_dir))
    assert result["failed"] is True and "matplotlib" in result["msg"]
    assert len(run_main(path=str(run_dir), plot=False)["rows"]) == 9
