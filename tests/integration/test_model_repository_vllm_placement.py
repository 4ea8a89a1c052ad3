# SPDX-License-Identifier: Apache-2.0
"""A vLLM repository rendered by the model_repository role's code from inventory-style
variables, loaded by the REAL tritonserver 2.51 (tests/fixtures/triton) with the vLLM
contract double: the multi-GPU model (KIND_MODEL on every GPU) and the single-GPU server's
model load and generate, streaming and not; the double records where each engine starts.
A single-GPU model on a two-GPU host is pinned (KIND_GPU): this GPU-less tritonserver
refuses that itself, which the test shows. Ports 18700-18702."""

import json
import urllib.request
from pathlib import Path

import pytest

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr
from tests.fixtures.triton.server import TritonServer

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "model_repository"
# As group_vars would set them (the role passes the same to triton_model_repository_render).
INVENTORY = {
    "model_repository_triton_release": "25.12",
    "model_repository_gpu_memory_budget": 0.9,
    "two_gpu_host": [{"index": 0, "memory_total_mib": 81559}, {"index": 1, "memory_total_mib": 81559}],
    "one_gpu_host": [{"index": 0, "memory_total_mib": 24564}],
}


def render(tmp_path, models, host_gpus, repo):
    settings = {"models_dir": str(tmp_path / "models"), "server_models_dir": str(tmp_path / "models"),
                "engines_dir": str(tmp_path / "engines"), "server_engines_dir": str(tmp_path / "engines"),
                "gpu_memory_budget": INVENTORY["model_repository_gpu_memory_budget"], "vllm_report_custom_metrics": True,
                "vllm_contract": mr.load_vllm_contract(str(ROLE / "files" / "vllm_contract"),
                                                       INVENTORY["model_repository_triton_release"])}
    plan = mr.build_plan(models, {}, host_gpus, settings, str(ROLE / "templates"), "/unused")
    for path, text in plan["files"].items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text, encoding="utf-8")
    return plan


def post(server, path, payload):
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("vllm-placement")
    for name in ("pair", "single", "solo"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text("{}", encoding="utf-8")
    placements = tmp_path / "placements.jsonl"
    knobs = {"FIXTURE_PLACEMENT_FILE": str(placements)}
    repo = tmp_path / "repository"
    two = render(tmp_path, [
        {"name": "pair", "backend": "vllm", "model_path": str(tmp_path / "models" / "pair"), "gpus": [0, 1],
         "tensor_parallel_size": 2, "gpu_memory_utilization": 0.4, "instance_count": 2,
         "engine_args": {"max_model_len": 2048, "quantization": "awq_marlin", "enable_log_requests": True},
         "parameters": knobs},
        {"name": "solo", "backend": "vllm", "model_path": str(tmp_path / "models" / "solo"), "gpus": [1],
         "tensor_parallel_size": 1, "gpu_memory_utilization": 0.05, "parameters": knobs},
    ], INVENTORY["two_gpu_host"], repo)
    one = render(tmp_path, [
        {"name": "single", "backend": "vllm", "model_path": str(tmp_path / "models" / "single"),
         "gpu_memory_utilization": 0.9, "parameters": knobs},
    ], INVENTORY["one_gpu_host"], repo)
    load = two["load_models"] + one["load_models"]
    with TritonServer(repo, http_port=18700, grpc_port=18701, metrics_port=18702, load_models=load) as server:
        for name in ("pair", "single"):
            server.wait_model_ready(name, timeout=60)
        yield server, two, placements
    server.cleanup()


def test_plan_counts_both_instances_of_pair(served):
    plan = served[1]
    assert plan["gpu_plan"][0]["total_share"] == pytest.approx(0.8)
    assert plan["gpu_plan"][1]["total_share"] == pytest.approx(0.85)


def test_kind_model_loads_and_the_double_records_where(served):
    server, _repo, placements = served
    index = {entry["name"]: entry for entry in json.loads(post(server, "/v2/repository/index", {}))}
    assert index["pair"]["state"] == index["single"]["state"] == "READY"
    records = [json.loads(line) for line in placements.read_text(encoding="utf-8").splitlines()]
    pair = [r for r in records if r["model"] == "pair"]
    assert len(pair) == 2 and all(r["kind"] == "MODEL" and r["devices"] == ["0", "1"] for r in pair)
    assert [r["devices"] for r in records if r["model"] == "single"] == [["0"]]


def test_kind_gpu_is_refused_by_this_gpu_less_server(served):
    server = served[0]
    index = {entry["name"]: entry for entry in json.loads(post(server, "/v2/repository/index", {}))}
    assert index["solo"]["state"] == "UNAVAILABLE"
    assert "specifies invalid or unsupported gpu id 1" in index["solo"]["reason"]


@pytest.mark.parametrize("model", ["pair", "single"])
def test_generate_without_stream(served, model):
    server = served[0]
    answer = json.loads(post(server, f"/v2/models/{model}/generate",
                             {"text_input": "the quick brown fox", "sampling_parameters": json.dumps({"max_tokens": 3})}))
    assert answer["text_output"] == "the quick brown fox the quick brown"


@pytest.mark.parametrize("model", ["pair", "single"])
def test_generate_stream(served, model):
    server = served[0]
    body = post(server, f"/v2/models/{model}/generate_stream",
                {"text_input": "a b", "stream": True, "exclude_input_in_output": True,
                 "sampling_parameters": json.dumps({"max_tokens": 3})})
    events = [json.loads(line[len(b"data: "):]) for line in body.splitlines() if line.startswith(b"data: ")]
    assert [event["text_output"] for event in events] == [" a", " b", " a"]
