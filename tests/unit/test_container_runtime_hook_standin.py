# SPDX-License-Identifier: Apache-2.0
"""The stand-in of nvidia-container-runtime-hook (tests/fixtures/nvidia/container_runtime_hook) as a
contract double: fed the OCI state of a container whose NVIDIA_VISIBLE_DEVICES names a GPU the host
does not have, it fails the start as nvidia-container-cli does; the GPUs it gives are recorded."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HOOK = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia" / "container_runtime_hook" / "nvidia-container-runtime-hook"


@pytest.fixture(name="run_hook")
def fixture_run_hook(tmp_path):
    config = tmp_path / "gpus.json"
    config.write_text(json.dumps({"gpus": [{"index": i, "uuid": "GPU-%d" % i} for i in range(4)]}), encoding="utf-8")
    log = tmp_path / "hook.jsonl"
    # The script reads its two paths from module constants: run a copy pointing at tmp_path.
    script = tmp_path / "hook.py"
    script.write_text(HOOK.read_text(encoding="utf-8")
                      .replace('"/etc/nvidia-container-runtime-hook-standin.json"', repr(str(config)))
                      .replace('"/var/log/nvidia-container-runtime-hook-standin.jsonl"', repr(str(log))),
                      encoding="utf-8")

    def run(visible):
        bundle = tmp_path / "bundle"
        bundle.mkdir(exist_ok=True)
        env = ["PATH=/usr/bin"] + ([] if visible is None else ["NVIDIA_VISIBLE_DEVICES=%s" % visible])
        (bundle / "config.json").write_text(json.dumps({"process": {"env": env}}), encoding="utf-8")
        state = json.dumps({"id": "c1", "bundle": str(bundle)})
        done = subprocess.run([sys.executable, str(script), "prestart"], input=state, capture_output=True, text=True,
                              check=False)
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
        return done, records
    return run


@pytest.mark.parametrize("visible, devices", [("2,3", [2, 3]), ("GPU-1", [1]), ("all", [0, 1, 2, 3])])
def test_the_gpus_asked_for_are_given_and_recorded(run_hook, visible, devices):
    done, records = run_hook(visible)
    assert done.returncode == 0, done.stderr
    assert records == [{"container": "c1", "devices": devices}]


@pytest.mark.parametrize("visible", [None, "", "void", "none"])
def test_no_gpu_asked_for_gives_none(run_hook, visible):
    done, records = run_hook(visible)
    assert done.returncode == 0 and records == []


@pytest.mark.parametrize("visible, bad", [("2,4", "4"), ("GPU-9", "GPU-9")])
def test_a_gpu_the_host_lacks_fails_the_start(run_hook, visible, bad):
    done, records = run_hook(visible)
    assert done.returncode == 1 and records == []
    assert done.stderr == "nvidia-container-cli: device error: %s: unknown device\n" % bad
