# SPDX-License-Identifier: Apache-2.0
"""The triton_server role refuses OpenAI frontend settings the frontend cannot serve, with a message
naming the variable, before it changes anything (connection local, check mode, as
test_triton_server_preflight.py)."""

import pytest

from tests.integration.role_check import assert_refused_before_any_change
from tests.integration.test_triton_server_preflight import _run as run_server_preflight

KEY = "sk-onprem-preflight-0123456789abcdef0123"
# On top of the good settings of test_triton_server_preflight.py.
OPENAI = {
    "triton_server_models_dir": "/opt/models",
    "triton_server_openai_enabled": True,
    "triton_server_openai_api_key": KEY,
}


def _run(tmp_path, overrides):
    return run_server_preflight(tmp_path, dict(OPENAI, **overrides))


@pytest.mark.parametrize(
    "overrides, named",
    [
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
    ],
)
def test_openai_settings_the_frontend_cannot_serve_are_refused_by_name(tmp_path, overrides, named):
    assert_refused_before_any_change(_run(tmp_path, overrides), named)


def test_a_short_key_is_refused_and_not_echoed(tmp_path):
    run = _run(tmp_path, {"triton_server_openai_api_key": "sk-short-secret"})
    assert_refused_before_any_change(run, "triton_server_openai_api_key must be set")
    assert "sk-short-secret" not in run.stdout + run.stderr
