# SPDX-License-Identifier: Apache-2.0
"""TensorRT-LLM 1.1.0 in-flight batching layout on the REAL tritonserver 2.51.

The repository is rendered by the role's own code (plugin_utils/model_repository.py
build_plan, from inventory-style variables) and the python models are copied in as the role
copies them out of the TRT-LLM image, here from the contract doubles under
tests/fixtures/triton (they enforce the upstream 1.1.0 rules, see each file's docstring).

1. Generations go through the ensemble AND through tensorrt_llm_bls with seed, stop words,
   return_log_probs, streaming and a batch of 2 (max_batch_size 4).
2. Every rule the doubles (and the server) enforce is shown failing on the broken form: the
   server reloads one part with the broken config.pbtxt and the test reads the failure.

Ports 18750-18752 only.
"""

import json
import queue
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr
from tests.fixtures.triton.server import TritonServer, lay_out_repository

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "roles" / "model_repository" / "templates"
ALL_MODELS = ROOT / "tests" / "fixtures" / "triton" / "trtllm_all_models"
HTTP, GRPC, METRICS = 18750, 18751, 18752

# What an inventory would hold (group_vars/triton.yml), with the test's paths filled in.
INVENTORY = """
model_repository_gpus:
  - {index: 0, memory_total_mib: 81559}
triton_models:
  - name: llama
    backend: tensorrtllm
    model_path: "{models}/llama"
    gpus: [0]
    trtllm:
      max_batch_size: 4
      decoupled: true
"""


def build(tmp_path):
    variables = yaml.safe_load(INVENTORY.replace("{models}", str(tmp_path / "models")))
    settings = {"models_dir": str(tmp_path / "models"), "server_models_dir": str(tmp_path / "models"),
                "engines_dir": str(tmp_path / "engines"), "server_engines_dir": str(tmp_path / "engines"),
                "gpu_memory_budget": 0.9}
    plan = mr.build_plan(variables["triton_models"], {}, variables["model_repository_gpus"], settings,
                         str(TEMPLATES), str(ALL_MODELS))
    return lay_out_repository(plan, tmp_path / "repository"), plan


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("trtllm-ifb")
    model = tmp_path / "models" / "llama"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    (model / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    engine = tmp_path / "engines" / "llama"
    engine.mkdir(parents=True)
    (engine / "config.json").write_text("{}", encoding="utf-8")
    (engine / "rank0.engine").write_bytes(b"stand-in engine")
    repo, plan = build(tmp_path)
    server = TritonServer(repo, http_port=HTTP, grpc_port=GRPC, metrics_port=METRICS, load_models=plan["load_models"])
    with server:
        for name in plan["load_models"]:
            server.wait_model_ready(name, timeout=60)
        yield server, repo, plan
    server.cleanup()


# --- clients -------------------------------------------------------------------

def _post(server, path, payload):
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def generate_stream(server, model, payload):
    status, body = _post(server, f"/v2/models/{model}/generate_stream", payload)
    assert status == 200, body
    events = [json.loads(line[len(b"data: "):]) for line in body.splitlines() if line.startswith(b"data: ")]
    errors = [event["error"] for event in events if "error" in event]
    assert not errors, errors
    return events


def generate_error(server, model, payload):
    status, body = _post(server, f"/v2/models/{model}/generate_stream", payload)
    text = body.decode("utf-8", "replace")
    assert status != 200 or '"error"' in text, text
    return text


def grpc_stream_error(server, model, inputs):
    """The error a gRPC streaming request gets (the request is refused before any response)."""
    try:
        grpc_stream(server, model, inputs)
    except AssertionError as error:
        return str(error)
    raise AssertionError("the request was answered")


def grpc_stream(server, model, inputs):
    """Decoupled model, gRPC streaming: [(text_output, batch_index, cum_log_probs)] until the final flag."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    results = queue.Queue()

    def callback(store, result, error):
        store.put((result, error))

    tensors = []
    for name, value in inputs.items():
        tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=partial(callback, results))
    try:
        client.async_stream_infer(model, tensors, enable_empty_final_response=True)
        answers = []
        while True:
            result, error = results.get(timeout=60)
            assert error is None, error.message()
            response = result.get_response()
            if result.as_numpy("text_output") is not None:
                answers.append((b"".join(result.as_numpy("text_output").reshape(-1)).decode(),
                                int(result.as_numpy("batch_index").reshape(-1)[0]),
                                float(result.as_numpy("cum_log_probs").reshape(-1)[0])))
            if response.parameters.get("triton_final_response") and \
                    response.parameters["triton_final_response"].bool_param:
                return answers
    finally:
        client.stop_stream()
        client.close()


def batch_of_two():
    return {
        "text_input": np.array([[b"hello world"], [b"abc"]], dtype=np.object_),
        "max_tokens": np.array([[9], [4]], dtype=np.int32),
        "stop_words": np.array([[b"lo"], [b"lo"]], dtype=np.object_),
        "seed": np.array([[7], [7]], dtype=np.uint64),
        "return_log_probs": np.array([[True], [True]], dtype=bool),
        "stream": np.array([[False], [False]], dtype=bool),
    }


# --- 1. generations through the rendered layout ----------------------------------

def test_layout_names_and_every_part_ready(served):
    server, repo, plan = served
    assert plan["load_models"] == ["llama", "preprocessing", "llama_tensorrt_llm", "postprocessing",
                                   "llama_tensorrt_llm_bls"]
    status, body = _post(server, "/v2/repository/index", {})
    states = {entry["name"]: entry.get("state") for entry in json.loads(body)}
    assert all(states.get(name) == "READY" for name in plan["load_models"]), states


def test_ensemble_streams_with_seed_stop_words_and_log_probs(served):
    server = served[0]
    events = generate_stream(server, "llama", {"text_input": "hello world", "max_tokens": 9, "stream": True,
                                               "seed": 7, "stop_words": ["lo"], "return_log_probs": True})
    assert "".join(event["text_output"] for event in events) == "hello"  # stopped after the stop word
    assert [event["cum_log_probs"] for event in events] == [-0.5] * 5
    assert all(event["batch_index"] == 0 for event in events)


def test_ensemble_whole_answer(served):
    server = served[0]
    events = generate_stream(server, "llama", {"text_input": "abc", "max_tokens": 4, "seed": 3,
                                               "return_log_probs": True})
    assert [(event["text_output"], event["cum_log_probs"]) for event in events] == [("abca", -2.0)]


def test_ensemble_batch_of_two(served):
    answers = grpc_stream(served[0], "llama", batch_of_two())
    assert sorted(answers, key=lambda a: a[1]) == [("hello", 0, -2.5), ("abca", 1, -2.0)]


def test_bls_streams_with_seed_stop_words_and_log_probs(served):
    server = served[0]
    events = generate_stream(server, "llama_tensorrt_llm_bls",
                             {"text_input": "hello world", "max_tokens": 9, "stream": True, "seed": 7,
                              "stop_words": ["lo"], "return_log_probs": True})
    assert "".join(event["text_output"] for event in events) == "hello"
    assert [event["cum_log_probs"] for event in events] == [-0.5] * 5


def test_bls_stop_word_cancels_the_request(served):
    """exclude_input_in_output makes BLS's own text check fire; it then sends `stop` to tensorrt_llm."""
    server = served[0]
    events = generate_stream(server, "llama_tensorrt_llm_bls",
                             {"text_input": "hello world", "max_tokens": 9, "seed": 7, "stop_words": ["lo"],
                              "exclude_input_in_output": True, "return_log_probs": True})
    assert [(event["text_output"], event["cum_log_probs"]) for event in events] == [("hello", -2.5)]


def test_bls_batch_of_two(served):
    answers = grpc_stream(served[0], "llama_tensorrt_llm_bls", batch_of_two())
    assert sorted(answers, key=lambda a: a[1]) == [("hello", 0, -2.5), ("abca", 1, -2.0)]


# --- 2. the rules, each shown failing on its broken form -------------------------

def _load(server, name):
    return _post(server, f"/v2/repository/models/{name}/load", {})


@pytest.fixture
def broken(served):
    """broken(part, old, new): rewrites part's config.pbtxt (old -> new), reloads it and returns
    (status, body); the good config is put back and reloaded afterwards."""
    server, repo, _rest = served
    saved = {}

    def apply(part, old, new, *more):
        path = repo / part / "config.pbtxt"
        text = saved.setdefault(part, path.read_text(encoding="utf-8"))
        pairs = [(old, new)] + list(zip(more[::2], more[1::2]))
        for before, after in pairs:
            assert text.count(before) == 1, (part, before)
            text = text.replace(before, after)
        path.write_text(text, encoding="utf-8")
        status, body = _load(server, part)
        return status, body.decode("utf-8", "replace")

    yield apply
    for part, text in saved.items():
        (repo / part / "config.pbtxt").write_text(text, encoding="utf-8")
        assert _load(server, part)[0] == 200, server.log()[-3000:]


def _drop_tensor(text_name):
    """The rendered block of one tensor, as the macro writes it."""
    return '  {\n    name: "%s"\n' % text_name


def _without_tensor(repo, part, name):
    text = (repo / part / "config.pbtxt").read_text(encoding="utf-8")
    start = text.index(_drop_tensor(name))
    end = text.index("  }", start) + len("  }")
    block = text[start:end]
    # drop the comma on either side so the list still parses
    if text[end:end + 1] == ",":
        return block + ","
    return "," + "\n" + block if text[start - 2:start] == ",\n" else block


def test_preprocessing_without_multimodal_model_path_fails_to_load(served, broken):
    status, body = broken("preprocessing", 'key: "multimodal_model_path"', 'key: "unused_parameter"')
    assert status == 400 and "multimodal_model_path" in body and "KeyError" in body, body


@pytest.mark.parametrize("tensor", ["EMBEDDING_BIAS_WORDS", "EMBEDDING_BIAS_WEIGHTS", "DECODER_INPUT_ID",
                                    "REQUEST_DECODER_INPUT_LEN", "OUT_PROMPT_TABLE_EXTRA_IDS", "PIXEL_VALUES",
                                    "IMAGE_SIZES"])
def test_preprocessing_without_a_typed_tensor_fails_to_load(served, broken, tensor):
    block = _without_tensor(served[1], "preprocessing", tensor)
    status, body = broken("preprocessing", block, "")
    assert status == 400 and "'NoneType' object is not subscriptable" in body, body


@pytest.mark.parametrize("parameter", ["tokenizer_dir", "xgrammar_tokenizer_info_path", "guided_decoding_backend"])
def test_tensorrt_llm_without_a_guided_decoding_parameter_fails_to_load(served, broken, parameter):
    status, body = broken("llama_tensorrt_llm", 'key: "%s"' % parameter, 'key: "unused_%s"' % parameter)
    assert status == 400 and "Cannot find parameter with name: %s" % parameter in body, body


def test_postprocessing_refuses_an_input_other_than_tokens_and_lengths(served, broken):
    server = served[0]
    extra = '  {\n    name: "CUM_LOG_PROBS"\n    data_type: TYPE_FP32\n    dims: [ -1 ]\n    optional: true\n  },\n'
    assert broken("postprocessing", 'input [\n', 'input [\n' + extra)[0] == 200
    status, body = _post(server, "/v2/models/postprocessing/infer", {"inputs": [
        {"name": "TOKENS_BATCH", "datatype": "INT32", "shape": [1, 1, 2], "data": [104, 105]},
        {"name": "SEQUENCE_LENGTH", "datatype": "INT32", "shape": [1, 1], "data": [2]},
        {"name": "CUM_LOG_PROBS", "datatype": "FP32", "shape": [1, 1], "data": [-1.0]}]})
    assert status != 200 and b"unknown input" in body, body
    status, body = _post(server, "/v2/models/postprocessing/infer", {"inputs": [
        {"name": "TOKENS_BATCH", "datatype": "INT32", "shape": [1, 1, 2], "data": [104, 105]},
        {"name": "SEQUENCE_LENGTH", "datatype": "INT32", "shape": [1, 1], "data": [2]}]})
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == ["hi"], body


def test_bls_calls_models_named_preprocessing_and_postprocessing(served):
    """The old layout (<model>_preprocessing) leaves the BLS model without its `preprocessing`."""
    server = served[0]
    assert _post(server, "/v2/repository/models/preprocessing/unload", {})[0] == 200
    try:
        body = generate_error(server, "llama_tensorrt_llm_bls", {"text_input": "ab", "max_tokens": 2})
        assert "preprocessing" in body, body
    finally:
        assert _load(server, "preprocessing")[0] == 200
    assert generate_stream(server, "llama_tensorrt_llm_bls", {"text_input": "ab", "max_tokens": 2})[0]["text_output"]


@pytest.mark.parametrize("old, new, expected", [
    ('name: "sequence_index"', 'name: "unused_sequence_index"', "sequence_index"),
    ('name: "return_context_logits"', 'name: "unused_return_context_logits"', "return_context_logits"),
    ('name: "decoder_input_lengths"', 'name: "unused_decoder_input_lengths"', "decoder_input_lengths"),
    ('name: "seed"', 'name: "random_seed"', "seed"),
])
def test_bls_needs_what_it_sends_and_requests_declared_on_tensorrt_llm(served, broken, old, new, expected):
    server = served[0]
    assert broken("llama_tensorrt_llm", old, new)[0] == 200
    body = generate_error(server, "llama_tensorrt_llm_bls", {"text_input": "ab", "max_tokens": 2, "seed": 1})
    assert expected in body and ("unexpected inference" in body or "unexpected" in body), body


def test_ensemble_with_old_random_seed_name_cannot_take_seed(served, broken):
    server = served[0]
    assert broken("llama", 'name: "seed"', 'name: "random_seed"',
                  'input_map { key: "seed" value: "seed" }', 'input_map { key: "seed" value: "random_seed" }')[0] == 200
    # Through /generate an unknown key becomes a request parameter: the seed is silently lost.
    events = generate_stream(server, "llama", {"text_input": "ab", "max_tokens": 2, "seed": 1})
    assert events[0]["text_output"] == "ab"
    # A client sending the seed tensor is refused.
    inputs = dict(batch_of_two())
    body = grpc_stream_error(server, "llama", inputs)
    assert "unexpected inference input 'seed'" in body, body
