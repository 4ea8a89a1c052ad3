# SPDX-License-Identifier: Apache-2.0
"""The Triton release table (roles/_common/vars/triton_releases.yml) and what follows from it.

- The table is sound: every image has a tag of its release, a CUDA version, a minimum driver and
  a source described under `sources`; layouts and default layouts are consistent.
- The default release runs on every supported OS: the default driver branch of the default driver
  source of every OS in nvidia_driver's matrix (roles/nvidia_driver/vars/<OS>-<major>.yml) meets
  the minimum of every image of the default release.
- What the collection derives: the driver table, image tags, the TensorRT-LLM layout per release,
  and the refusals (unknown release, backend or layout not offered) naming the variable.
"""
import os

import pytest
import yaml

from ansible_collections.onprem.triton.plugins.module_utils import nvidia
from ansible_collections.onprem.triton.plugins.module_utils import triton_release as tr
from ansible_collections.onprem.triton.plugins.plugin_utils import model_repository as mr
from ansible_collections.onprem.triton.plugins.lookup.triton_releases import load_table

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DRIVER_VARS = os.path.join(ROOT, "roles", "nvidia_driver", "vars")


def _yaml(*parts):
    with open(os.path.join(ROOT, *parts)) as handle:
        return yaml.safe_load(handle)


TABLE = _yaml("roles", "_common", "vars", "triton_releases.yml")["_common_triton_releases"]
OS_MATRIX = sorted(name[:-4] for name in os.listdir(DRIVER_VARS) if "-" in name)
DRIVER_DEFAULTS = _yaml("roles", "nvidia_driver", "defaults", "main.yml")


def test_the_lookup_reads_the_same_table():
    assert load_table() == TABLE


def test_the_table_is_sound():
    assert tr.validate_table(TABLE) == []


def test_the_table_holds_25_12_and_a_newer_release():
    releases = tr.known_releases(TABLE)
    assert "25.12" in releases and releases[0] > "25.12"
    assert TABLE["default"] == "25.12"


def test_the_os_matrix_is_the_supported_one():
    assert OS_MATRIX == ["Debian-12", "RedHat-8", "RedHat-9", "Ubuntu-22", "Ubuntu-24"]


@pytest.mark.parametrize("os_vars", OS_MATRIX)
@pytest.mark.parametrize("backend", tr.IMAGE_BACKENDS)
def test_the_default_release_runs_on_the_default_branch_of_every_os(os_vars, backend):
    """nvidia_driver's defaults (source, no branch set: the OS's default branch) against each image
    of the default release, through the same check the role's preflight makes."""
    matrix = _yaml("roles", "nvidia_driver", "vars", os_vars + ".yml")["_nvidia_driver_os"]
    source = matrix["sources"][DRIVER_DEFAULTS["nvidia_driver_source"]]
    tag = tr.image_tag(TABLE, TABLE["default"], backend)
    assert tag, "the default release has no %s image" % backend
    result = nvidia.check_branch_for_container(source["default_branch"], tag, tr.driver_table(TABLE),
                                               DRIVER_DEFAULTS["nvidia_driver_forward_compat"])
    assert result["ok"], "%s: %s" % (os_vars, result["reason"])


# The lowest cuda_repo branch of each OS that runs the newer vLLM images (None: no branch the
# collection knows does; the upgrade report says so per host). 615 is open modules only.
NEWER_VLLM_BRANCHES = {
    "26.07": {"Debian-12": "610", "Ubuntu-22": "610", "Ubuntu-24": "610", "RedHat-9": "610", "RedHat-8": None},
    "26.08": {"Debian-12": "615", "Ubuntu-22": "615", "Ubuntu-24": "615", "RedHat-9": None, "RedHat-8": None},
}


@pytest.mark.parametrize("release", sorted(NEWER_VLLM_BRANCHES))
@pytest.mark.parametrize("os_vars", OS_MATRIX)
def test_the_branch_each_os_offers_for_the_newer_vllm_images(os_vars, release):
    matrix = _yaml("roles", "nvidia_driver", "vars", os_vars + ".yml")["_nvidia_driver_os"]
    tag = tr.image_tag(TABLE, release, "vllm")
    runs = [branch for branch in sorted(matrix["sources"]["cuda_repo"]["branches"], key=int)
            if nvidia.check_branch_for_container(branch, tag, tr.driver_table(TABLE), [])["ok"]]
    assert (runs[0] if runs else None) == NEWER_VLLM_BRANCHES[release][os_vars]


@pytest.mark.parametrize("os_vars", OS_MATRIX)
def test_branch_615_offers_open_modules_only(os_vars):
    """NVIDIA's CUDA repository has no proprietary kernel modules from 615 (role README)."""
    branches = _yaml("roles", "nvidia_driver", "vars", os_vars + ".yml")["_nvidia_driver_os"]["sources"]["cuda_repo"]["branches"]
    assert list(branches.get("615", {"open": None})) == ["open"]


def test_driver_table_keys_are_every_image():
    table = tr.driver_table(TABLE)
    assert table["25.12-vllm-python-py3"] == {"cuda": "13.1.0", "min_driver": "590.44.01", "forward_compat": []}
    assert table["25.12-trtllm-python-py3"]["min_driver"] == "580.95.05"
    assert table["26.07-vllm-python-py3"]["min_driver"] == "610.43.02"
    assert table["26.07-trtllm-python-py3"]["min_driver"] == "590.44.01"
    assert "26.08-trtllm-python-py3" not in table
    assert [c["branch"] for c in table["25.10-trtllm-python-py3"]["forward_compat"]] == [470, 525, 535, 545]


def test_image_tags():
    assert tr.image_tag(TABLE, "25.12", "vllm") == "25.12-vllm-python-py3"
    assert tr.image_tag(TABLE, "26.07", "trtllm") == "26.07-trtllm-python-py3"
    assert tr.image_tag(TABLE, "26.08", "trtllm") == ""
    assert tr.image_tag(TABLE, "99.01", "vllm") == ""


def test_an_unknown_release_lists_the_known_ones():
    with pytest.raises(tr.TritonReleaseError) as error:
        tr.release_entry(TABLE, "26.99", "model_repository_triton_release")
    assert error.value.variable == "model_repository_triton_release"
    assert "known: 26.08, 26.07, 25.12, 25.10, 25.01" in str(error.value)


def test_a_backend_the_release_does_not_offer():
    with pytest.raises(tr.TritonReleaseError) as error:
        tr.image(tr.release_entry(TABLE, "26.08"), "trtllm", "triton_server_backend")
    assert error.value.variable == "triton_server_backend"
    assert "trtllm is not offered by Triton release 26.08 (the release table confirms: vllm)" in str(error.value)


@pytest.mark.parametrize("release,default,offered", [
    ("25.12", "inflight_batcher", ["inflight_batcher", "llmapi"]),   # both: the inventory chooses
    ("26.07", "llmapi", ["llmapi"]),                                 # engine backend deprecated
    ("26.08", None, []),                                             # no TRT-LLM image confirmed
    ("25.10", None, []),                                             # layouts not confirmed
])
def test_trtllm_layouts_per_release(release, default, offered):
    entry = tr.release_entry(TABLE, release)
    assert tr.default_layout(entry) == default
    assert tr.offered_layouts(entry) == offered


def test_a_deprecated_layout_is_refused_with_the_reason():
    with pytest.raises(tr.TritonReleaseError) as error:
        tr.check_layout(tr.release_entry(TABLE, "26.07"), "inflight_batcher", "triton_models[0].trtllm.layout",
                        "model_repository_triton_release")
    message = str(error.value)
    assert error.value.variable == "triton_models[0].trtllm.layout"
    assert "'inflight_batcher' is deprecated in TensorRT-LLM 1.2.1" in message and "layouts offered: llmapi" in message


# --- the model repository renderer follows the release ----------------------------------------

SETTINGS = {"models_dir": "/opt/models", "server_models_dir": "/opt/models", "engines_dir": "/opt/triton/engines",
            "server_engines_dir": "/opt/triton/engines", "vllm_report_custom_metrics": True}
GPUS = [{"index": 0, "memory_total_mib": 81559}]
TRT = {"name": "m", "backend": "tensorrtllm", "hf_repo_id": "o/m"}


def _normalize(release, model):
    settings = dict(SETTINGS, release=tr.release_entry(TABLE, release))
    return mr.normalize_models([model], GPUS, settings)[0]


@pytest.mark.parametrize("release,layout", [("25.12", "inflight_batcher"), ("26.07", "llmapi")])
def test_a_trtllm_model_gets_the_release_default_layout(release, layout):
    assert _normalize(release, dict(TRT))["trtllm"]["layout"] == layout


def test_25_12_lets_the_inventory_choose_the_layout():
    assert _normalize("25.12", dict(TRT, trtllm={"layout": "llmapi"}))["trtllm"]["layout"] == "llmapi"


def test_26_07_refuses_the_engine_layout():
    with pytest.raises(mr.VariableError) as error:
        _normalize("26.07", dict(TRT, trtllm={"layout": "inflight_batcher", "build": True}))
    assert error.value.variable == "triton_models[0].trtllm.layout"
    assert "model_repository_triton_release" in str(error.value)


def test_the_llmapi_layout_builds_no_engine():
    with pytest.raises(mr.VariableError) as error:
        _normalize("25.12", dict(TRT, model_path="/opt/models/m", hf_repo_id=None, trtllm={"layout": "llmapi", "build": True}))
    assert error.value.variable == "triton_models[0].trtllm.build"


def test_26_08_refuses_tensorrtllm_naming_the_backend():
    with pytest.raises(mr.VariableError) as error:
        _normalize("26.08", dict(TRT))
    assert error.value.variable == "triton_models[0].backend"
    assert "not offered by Triton release 26.08" in str(error.value)
    assert "model_repository_triton_release" in str(error.value)


# --- the vLLM contract of each release -----------------------------------------------------------

CONTRACTS = os.path.join(ROOT, "roles", "model_repository", "files", "vllm_contract")


@pytest.mark.parametrize("name", sorted(n[:-5] for n in os.listdir(CONTRACTS) if n.endswith(".json")))
def test_each_vllm_contract_is_the_vllm_of_its_release(name):
    contract = mr.load_vllm_contract(CONTRACTS, name)
    vllm = tr.image(tr.release_entry(TABLE, name), "vllm")
    assert contract["triton_release"] == name and contract["vllm_version"] == vllm["vllm"]
    assert contract["image"] == "nvcr.io/nvidia/tritonserver:" + vllm["tag"]


@pytest.mark.parametrize("engine_args, variable", [
    ({"swap_space": 4}, "triton_models[0].engine_args.swap_space"),       # gone in vLLM 0.24.0
    ({"quantization": "gguf"}, "triton_models[0].engine_args.quantization"),
])
def test_what_25_12_accepts_and_26_07_refuses(engine_args, variable):
    model = {"name": "v", "backend": "vllm", "hf_repo_id": "o/v", "engine_args": engine_args}
    old = dict(SETTINGS, release=tr.release_entry(TABLE, "25.12"), vllm_contract=mr.load_vllm_contract(CONTRACTS, "25.12"))
    new = dict(SETTINGS, release=tr.release_entry(TABLE, "26.07"), vllm_contract=mr.load_vllm_contract(CONTRACTS, "26.07"))
    mr.normalize_models([dict(model)], GPUS, old)
    with pytest.raises(mr.VariableError) as error:
        mr.normalize_models([dict(model)], GPUS, new)
    assert error.value.variable == variable and "0.24.0" in str(error.value)


# --- the upgrade report's findings ---------------------------------------------------------------

def _kinds(findings):
    return [(f["kind"], f["what"]) for f in findings]


def test_upgrade_to_a_release_without_the_backend():
    findings = tr.upgrade_findings(TABLE, "25.12", "26.08", "trtllm", [TRT])
    assert _kinds(findings) == [("variable", "triton_server_backend=trtllm")]
    assert "not offered by Triton release 26.08" in findings[0]["action"]


def test_upgrade_keeps_an_explicit_engine_layout_where_it_is_offered():
    model = dict(TRT, trtllm={"layout": "inflight_batcher", "build": True})
    findings = tr.upgrade_findings(TABLE, "25.12", "25.12", "trtllm", [model], driver_version="580.159.04",
                                   planned_branch="580", known_branches=["580", "590"])
    assert ("driver", "running 580.159.04") in _kinds(findings)
    assert [f["action"] for f in findings if f["kind"] == "model"] == [
        "engine rebuilt with the TensorRT-LLM of 25.12-trtllm-python-py3 (its fingerprint holds the image)"]


def test_upgrade_names_the_branch_to_set_when_the_os_has_one():
    findings = tr.upgrade_findings(TABLE, "25.12", "25.12", "vllm", [], planned_branch="580",
                                   known_branches=["550", "580", "590"])
    assert [f["action"] for f in findings if f["kind"] == "variable"][0].endswith("set nvidia_driver_branch to 590")


def test_upgrade_names_the_kernel_modules_a_newer_branch_needs():
    """26.08's vLLM image needs 615, which offers open modules only: a proprietary host is told both."""
    findings = tr.upgrade_findings(TABLE, "25.12", "26.08", "vllm", [], planned_branch="590",
                                   known_branches={"590": ["proprietary", "open"], "610": ["proprietary", "open"],
                                                   "615": ["open"]}, kernel_modules="proprietary")
    assert [f["action"] for f in findings if f["kind"] == "variable"][0].endswith(
        "set nvidia_driver_branch to 615 and nvidia_driver_kernel_modules to open (the only modules branch 615 offers)")


# --- the render and validation matrix, for every release of the table ----------------------------

TEMPLATES = os.path.join(ROOT, "roles", "model_repository", "templates")
H100 = {"gpus": [{"index": i, "memory_total_mib": 81559} for i in range(2)], "count": 2}


def _release_cases():
    for name in tr.known_releases(TABLE):
        yield name, "vllm", None
        for layout in tr.TRTLLM_LAYOUT_NAMES:
            yield name, "tensorrtllm", layout


def _model(backend, layout):
    if backend == "vllm":
        return {"name": "chat", "backend": "vllm", "model_path": "/opt/models/chat", "gpus": [0],
                "engine_args": {"max_model_len": 4096}}
    return {"name": "llama", "backend": "tensorrtllm", "model_path": "/opt/models/llama", "gpus": [1],
            "trtllm": {"layout": layout}}


@pytest.mark.parametrize("release,backend,layout", list(_release_cases()))
def test_every_release_renders_what_it_offers_and_refuses_the_rest(release, backend, layout):
    """What the release offers renders and parses with Triton's ModelConfig schema (build_plan
    validates every config.pbtxt); what it does not offer is refused, naming the variable."""
    entry = tr.release_entry(TABLE, release)
    settings = dict(SETTINGS, gpu_memory_budget=0.9, release=entry)
    image_backend = tr.MODEL_BACKEND_IMAGE[backend]
    offered = image_backend in tr.offered_backends(entry) and (
        backend == "vllm" and os.path.isfile(os.path.join(CONTRACTS, release + ".json"))
        or backend == "tensorrtllm" and layout in tr.offered_layouts(entry))
    try:
        if backend == "vllm":
            settings["vllm_contract"] = mr.load_vllm_contract(CONTRACTS, release)
        result = mr.build_plan([_model(backend, layout)], H100, None, settings, TEMPLATES, "/opt/triton/all_models/x")
    except mr.VariableError as error:
        assert not offered, str(error)
        assert error.variable in ("model_repository_triton_release", "triton_models[0].backend",
                                  "triton_models[0].trtllm.layout"), str(error)
        return
    assert offered, "%s rendered %s %s, which the table does not offer" % (release, backend, layout)
    configs = [path for path in result["files"] if path.endswith("config.pbtxt")]
    assert len(configs) == (1 if backend == "vllm" or layout == "llmapi" else 5)


def test_an_unquoted_release_is_explained():
    with pytest.raises(tr.TritonReleaseError, match=r"'25.1' is not in the release table .* quoted YY.MM string"):
        tr.release_entry(TABLE, 25.10)


# --- driver branches' end of life (the table's driver_branches) ---------------------------------

TODAY = "2026-11-30"
DEBIAN_BRANCHES = {"550": ["proprietary", "open"], "570": ["proprietary", "open"], "580": ["proprietary", "open"],
                   "590": ["proprietary", "open"], "610": ["proprietary", "open"], "615": ["open"]}


def test_the_table_dates_610_as_ended_in_august_2026():
    assert tr.branch_end_of_life(TABLE, "610") == "2026-08"
    assert tr.branch_past_end_of_life(TABLE, "610", TODAY)
    # Supported to the last day of its month, past it from the first day of the next.
    assert not tr.branch_past_end_of_life(TABLE, "610", "2026-08-31")
    assert tr.branch_past_end_of_life(TABLE, "610", "2026-09-01")
    # No date (a new feature branch NVIDIA gives none, or one not read): never past it.
    assert tr.branch_end_of_life(TABLE, "615") is None
    assert not tr.branch_past_end_of_life(TABLE, "615", "2099-01-01")
    assert not tr.branch_past_end_of_life(TABLE, "999", TODAY)


@pytest.mark.parametrize("eol,problem", [("August 2026", "is not YYYY-MM"), ("2026-13", "is not YYYY-MM")])
def test_a_bad_end_of_life_is_a_problem_of_the_table(eol, problem):
    table = dict(TABLE, driver_branches=dict(TABLE["driver_branches"], **{"610": {"eol": eol, "source": "matrix"}}))
    assert [p for p in tr.validate_table(table) if problem in p] == ["driver branch 610: eol %r %s" % (eol, problem)]


def _driver_variable(findings):
    return [f["action"] for f in findings if f["kind"] == "variable" and f["what"].startswith("nvidia_driver_branch")]


def test_upgrade_to_26_07_skips_610_past_its_end_of_life():
    """26.07's vLLM image needs 610.43.02: 610 is the lowest sufficient branch but ended in August 2026."""
    findings = tr.upgrade_findings(TABLE, "25.12", "26.07", "vllm", [], planned_branch="590",
                                   known_branches=DEBIAN_BRANCHES, kernel_modules="proprietary", today=TODAY)
    assert _driver_variable(findings) == [
        "refused by the nvidia_driver preflight: branch R590 is older than 610.43.02, the minimum for "
        "26.07-vllm-python-py3 (CUDA 13.3.0); set nvidia_driver_branch to 615 and nvidia_driver_kernel_modules "
        "to open (the only modules branch 615 offers) (610: 2026-08 past its end of life on 2026-11-30)"]


def test_upgrade_to_26_07_before_the_end_of_life_of_610_still_advises_610():
    findings = tr.upgrade_findings(TABLE, "25.12", "26.07", "vllm", [], planned_branch="590",
                                   known_branches=DEBIAN_BRANCHES, kernel_modules="proprietary", today="2026-07-15")
    assert _driver_variable(findings)[0].endswith("set nvidia_driver_branch to 610")


def test_a_branch_that_runs_the_image_but_has_ended_is_named_with_the_one_to_set():
    findings = tr.upgrade_findings(TABLE, "25.12", "26.07", "vllm", [], planned_branch="610",
                                   known_branches=DEBIAN_BRANCHES, kernel_modules="open", today=TODAY)
    assert _driver_variable(findings) == [
        "runs 26.07-vllm-python-py3, but branch 610 reached its end of life (2026-08) before 2026-11-30; "
        "set nvidia_driver_branch to 615 (610: 2026-08 past its end of life on 2026-11-30)"]
    assert ("driver", "nvidia_driver_branch 610") not in _kinds(findings)


def test_no_supported_branch_left_is_said():
    findings = tr.upgrade_findings(TABLE, "25.12", "26.07", "vllm", [], planned_branch="590",
                                   known_branches={"590": ["open"], "610": ["open"]}, today=TODAY)
    assert _driver_variable(findings)[0].endswith(
        "no branch nvidia_driver knows for this OS (590, 610) is new enough and not past its end of life: "
        "add one to its vars/ first")


def test_every_branch_of_the_driver_matrices_has_its_lifecycle_in_the_table():
    """One place: a branch nvidia_driver offers is listed in the table (with a date or null)."""
    for os_vars in OS_MATRIX:
        sources = _yaml("roles", "nvidia_driver", "vars", os_vars + ".yml")["_nvidia_driver_os"]["sources"]
        for source in sources.values():
            assert set(source["branches"]) <= set(TABLE["driver_branches"]), os_vars
