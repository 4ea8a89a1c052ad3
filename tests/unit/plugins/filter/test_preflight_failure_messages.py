"""preflight_failure_messages: every problem of a failed check, one line each, stage first."""
from ansible_collections.onprem.triton.plugins.filter.preflight_failure_messages import preflight_failure_messages


def test_an_assert_gives_its_message_on_one_line():
    result = {"failed": True, "assertion": "x", "msg": "triton_server_restart_sec -1\n  (>= 0)"}
    assert preflight_failure_messages(result, "triton_server") == "triton_server: triton_server_restart_sec -1 (>= 0)"


def test_a_looped_assert_gives_each_failed_item():
    result = {"failed": True, "msg": "One or more items failed", "results": [
        {"failed": False, "msg": "All assertions passed"},
        {"failed": True, "msg": "triton_server_http_address '999.1.1.1' on h is not an address"},
        {"failed": True, "msg": "triton_server_grpc_address 'x' on h is not an address"},
    ]}
    assert preflight_failure_messages(result, "triton_server").splitlines() == [
        "triton_server: triton_server_http_address '999.1.1.1' on h is not an address",
        "triton_server: triton_server_grpc_address 'x' on h is not an address",
    ]


def test_argument_spec_errors_are_each_a_line():
    result = {"failed": True, "msg": "Validation of arguments failed:\n...", "argument_errors": [
        "argument 'container_engine_log_max_file' is of type str and we were unable to convert to int",
        "value of container_engine_source must be one of: distribution, docker_ce, got: bogus"]}
    lines = preflight_failure_messages(result, "container_engine").splitlines()
    assert lines == ["container_engine: argument 'container_engine_log_max_file' is of type str and we were unable to "
                     "convert to int",
                     "container_engine: value of container_engine_source must be one of: distribution, docker_ce, got: bogus"]


def test_a_module_without_msg_still_says_something():
    assert preflight_failure_messages({"failed": True, "stderr": "boom"}, "hf_model") == "hf_model: boom"
    assert preflight_failure_messages({"failed": True}, "hf_model") == "hf_model: failed without a message"
