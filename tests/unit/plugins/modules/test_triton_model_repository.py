# SPDX-License-Identifier: Apache-2.0
"""triton_model_repository: generations, the atomic current switch, the
previous generation, rollback, check mode, changed models, pruning."""

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.onprem.triton.plugins.modules import triton_model_repository as module

GEMMA = {"gemma/config.pbtxt": 'name: "gemma"\nbackend: "vllm"\n', "gemma/1/model.json": '{"model": "/m/gemma"}'}


def run(root, check=False, diff=False, **params):
    args = dict(root=str(root), **params)
    if check:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        module.main()
    return exit_info.value.code


@pytest.fixture
def result(capsys):
    def call(root, **params):
        code = run(root, **params)
        output = json.loads(capsys.readouterr().out)
        output["rc"] = code
        return output
    return call


def test_first_install_then_idempotent(tmp_path, result):
    first = result(tmp_path, files=GEMMA)
    assert first["changed"] and first["changed_models"] == ["gemma"] and first["previous_path"] is None
    current = tmp_path / "current"
    assert os.path.islink(current) and os.readlink(current) == "generations/%s" % first["generation"]
    assert (current / "gemma" / "1" / "model.json").read_text() == '{"model": "/m/gemma"}'
    assert oct((current / "gemma" / "config.pbtxt").stat().st_mode & 0o777) == "0o644"
    second = result(tmp_path, files=GEMMA)
    assert not second["changed"] and second["changed_models"] == [] and second["generation"] == first["generation"]


def test_change_keeps_previous_and_names_the_changed_model(tmp_path, result):
    other = {"opt/config.pbtxt": 'name: "opt"\n', "opt/1/model.json": "{}"}
    first = result(tmp_path, files=dict(GEMMA, **other))
    changed = dict(GEMMA, **other)
    changed["gemma/1/model.json"] = '{"model": "/m/gemma", "max_model_len": 2048}'
    second = result(tmp_path, files=changed)
    assert second["changed"] and second["changed_models"] == ["gemma"]
    assert second["previous_path"] == str(tmp_path / "generations" / first["generation"])
    assert os.readlink(tmp_path / "previous") == "generations/%s" % first["generation"]
    assert (tmp_path / "generations" / first["generation"] / "gemma" / "1" / "model.json").exists()
    third = result(tmp_path, files=GEMMA)
    assert third["removed_models"] == ["opt"]


def test_check_mode_changes_nothing_even_on_a_fresh_host(tmp_path, result):
    root = tmp_path / "fresh"
    checked = result(root, files=GEMMA, check=True, copies={"x_preprocessing/1": str(tmp_path / "missing")})
    assert checked["changed"] and checked["changed_models"] == ["gemma", "x_preprocessing"]
    assert not root.exists()


def test_check_mode_reports_no_change_when_installed(tmp_path, result):
    result(tmp_path, files=GEMMA)
    assert not result(tmp_path, files=GEMMA, check=True)["changed"]


def test_diff_shows_the_changed_files(tmp_path, result):
    result(tmp_path, files=GEMMA)
    changed = dict(GEMMA, **{"gemma/1/model.json": '{"model": "/m/other"}'})
    diff = result(tmp_path, files=changed, diff=True)["diff"]
    assert "/m/gemma" in diff["before"] and "/m/other" in diff["after"] and "config.pbtxt" not in diff["after"]


def test_copies_code_folders_and_groups_model_dirs(tmp_path, result):
    source = tmp_path / "all_models" / "preprocessing" / "1"
    source.mkdir(parents=True)
    (source / "model.py").write_text("# tokenizer\n")
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    files = {"l/config.pbtxt": 'platform: "ensemble"\n', "l_preprocessing/config.pbtxt": 'backend: "python"\n'}
    out = result(tmp_path / "repo", files=files, copies={"l_preprocessing/1": str(source)},
                 model_dirs={"l": ["l", "l_preprocessing"]})
    assert out["changed_models"] == ["l"]
    installed = tmp_path / "repo" / "current" / "l_preprocessing" / "1"
    assert (installed / "model.py").read_text() == "# tokenizer\n" and not (installed / "__pycache__").exists()


def test_missing_copy_source_fails_outside_check_mode(tmp_path, result):
    out = result(tmp_path / "repo", files=GEMMA, copies={"x/1": str(tmp_path / "nope")})
    assert out["rc"] == 1 and out["failed"] and "model_repository_trtllm_all_models_dir" in out["msg"]
    assert not (tmp_path / "repo" / "current").exists()


def test_rollback_swaps_current_and_previous(tmp_path, result):
    first = result(tmp_path, files=GEMMA)
    second = result(tmp_path, files=dict(GEMMA, **{"gemma/1/model.json": "{}"}))
    rolled = result(tmp_path, state="rollback")
    assert rolled["changed"] and rolled["changed_models"] == ["gemma"]
    assert os.readlink(tmp_path / "current") == "generations/%s" % first["generation"]
    assert os.readlink(tmp_path / "previous") == "generations/%s" % second["generation"]
    assert (tmp_path / "current" / "gemma" / "1" / "model.json").read_text() == '{"model": "/m/gemma"}'


@pytest.mark.parametrize("form", ["id", "relative", "absolute"])
def test_rollback_to_a_named_generation_keeps_current_previous_and_result_consistent(tmp_path, result, form):
    """triton_server's rollback to the last good generation: not previous, an older kept one."""
    first = result(tmp_path, files=GEMMA)
    second = result(tmp_path, files=dict(GEMMA, **{"gemma/1/model.json": '{"n": 2}'}))
    third = result(tmp_path, files=dict(GEMMA, **{"gemma/1/model.json": '{"n": 3}'}))
    wanted = {"id": first["generation"], "relative": "generations/" + first["generation"],
              "absolute": str(tmp_path / "generations" / first["generation"])}[form]
    rolled = result(tmp_path, state="rollback", generation=wanted)
    assert rolled["changed"] and rolled["changed_models"] == ["gemma"]
    assert os.readlink(tmp_path / "current") == "generations/%s" % first["generation"]
    assert os.readlink(tmp_path / "previous") == "generations/%s" % third["generation"]
    assert rolled["current_target"] == str(tmp_path / "generations" / first["generation"])
    assert rolled["previous_path"] == str(tmp_path / "generations" / third["generation"])
    assert rolled["generation"] == first["generation"] != second["generation"]
    again = result(tmp_path, state="rollback", generation=wanted)
    assert not again["changed"]


@pytest.mark.parametrize("wanted", ["0" * 16, "../elsewhere", "/tmp"])
def test_rollback_to_a_generation_not_on_disk_is_refused_unchanged(tmp_path, result, wanted):
    first = result(tmp_path, files=GEMMA)
    out = result(tmp_path, state="rollback", generation=wanted)
    assert out["failed"] and "is not a generation of" in out["msg"]
    assert os.readlink(tmp_path / "current") == "generations/%s" % first["generation"]


def test_rollback_without_previous_fails(tmp_path, result):
    result(tmp_path, files=GEMMA)
    out = result(tmp_path, state="rollback")
    assert out["failed"] and "no previous generation" in out["msg"]


def test_old_generations_are_pruned_but_current_and_previous_kept(tmp_path, result):
    seen = []
    for number in range(5):
        out = result(tmp_path, files=dict(GEMMA, **{"gemma/1/model.json": '{"n": %d}' % number}), keep=2)
        seen.append(out["generation"])
        os.utime(tmp_path / "generations" / out["generation"], (1000 + number, 1000 + number))
    assert sorted(os.listdir(tmp_path / "generations")) == sorted(seen[-2:])


def test_switching_back_to_an_existing_generation_reuses_it(tmp_path, result):
    first = result(tmp_path, files=GEMMA)
    result(tmp_path, files=dict(GEMMA, **{"gemma/1/model.json": "{}"}))
    again = result(tmp_path, files=GEMMA)
    assert again["changed"] and again["generation"] == first["generation"]


def test_rendered_file_wins_over_the_same_path_in_a_copied_folder(tmp_path, result):
    """Upstream's all_models/llmapi/tensorrt_llm/1 ships its own model.yaml (TinyLlama,
    decoupled: False): copying the folder must not replace the model.yaml the role rendered."""
    upstream = tmp_path / "all_models" / "llmapi" / "tensorrt_llm" / "1"
    upstream.mkdir(parents=True)
    (upstream / "model.py").write_text("# upstream model\n")
    (upstream / "model.yaml").write_text("model: TinyLlama/TinyLlama-1.1B-Chat-v1.0\ntriton_config:\n  decoupled: False\n")
    ours = '{"model": "/m/llama", "triton_config": {"decoupled": true, "max_batch_size": 0}}\n'
    out = result(tmp_path / "repo", files={"llama/config.pbtxt": 'name: "llama"\n', "llama/1/model.yaml": ours},
                 copies={"llama/1": str(upstream)}, model_dirs={"llama": ["llama"]})
    current = tmp_path / "repo" / "current" / "llama" / "1"
    assert out["changed"]
    assert (current / "model.yaml").read_text() == ours
    assert (current / "model.py").read_text() == "# upstream model\n"
