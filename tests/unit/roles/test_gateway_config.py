"""The gateway role's HAProxy configuration, rendered from an inventory (gateway/inventory.yml)
as the role renders it, then checked by the real `haproxy -c` (the role's `validate`); and the
role's preflight on that inventory, run on the controller (gateway/preflight.yml)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from role_render import HERE as ROLES, ROOT, checker, gateway_config_here
from role_render import render as render_role

HAPROXY, pytestmark = checker("haproxy", "haproxy")
HERE = ROLES / "gateway"


def render(tmp_path, **extra_vars):
    """The configuration for gw-1 of gateway/inventory.yml, with -e overrides."""
    return render_role("gateway", tmp_path / "haproxy.cfg", **extra_vars).read_text(encoding="utf-8")


def haproxy_check(tmp_path, config):
    """`haproxy -c` on the configuration, with the files it refers to moved under tmp_path."""
    path = tmp_path / "checked.cfg"
    path.write_text(gateway_config_here(config, tmp_path), encoding="utf-8")
    return subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, check=False)


def server_lines(config, backend):
    section = config.split(f"\nbackend {backend}\n", 1)[1].split("\nfrontend ", 1)[0]
    return [line.split() for line in section.splitlines() if line.strip().startswith("server ")]


def test_the_defaults_pass_haproxy_check_with_every_serving_host_a_backend(tmp_path):
    config = render(tmp_path)
    check = haproxy_check(tmp_path, config)
    assert check.returncode == 0, check.stdout + check.stderr
    servers = server_lines(config, "triton_http")
    # addresses and ports from the inventory; gpu-b on the triton_server role's default port
    assert [s[1:3] for s in servers] == [["gpu-a", "10.0.0.5:8100"], ["gpu-b", "[fd00::7]:8000"], ["gpu-c", "10.0.1.9:8000"]]
    assert all(s[3:] == ["check"] for s in servers)
    assert "balance leastconn" in config and "http-check send meth GET uri /v2/health/ready" in config
    # token streams leave chunk by chunk (bench/gateway_overhead.py: TTFT through the gateway 1.95x without it)
    assert "\n    option http-no-delay\n" in config.split("\nfrontend ", 1)[0]
    assert "frontend triton_grpc" not in config and " ssl " not in config and "Bearer" not in config


def test_grpc_tls_api_keys_and_a_model_health_check_pass_haproxy_check(tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=gateway", "-days", "2",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    (tmp_path / "gateway.pem").write_text((tmp_path / "cert.pem").read_text() + (tmp_path / "key.pem").read_text())
    (tmp_path / "gateway-api-keys.lst").write_text("Bearer " + "k" * 32 + "\n")
    config = render(tmp_path, gateway_grpc_enabled=True, gateway_tls_enabled=True, gateway_api_keys=["k" * 32],
                    gateway_health_model="tiny_llm")
    check = haproxy_check(tmp_path, config)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "k" * 32 not in config  # the keys live in their own file, not in the configuration
    assert "http-check send meth GET uri /v2/models/tiny_llm/ready" in config
    grpc = server_lines(config, "triton_grpc")
    assert grpc[0][1:] == ["gpu-a", "10.0.0.5:8101", "proto", "h2", "check", "port", "8100", "check-proto", "h1"]
    assert config.count("ssl crt /etc/haproxy/certs/gateway.pem") == 2


def test_haproxy_check_refuses_a_configuration_whose_key_file_is_missing(tmp_path):
    # what `validate` guards against: the check fails, the running configuration stays
    config = render(tmp_path, gateway_api_keys=["k" * 32])
    check = haproxy_check(tmp_path, config)
    assert check.returncode != 0
    assert "gateway-api-keys.lst" in check.stdout + check.stderr


SERVERS_KEY = "sk-servers-0123456789abcdef0123456789abcdef"


def test_the_openai_endpoint_balances_the_hosts_that_run_the_frontend_checked_on_their_kserve_port(tmp_path):
    config = render(tmp_path, gateway_openai_enabled=True, gateway_api_keys=["k" * 40])
    (tmp_path / "gateway-api-keys.lst").write_text("Bearer " + "k" * 40 + "\n")
    (tmp_path / "gateway-openai-server-key.map").write_text(f"servers {SERVERS_KEY}\n")
    check = haproxy_check(tmp_path, config)
    assert check.returncode == 0, check.stdout + check.stderr
    frontend = config.split("\nfrontend triton_openai\n", 1)[1].split("\nbackend ", 1)[0]
    assert "bind 0.0.0.0:9000" in frontend and "unless { req.hdr(authorization) -m str -f" in frontend
    # gpu-c runs no OpenAI frontend (a TensorRT-LLM host): not a server of this backend. The
    # triton_server role's default OpenAI port (9000); health on the KServe port.
    assert [s[1:] for s in server_lines(config, "triton_openai")] == [
        ["gpu-a", "10.0.0.5:9000", "check", "port", "8100"], ["gpu-b", "[fd00::7]:9000", "check", "port", "8000"]]
    # the client's gateway key is swapped for the servers' one, read from its 0640 map file
    backend = config.split("\nbackend triton_openai\n", 1)[1]
    assert 'http-request set-header Authorization "Bearer %[str(servers),map(/etc/haproxy/gateway-openai-server-key.map)]"' \
        in backend
    assert SERVERS_KEY not in config


def test_without_gateway_keys_the_clients_key_goes_to_the_servers_unchanged(tmp_path):
    config = render(tmp_path, gateway_openai_enabled=True)
    assert "frontend triton_openai" in config and "set-header Authorization" not in config and ".map" not in config
    check = haproxy_check(tmp_path, config)
    assert check.returncode == 0, check.stdout + check.stderr


def preflight(tmp_path, inventory_change=None, **extra_vars):
    """The role's preflight for gw-1 (free ports of this machine); returns (rc, output)."""
    inventory = yaml.safe_load((HERE / "inventory.yml").read_text(encoding="utf-8"))
    if inventory_change:
        inventory_change(inventory["all"]["children"]["triton_servers"])
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory), encoding="utf-8")
    settings = {"gateway_http_port": 18997, "gateway_openai_port": 18998, "gateway_openai_enabled": True, **extra_vars}
    run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
                          str(HERE / "preflight.yml"), "-e", json.dumps(settings)], capture_output=True, text=True,
                         env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".ansible" / "collections")), check=False)
    return run.returncode, " ".join((run.stdout + run.stderr).split())


def test_preflight_passes_the_inventory_and_names_each_openai_problem(tmp_path):
    rc, output = preflight(tmp_path, gateway_api_keys=["k" * 40])
    assert rc == 0, output[-2000:]

    def no_frontend(servers):
        for host in servers["hosts"].values():
            host.pop("triton_server_openai_enabled", None)
    rc, output = preflight(tmp_path, no_frontend)
    assert rc != 0 and ("gateway_openai_enabled is true on gw-1: no host of gateway_servers_group ('triton_servers') "
                        "has triton_server_openai_enabled") in output, output[-2000:]

    def other_key(servers):
        servers["hosts"]["gpu-b"]["triton_server_openai_api_key"] = "sk-other-0123456789abcdef0123456789abcdef"
    rc, output = preflight(tmp_path, other_key, gateway_api_keys=["k" * 40])
    assert rc != 0 and ("must have the same non-empty triton_server_openai_api_key; gpu-a, gpu-b have 2 different ones"
                        in output), output[-2000:]
    assert SERVERS_KEY not in output and "sk-other" not in output
    # without keys at the gateway each server checks the client's key itself: different keys are allowed
    assert preflight(tmp_path, other_key)[0] == 0

    def same_port(servers):
        servers["hosts"]["gpu-a"]["triton_server_openai_port"] = 8100
    rc, output = preflight(tmp_path, same_port)
    assert rc != 0 and "triton_server_openai_port of gpu-a (8100) must be a port 1-65535 other than its" in output, output[-2000:]


def test_no_openai_endpoint_by_default(tmp_path):
    assert "triton_openai" not in render(tmp_path)
