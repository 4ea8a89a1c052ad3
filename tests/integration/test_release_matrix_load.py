# SPDX-License-Identifier: Apache-2.0
"""The render and validation matrix, loaded: for every release of the table
(roles/_common/vars/triton_releases.yml), each backend and TensorRT-LLM layout the release offers
is rendered and validated as the role does (build_plan), then LOADED by the real tritonserver of
tests/fixtures/triton, one server start per release, and answers a generation.

The vLLM double follows the release under test (FIXTURE_VLLM_CONTRACT = the role's contract of
that release): each release's vLLM model carries an engine argument that its vLLM accepts and a
neighbouring release's vLLM does not, so a double holding another release's contract would fail
the load (tests/unit/plugins/test_vllm_contract_double.py shows that refusal). What a release does
not offer is refused in preflight (tests/unit/test_triton_releases.py, the same matrix).
"""
import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr
from ansible_collections.onprem.triton.plugins.module_utils import triton_release as tr
from tests.fixtures.triton.server import TritonServer, lay_out_repository
from tests.integration.test_model_repository_backends import stream

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "roles" / "model_repository" / "templates"
CONTRACTS = ROOT / "roles" / "model_repository" / "files" / "vllm_contract"
ALL_MODELS = ROOT / "tests" / "fixtures" / "triton" / "trtllm_all_models"
GPUS = [{"index": 0, "memory_total_mib": 81559}, {"index": 1, "memory_total_mib": 81559}]
with open(ROOT / "roles" / "_common" / "vars" / "triton_releases.yml", encoding="utf-8") as _handle:
    TABLE = yaml.safe_load(_handle)["_common_triton_releases"]

# An engine argument of each release's vLLM that a neighbouring release's vLLM refuses (checked below).
RELEASE_ONLY_ARGUMENT = {
    "25.12": ("swap_space", 4, "26.07"),                  # gone in vLLM 0.24.0
    "26.07": ("max_num_partial_prefills", 1, "26.08"),    # gone in vLLM 0.27.1
    "26.08": ("max_num_scheduled_tokens", 2048, "26.07"),  # new in vLLM 0.27.1
}


def _offered(release):
    """(vLLM offered, [TensorRT-LLM layouts offered]) as the role decides it."""
    entry = tr.release_entry(TABLE, release)
    backends = tr.offered_backends(entry)
    vllm = "vllm" in backends and (CONTRACTS / (release + ".json")).is_file()
    return vllm, tr.offered_layouts(entry) if "trtllm" in backends else []


RELEASES = [release for release in tr.known_releases(TABLE) if _offered(release)[0] or _offered(release)[1]]


def test_every_release_that_offers_a_backend_is_loaded_here():
    # The releases kept for the driver check only (25.10, 25.01) offer nothing to render.
    assert RELEASES == ["26.08", "26.07", "25.12"]
    assert sorted(RELEASE_ONLY_ARGUMENT) == sorted(RELEASES)


@pytest.mark.parametrize("release", sorted(RELEASE_ONLY_ARGUMENT))
def test_the_release_only_argument_tells_the_releases_apart(release):
    name, _value, other = RELEASE_ONLY_ARGUMENT[release]
    assert name in mr.load_vllm_contract(str(CONTRACTS), release)["engine_args"]
    assert name not in mr.load_vllm_contract(str(CONTRACTS), other)["engine_args"]


def _models(tmp_path, release):
    vllm, layouts = _offered(release)
    models = []
    for path in ("models/chat", "models/llama"):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "config.json").write_text("{}", encoding="utf-8")
        (tmp_path / path / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    if vllm:
        name, value, _other = RELEASE_ONLY_ARGUMENT[release]
        # Both GPUs: KIND_MODEL (a GPU-less tritonserver refuses KIND_GPU).
        models.append({"name": "chat", "backend": "vllm", "model_path": str(tmp_path / "models" / "chat"),
                       "gpus": [0, 1], "tensor_parallel_size": 2, "engine_args": {"max_model_len": 2048, name: value}})
    for layout in layouts:
        model = {"name": "llama_" + layout, "backend": "tensorrtllm", "model_path": str(tmp_path / "models" / "llama"),
                 "gpus": [1], "trtllm": {"layout": layout}}
        if layout == "inflight_batcher":
            engine = tmp_path / "engines" / model["name"]
            engine.mkdir(parents=True)
            (engine / "config.json").write_text("{}", encoding="utf-8")
            (engine / "rank0.engine").write_bytes(b"stand-in engine")
        models.append(model)
    return models


@pytest.fixture(scope="module", params=RELEASES)
def served(request, tmp_path_factory):
    release = request.param
    tmp_path = tmp_path_factory.mktemp("release-" + release)
    settings = {"models_dir": str(tmp_path / "models"), "server_models_dir": str(tmp_path / "models"),
                "engines_dir": str(tmp_path / "engines"), "server_engines_dir": str(tmp_path / "engines"),
                "gpu_memory_budget": 0.9, "vllm_report_custom_metrics": True,
                "release": tr.release_entry(TABLE, release)}
    if _offered(release)[0]:
        settings["vllm_contract"] = mr.load_vllm_contract(str(CONTRACTS), release)
    models = _models(tmp_path, release)
    plan = mr.build_plan(models, {}, GPUS, settings, str(TEMPLATES), str(ALL_MODELS))
    repository = lay_out_repository(plan, tmp_path / "repository")
    env = {"FIXTURE_VLLM_CONTRACT": str(CONTRACTS / (release + ".json"))}
    with TritonServer(repository, http_port=18780, grpc_port=18781, metrics_port=18782,
                      load_models=plan["load_models"], env=env) as server:
        for name in plan["load_models"]:
            server.wait_model_ready(name, timeout=60)
        yield release, server, plan, models
    server.cleanup()


def test_what_the_release_offers_loads_and_generates(served):
    release, server, plan, models = served
    index_request = urllib.request.Request(f"http://{server.http_url}/v2/repository/index", data=b"{}")
    with urllib.request.urlopen(index_request, timeout=10) as response:
        index = {entry["name"]: entry.get("state") for entry in json.load(response)}
    assert {name: index.get(name) for name in plan["load_models"]} == {name: "READY" for name in plan["load_models"]}
    vllm, layouts = _offered(release)
    assert [m["name"] for m in models] == (["chat"] if vllm else []) + ["llama_" + layout for layout in layouts]
    if vllm:
        events = stream(server, "chat", {"text_input": "one two", "stream": True, "exclude_input_in_output": True,
                                         "sampling_parameters": json.dumps({"max_tokens": 3})})
        assert "".join(event["text_output"] for event in events) == " one two one", release
    if "llmapi" in layouts:
        events = stream(server, "llama_llmapi", {"text_input": "one two", "sampling_param_max_tokens": 3,
                                                 "streaming": True})
        assert [event["text_output"] for event in events] == [" one", " two", " one"], release
    if "inflight_batcher" in layouts:
        events = stream(server, "llama_inflight_batcher", {"text_input": "abc", "max_tokens": 4})
        assert [event["text_output"] for event in events] == ["abca"], release
