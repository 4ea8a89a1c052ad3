# SPDX-License-Identifier: Apache-2.0
"""The triton_server role refuses OpenAI frontend settings the frontend cannot serve, with a message
naming the variable, before it changes anything (connection local, check mode, as
test_triton_server_preflight.py)."""

import re
import sys

import pytest

from tests.integration.role_check import assert_host_refused_before_any_change, role_play, run_cases_as_hosts, run_role_check
from tests.integration.test_triton_server_preflight import GOOD

KEY = "sk-onprem-preflight-0123456789abcdef0123"
# On top of the good settings of test_triton_server_preflight.py.
OPENAI = {
    "triton_server_models_dir": "/opt/models",
    "triton_server_openai_enabled": True,
    "triton_server_openai_api_key": KEY,
}


BAD_SETTINGS = [
    # the 25.12 TensorRT-LLM image does not ship the frontend (release table, openai_frontend.trtllm)
    ({"triton_server_backend": "trtllm"},
     "triton_server_openai_enabled is true but triton_server_backend is 'trtllm': the 25.12-trtllm-python-py3 "
     "image does not ship Triton's OpenAI frontend"),
    ({"triton_server_openai_api_key": ""}, "triton_server_openai_api_key must be set with triton_server_openai_enabled"),
    ({"triton_server_openai_port": 8000}, "triton_server_openai_port on localhost: 8000 must be a port 1-65535 other than"),
    ({"triton_server_openai_default_max_tokens": 0}, "triton_server_openai_default_max_tokens on localhost: 0 must be at least 1"),
    ({"triton_server_extra_args": ["--log-info=true"]},
     'triton_server_extra_args on localhost: ["--log-info=true"] must be empty with triton_server_openai_enabled'),
    ({"triton_server_grpc_address": "127.0.0.1"},
     "triton_server_grpc_address on localhost: '127.0.0.1' must equal triton_server_http_address '0.0.0.0'"),
    ({"model_repository_load_models": ["a", "b"]},
     'triton_server_prompt_models on localhost: ["a", "b"] must be exactly one model'),
    ({"triton_server_openai_tokenizer": "/etc"},
     "triton_server_openai_tokenizer on localhost: '/etc' must be a folder of the synced weights under "
     "triton_server_models_dir '/opt/models'"),
    ({"triton_server_models_dir": ""}, "triton_server_openai_tokenizer on localhost: '' must be a folder"),
]
SHORT_KEY = "sk-short-secret"
BAD_TOKENIZER_CONFIGS = [
    # what molecule triton_server's echo once wrote: a raw newline inside the chat template string
    ('{"chat_template": "{{ bos }}\n{{ messages }}"}', "is not valid JSON: Invalid control character at: line 1"),
    ('{"chat_template": "x",}', "is not valid JSON: Expecting property name enclosed in double quotes"),
    ("[]", "is JSON but not an object (a list)"),
]


@pytest.fixture(scope="module")
def bad_setting_runs(tmp_path_factory):
    """Every bad setting below in one run, each on a host of its own (as test_triton_server_preflight.py's
    bad_value_runs): BAD_SETTINGS as badNN, BAD_TOKENIZER_CONFIGS as tokenizerN, a short key as shortkey."""
    tmp_path = tmp_path_factory.mktemp("openai_bad_settings")
    cases = {f"bad{index:02d}": case[0] for index, case in enumerate(BAD_SETTINGS)}
    for index, (text, _problem) in enumerate(BAD_TOKENIZER_CONFIGS):
        cases[f"tokenizer{index}"] = _tokenizer(tmp_path / f"tokenizer{index}", text)
    cases["shortkey"] = {"triton_server_openai_api_key": SHORT_KEY}
    cases = {host: dict(GOOD, **dict(OPENAI, **overrides)) for host, overrides in cases.items()}
    return cases, run_cases_as_hosts(tmp_path, role_play(
        tmp_path, "onprem.triton.triton_server", "all", gather_facts=True, gather_subset=["network"]), cases)


@pytest.mark.parametrize("index", range(len(BAD_SETTINGS)), ids=[case[1][:60] for case in BAD_SETTINGS])
def test_openai_settings_the_frontend_cannot_serve_are_refused_by_name(bad_setting_runs, index):
    run, hosts = bad_setting_runs[1]
    host = f"bad{index:02d}"
    assert_host_refused_before_any_change(hosts[host], BAD_SETTINGS[index][1].replace("localhost", host), run.stdout)


def test_a_short_key_is_refused_and_not_echoed(bad_setting_runs):
    run, hosts = bad_setting_runs[1]
    assert_host_refused_before_any_change(hosts["shortkey"], "triton_server_openai_api_key must be set", run.stdout)
    assert SHORT_KEY not in run.stdout + run.stderr


def _tokenizer(tmp_path, text):
    """A synced weights folder on this machine whose tokenizer_config.json holds text."""
    folder = tmp_path / "models" / "demo"
    folder.mkdir(parents=True)
    (folder / "tokenizer_config.json").write_text(text, encoding="utf-8")
    return {"triton_server_models_dir": str(tmp_path / "models"), "triton_server_openai_tokenizer": str(folder)}


@pytest.mark.parametrize("index", range(len(BAD_TOKENIZER_CONFIGS)), ids=[case[0] for case in BAD_TOKENIZER_CONFIGS])
def test_a_tokenizer_config_the_frontend_cannot_load_is_refused_by_name(bad_setting_runs, index):
    cases, (run, hosts) = bad_setting_runs
    host = f"tokenizer{index}"
    assert_host_refused_before_any_change(hosts[host], "triton_server_openai_tokenizer on %s: %s/tokenizer_config.json %s" % (
        host, cases[host]["triton_server_openai_tokenizer"], BAD_TOKENIZER_CONFIGS[index][1]), run.stdout)


def _preflight_problems(tmp_path, overrides):
    """Only the preflight (tasks_from), up front: the problems it reports, one string each."""
    variables = dict(GOOD, ansible_python_interpreter=sys.executable, triton_server_preflight_before_stages=True,
                     **dict(OPENAI, **overrides))
    run = run_role_check(tmp_path, "onprem.triton.triton_server", "localhost", variables,
                         ["-c", "local", "-i", "localhost,"], gather_facts=True, tasks_from="preflight")
    output = run.stdout + run.stderr
    assert "Report every problem the checks found" in output and "Traceback" not in output, output[-3000:]
    return run, re.findall(r"^failed: \[localhost\] \(item=(.*)$", run.stdout, re.MULTILINE)


def test_the_shipped_defaults_with_the_frontend_on_pass_its_checks(tmp_path):
    """A good tokenizer config and the shipped triton_server_metrics_config: nothing about either is refused
    (this machine may boot no systemd: that is then the one problem reported)."""
    run, problems = _preflight_problems(tmp_path, _tokenizer(tmp_path, '{"chat_template": "{{ messages }}"}'))
    assert all("/run/systemd/system does not exist" in problem for problem in problems), problems
    assert (run.returncode != 0) == bool(problems), run.stdout[-3000:]
    assert "Read the tokenizer config of the OpenAI frontend" in run.stdout, run.stdout[-3000:]


def test_metrics_options_with_the_frontend_on_are_refused_naming_both_variables(tmp_path):
    run, problems = _preflight_problems(tmp_path, {"triton_server_metrics_config": ["summary_latencies=true"]})
    assert run.returncode != 0
    assert any(problem.startswith('triton_server_metrics_config on localhost: ["summary_latencies=true"] must be empty '
                                  "with triton_server_openai_enabled") for problem in problems), problems
