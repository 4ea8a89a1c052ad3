# SPDX-License-Identifier: Apache-2.0
"""Server instances of one host (model_repository_instances): a model with tensor parallelism
on a subset of the host's GPUs is served by an instance whose container sees only those GPUs;
the main instance sees the others; each instance gets its own repository; the memory plan
covers the whole host. Every bad form is refused naming the variable."""

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr

ROLE = Path(__file__).resolve().parents[4] / "roles" / "model_repository"
CONTRACT = mr.load_vllm_contract(str(ROLE / "files" / "vllm_contract"), "25.12")
KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU
KIND_MODEL = model_config_pb2.ModelInstanceGroup.KIND_MODEL
FOUR_GPUS = [{"index": i, "memory_total_mib": 81559} for i in range(4)]
# The case: a TP=2 model on GPUs 2-3 of a four-GPU host, next to a TP=2 model on 0-1.
MODELS = [
    {"name": "small", "backend": "vllm", "hf_repo_id": "o/small", "gpus": [0, 1], "tensor_parallel_size": 2,
     "gpu_memory_utilization": 0.5},
    {"name": "big", "backend": "vllm", "hf_repo_id": "o/big", "gpus": [2, 3], "tensor_parallel_size": 2,
     "gpu_memory_utilization": 0.85},
]
INSTANCES = [{"name": "tp23", "gpus": [2, 3], "models": ["big"]}]


def plan(models=None, instances=None, main="main"):
    settings = {"models_dir": "/opt/models", "server_models_dir": "/opt/models", "engines_dir": "/e",
                "server_engines_dir": "/e", "gpu_memory_budget": 0.9, "vllm_contract": CONTRACT,
                "instances": INSTANCES if instances is None else instances, "main_instance": main}
    return mr.build_plan(MODELS if models is None else models, {}, FOUR_GPUS, settings, str(ROLE / "templates"), "/x")


def group(files, name):
    item = mr.parse_config(files["%s/config.pbtxt" % name], name).instance_group[0]
    return item.kind, list(item.gpus), item.count


def refused(models=None, instances=None):
    with pytest.raises(mr.ModelRepositoryError) as error:
        plan(models, instances)
    assert str(error.value).startswith(error.value.variable + ": ")
    return error.value


def test_tensor_parallel_model_on_a_subset_gets_its_own_instance():
    result = plan()
    assert result["server_gpus"] == [0, 1]
    assert result["load_models"] == ["small"] and result["prompt_models"] == ["small"]
    assert sorted(result["files"]) == ["small/1/model.json", "small/config.pbtxt"]
    assert group(result["files"], "small") == (KIND_MODEL, [], 1)
    (tp23,) = result["instances"]
    assert (tp23["name"], tp23["gpus"], tp23["load_models"], tp23["prompt_models"]) == ("tp23", [2, 3], ["big"], ["big"])
    assert sorted(tp23["files"]) == ["big/1/model.json", "big/config.pbtxt"]
    assert group(tp23["files"], "big") == (KIND_MODEL, [], 1)
    assert '"tensor_parallel_size": 2' in tp23["files"]["big/1/model.json"]


def test_the_memory_plan_covers_every_instance():
    shares = dict((gpu["index"], gpu["models"]) for gpu in plan()["gpu_plan"])
    assert shares == {0: {"small": 0.5}, 1: {"small": 0.5}, 2: {"big": 0.85}, 3: {"big": 0.85}}
    overcommitted = [dict(MODELS[1], gpu_memory_utilization=0.6, instance_count=2), MODELS[0]]
    assert "GPU 2" in str(refused(overcommitted))


def test_a_pinned_model_is_numbered_as_its_container_sees_the_gpus():
    models = MODELS + [{"name": "one", "backend": "vllm", "hf_repo_id": "o/one", "gpus": [3],
                        "tensor_parallel_size": 1, "gpu_memory_utilization": 0.05}]
    result = plan(models, [{"name": "tp23", "gpus": [2, 3], "models": ["big", "one"]}])
    # The container of tp23 is given host GPUs 2 and 3: it calls them 0 and 1.
    assert group(result["instances"][0]["files"], "one") == (KIND_GPU, [1], 1)
    assert result["gpu_plan"][3]["models"] == {"big": 0.85, "one": 0.05}


def test_without_instances_the_main_instance_sees_every_gpu():
    single = [dict(MODELS[0], gpus=[0, 1, 2, 3], tensor_parallel_size=4)]
    result = plan(single, [])
    assert result["server_gpus"] == "all" and result["instances"] == []
    pinned = plan([{"name": "one", "backend": "vllm", "hf_repo_id": "o/one", "gpus": [2], "tensor_parallel_size": 1}],
                  [])
    assert group(pinned["files"], "one") == (KIND_GPU, [2], 1)


def test_a_model_default_gpus_are_those_of_its_instance():
    models = [MODELS[0], {"name": "big", "backend": "vllm", "hf_repo_id": "o/big", "tensor_parallel_size": 2,
                          "gpu_memory_utilization": 0.5}]
    result = plan(models)
    assert result["gpu_plan"][2]["models"] == {"big": 0.5} and result["gpu_plan"][0]["models"] == {"small": 0.5}


@pytest.mark.parametrize("instances, variable, words", [
    ("tp23", "model_repository_instances", "must be a list"),
    (["tp23"], "model_repository_instances[0]", "must be a dict"),
    ([dict(INSTANCES[0], port=8100)], "model_repository_instances[0].port", "unknown setting"),
    ([dict(INSTANCES[0], name="TP 23")], "model_repository_instances[0].name", "must match"),
    ([dict(INSTANCES[0], name="main")], "model_repository_instances[0].name", "already the name"),
    ([INSTANCES[0], dict(INSTANCES[0], gpus=[1], models=["small"])], "model_repository_instances[1].name",
     "already the name"),
    ([dict(INSTANCES[0], gpus=[])], "model_repository_instances[0].gpus", "non-empty list"),
    ([dict(INSTANCES[0], gpus=[2, 7])], "model_repository_instances[0].gpus", "GPU 7 is not on this host"),
    ([INSTANCES[0], {"name": "other", "gpus": [3], "models": ["small"]}], "model_repository_instances[1].gpus",
     "GPU 3 is already given to server instance 'tp23'"),
    ([dict(INSTANCES[0], models=[])], "model_repository_instances[0].models", "non-empty list"),
    ([dict(INSTANCES[0], models=["huge"])], "model_repository_instances[0].models", "'huge' is not a served model"),
    ([INSTANCES[0], {"name": "other", "gpus": [1], "models": ["big"]}], "model_repository_instances[1].models",
     "already served by instance 'tp23'"),
    ([dict(INSTANCES[0], gpus=[0, 1, 2, 3])], "model_repository_instances", "none is left for the main instance"),
    ([dict(INSTANCES[0], models=["big", "small"])], "model_repository_instances", "would serve none"),
])
def test_bad_instances_are_refused(instances, variable, words):
    error = refused(instances=instances)
    assert error.variable == variable and words in str(error)


def test_a_model_outside_its_instance_gpus_is_refused():
    pinned_small = dict(MODELS[0], gpus=[0], tensor_parallel_size=1)
    error = refused([pinned_small, MODELS[1]], [dict(INSTANCES[0], gpus=[3])])
    assert error.variable == "triton_models[1].gpus"
    assert "not seen by server instance 'tp23'" in str(error) and "sees only GPU(s) [3]" in str(error)
    # and a main model on an instance's GPU: the main container no longer sees it
    error = refused(instances=[{"name": "tp23", "gpus": [1, 2, 3], "models": ["big"]}])
    assert error.variable == "triton_models[0].gpus" and "server instance 'main'" in str(error)


def test_a_subset_in_the_main_instance_still_names_the_way_out():
    error = refused(instances=[])
    assert error.variable == "triton_models[0].gpus"
    assert "model_repository_instances: [{name: ..., gpus: [0, 1], models: [small]}]" in str(error)
