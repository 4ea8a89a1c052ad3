"""preflight_check_failures: the message of every failed check a role registered, none of the others."""
from ansible_collections.onprem.triton.plugins.filter.preflight_check_failures import preflight_check_failures


def test_only_failed_checks_give_messages_in_order():
    results = [
        {"failed": False, "msg": "All assertions passed"},
        {"skipped": True, "skip_reason": "Conditional result was False"},
        {"failed": True, "msg": "triton_server_restart_sec on h is -1:\n  it must be >= 0."},
        {"failed": True, "msg": "One or more items failed", "results": [
            {"failed": False, "msg": "All assertions passed", "item": {"name": "a"}},
            {"failed": True, "msg": "triton_server_gate_prompt on h is \"\": it must be a prompt, not empty."},
        ]},
    ]
    assert preflight_check_failures(results) == [
        "triton_server_restart_sec on h is -1: it must be >= 0.",
        "triton_server_gate_prompt on h is \"\": it must be a prompt, not empty.",
    ]


def test_nothing_failed_gives_an_empty_list():
    assert not preflight_check_failures([{"failed": False, "msg": "All assertions passed"}])
    assert not preflight_check_failures([])


def test_a_hidden_secret_check_still_counts_as_a_problem():
    hidden = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"
    (message,) = preflight_check_failures([{"failed": True, "censored": hidden}])
    assert message.startswith("a check of secret values failed")
