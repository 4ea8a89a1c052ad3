"""preflight_problems: the message of every failed check a role registered, none of the others."""
import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.onprem.triton.plugins.lookup.preflight_problems import LookupModule

HIDDEN = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"


def _problems(variables, *roles):
    return LookupModule().run(list(roles), variables=variables)


def test_only_failed_checks_of_the_named_role_give_messages_in_order():
    variables = {
        "__triton_server_check_ports": {"failed": False, "msg": "All assertions passed"},
        "__triton_server_check_tls": {"skipped": True, "skip_reason": "Conditional result was False"},
        "__triton_server_check_timers": {"failed": True, "msg": "triton_server_restart_sec on h is -1:\n  it must be >= 0."},
        "__gateway_check_ports": {"failed": True, "msg": "another role's problem"},
        "triton_server_check_unrelated": {"failed": True, "msg": "not a registered check"},
        "__triton_server_check_prompt": {"failed": True, "msg": "One or more items failed", "results": [
            {"failed": False, "msg": "All assertions passed", "item": {"name": "a"}},
            {"failed": True, "msg": "triton_server_gate_prompt on h is \"\": it must be a prompt, not empty."},
        ]},
    }
    assert _problems(variables, "triton_server") == [
        "triton_server_restart_sec on h is -1: it must be >= 0.",
        "triton_server_gate_prompt on h is \"\": it must be a prompt, not empty.",
    ]
    assert _problems(variables, "gateway") == ["another role's problem"]


def test_nothing_failed_gives_an_empty_list():
    assert not _problems({"__hf_model_check_dir": {"failed": False, "msg": "All assertions passed"}}, "hf_model")
    assert not _problems({}, "hf_model")
    assert not _problems(None, "hf_model")


def test_a_hidden_secret_check_still_counts_as_a_problem():
    (message,) = _problems({"__hf_model_check_token": {"failed": True, "censored": HIDDEN}}, "hf_model")
    assert message.startswith("a check of secret values failed")


def test_a_term_that_is_not_a_role_name_is_refused():
    with pytest.raises(AnsibleLookupError, match="takes role names"):
        _problems({}, "^__.*")
