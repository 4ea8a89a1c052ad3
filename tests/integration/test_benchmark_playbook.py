# SPDX-License-Identifier: Apache-2.0
"""playbooks/benchmark.yml for real: GenAI-Perf (genai-perf and its perf_analyzer) on the
controller loads the Triton fixture (real tritonserver 2.51, stand-in vllm backend) over gRPC
with streaming, for two inventory hosts that both point at it; the results land in a folder per
host, the table is printed and written, a PNG is drawn per host.

GenAI-Perf is not in requirements.txt (about 1 GB with pandas, pyarrow, scipy, transformers):
GENAI_PERF_VENV names a virtualenv holding it and a perf_analyzer that runs here; tests/run.sh
builds one (.venv-genai-perf, from tests/requirements-genai-perf.txt) and sets it. By hand:
    python -m venv /tmp/gp-venv && /tmp/gp-venv/bin/pip install --no-deps -r tests/requirements-genai-perf.txt
(tritonclient 2.51.0 is the last wheel whose perf_analyzer needs no glibc newer than Debian 12's
2.36; it also needs libb64.so.0d: apt-get install libb64-0d, or GENAI_PERF_LD_LIBRARY_PATH
naming a folder holding it). Without GENAI_PERF_VENV, or when genai-perf or perf_analyzer in it
does not run, every test here FAILS with the reason: a benchmark that cannot run is not a pass.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.triton.server import TritonServer, write_vllm_model

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / ".ansible" / "collections"
VENV = Path(os.environ.get("GENAI_PERF_VENV") or "/nonexistent")
PORTS = {"http_port": 18900, "grpc_port": 18901, "metrics_port": 18902}


def genai_perf_environment():
    """The environment the playbook is told to give genai-perf, or why it cannot run."""
    if not os.environ.get("GENAI_PERF_VENV"):
        return None, ("GENAI_PERF_VENV is not set: run tests/run.sh integration (it builds .venv-genai-perf) "
                      "or point it at a virtualenv with genai-perf and perf_analyzer (see this file's docstring)")
    libs = [os.environ.get("GENAI_PERF_LD_LIBRARY_PATH", "")]
    libs += [str(p) for p in VENV.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib")]
    env = {"LD_LIBRARY_PATH": ":".join(p for p in libs if p), "HF_HUB_OFFLINE": "1"}
    for tool in ("genai-perf", "perf_analyzer"):
        try:
            subprocess.run([str(VENV / "bin" / tool), "--version"], env=dict(os.environ, **env), check=True,
                           capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as exc:
            return None, "%s from GENAI_PERF_VENV=%s does not run (LD_LIBRARY_PATH=%s): exit %d: %s" % (
                tool, VENV, env["LD_LIBRARY_PATH"], exc.returncode, (exc.stderr or exc.stdout or "").strip()[-600:])
        except (OSError, subprocess.SubprocessError) as exc:
            return None, "%s from GENAI_PERF_VENV=%s does not run (LD_LIBRARY_PATH=%s): %s" % (
                tool, VENV, env["LD_LIBRARY_PATH"], exc)
    return env, ""


ENVIRONMENT, BROKEN = genai_perf_environment()


@pytest.fixture(scope="module", autouse=True)
def genai_perf_runs():
    """No skip: without a working genai-perf and perf_analyzer the benchmark is untested."""
    if ENVIRONMENT is None:
        pytest.fail(BROKEN, pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_vllm_model(repo, "demo")
    with TritonServer(repo, load_models=["demo"], **PORTS) as srv:
        srv.wait_model_ready("demo")
        yield srv


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The model folder 'on the hosts': only its tokenizer files matter to the benchmark."""
    folder = tmp_path_factory.mktemp("models") / "demo"
    subprocess.run([str(VENV / "bin" / "python"), str(ROOT / "tests" / "fixtures" / "genai_perf" / "make_tokenizer.py"), str(folder)],
                   check=True, capture_output=True, timeout=300)
    return folder


def inventory(tmp_path, model_dir, models=None):
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ansible_become": False,
            "ansible_host": "127.0.0.1"}
    data = {"all": {
        "vars": {"benchmark_genai_perf_venv": str(VENV), "benchmark_environment": ENVIRONMENT,
                 "benchmark_report_dir": str(tmp_path / "reports"), "benchmark_run": "run1"},
        "children": {"triton_servers": {
            "hosts": {"gpu-a": dict(host), "gpu-b": dict(host)},
            "vars": {"triton_server_http_port": PORTS["http_port"], "triton_server_grpc_port": PORTS["grpc_port"],
                     "triton_models": models or [{"name": "demo", "backend": "vllm", "model_path": str(model_dir)}],
                     "benchmark_concurrency": [1, 2], "benchmark_request_count": 12, "benchmark_warmup_request_count": 1,
                     "benchmark_input_tokens": 24, "benchmark_output_tokens": 8,
                     "benchmark_gpu_metrics_url": "http://127.0.0.1:%d/metrics" % PORTS["metrics_port"]}}}}}
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(data))
    return path


def run_playbook(inventory_path, *extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_NOCOLOR="1")
    return subprocess.run(["ansible-playbook", str(ROOT / "playbooks" / "benchmark.yml"), "-i", str(inventory_path), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_every_host_and_concurrency_is_measured_tabled_and_plotted(server, model_dir, tmp_path):
    del server
    try:
        import matplotlib  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
        plot = True
    except ImportError:
        plot = False
    result = run_playbook(inventory(tmp_path, model_dir), "-e", "benchmark_plot=%s" % str(plot).lower())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    run = tmp_path / "reports" / "run1"
    report = json.loads((run / "benchmark.json").read_text())
    assert [(r["host"], r["model"], r["concurrency"]) for r in report["rows"]] == [
        ("gpu-a", "demo", 1), ("gpu-a", "demo", 2), ("gpu-b", "demo", 1), ("gpu-b", "demo", 2)]
    for row in report["rows"]:
        assert row["request_count"] == 12.0 and row["output_sequence_length_avg"] > 0
        assert row["output_token_throughput"] > 0 and 0 < row["time_to_first_token_p50"] <= row["request_latency_p50"]
        folder = run / row["host"] / "demo" / ("concurrency%d" % row["concurrency"])
        assert Path(row["path"]).parent.parent == folder
        assert list(folder.glob("*/profile_export_genai_perf.csv")) and list(folder.glob("*/profile_export.json"))
    assert any(line.startswith("genai-perf ") for line in report["tools"])
    table = (run / "benchmark.txt").read_text().splitlines()
    assert table[0].split()[:4] == ["HOST", "MODEL", "CONCURRENCY", "TOKENS/S"] and len(table) >= 6
    assert table[0] in result.stdout
    # the tokenizer came from the 'host' model folder
    assert (tmp_path / "reports" / "tokenizers" / "gpu-a" / "demo" / "tokenizer.json").is_file()
    if plot:
        for host in ("gpu-a", "gpu-b"):
            assert (run / host / "throughput.png").read_bytes().startswith(b"\x89PNG")


def test_a_model_that_is_not_served_stops_that_host_with_the_reason(server, model_dir, tmp_path):
    del server
    models = [{"name": "absent", "backend": "vllm", "tokenizer": str(model_dir)}]
    result = run_playbook(inventory(tmp_path, model_dir, models), "-e", "benchmark_plot=false", "--limit", "gpu-a,localhost")
    assert result.returncode != 0
    assert "Check each model is ready" in result.stdout and "absent" in result.stdout
    assert not list((tmp_path / "reports" / "run1").glob("*/absent"))


@pytest.mark.parametrize("bad, named", [
    ({"benchmark_concurrency": ["many"]}, "benchmark_concurrency"),
    ({"benchmark_request_count": "lots"}, "benchmark_request_count"),
])
def test_a_bad_setting_is_refused_naming_it_before_any_load(model_dir, tmp_path, bad, named):
    """The role's argument_specs: a value of the wrong type stops the host before GenAI-Perf runs."""
    result = run_playbook(inventory(tmp_path, model_dir), "-e", json.dumps(bad), "--limit", "gpu-a,localhost")
    assert result.returncode != 0
    assert "Validating arguments against arg spec 'load'" in result.stdout and named in result.stdout, result.stdout[-3000:]
    assert "Run GenAI-Perf at each concurrency" not in result.stdout
