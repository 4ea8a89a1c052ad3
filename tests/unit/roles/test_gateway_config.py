"""The gateway role's HAProxy configuration, rendered from an inventory (gateway/inventory.yml)
as the role renders it, then checked by the real `haproxy -c` (the role's `validate`)."""
import subprocess
from pathlib import Path

from role_render import checker
from role_render import render as render_role

HAPROXY, pytestmark = checker("haproxy", "haproxy")


def render(tmp_path, **extra_vars):
    """The configuration for gw-1 of gateway/inventory.yml, with -e overrides."""
    return render_role("gateway", tmp_path / "haproxy.cfg", **extra_vars).read_text(encoding="utf-8")


def haproxy_check(tmp_path, config):
    """`haproxy -c` on the configuration, with the files it refers to moved under tmp_path."""
    for original in ("/etc/haproxy/gateway-api-keys.lst", "/etc/haproxy/certs/gateway.pem"):
        config = config.replace(original, str(tmp_path / Path(original).name))
    # the chroot and admin socket folders of the gateway host
    config = config.replace("chroot /var/lib/haproxy", f"chroot {tmp_path}")
    config = config.replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
    path = tmp_path / "checked.cfg"
    path.write_text(config, encoding="utf-8")
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


def test_the_openai_endpoint_balances_each_servers_openai_port_checked_on_its_kserve_port(tmp_path):
    config = render(tmp_path, gateway_openai_enabled=True, gateway_api_keys=["k" * 40])
    (tmp_path / "gateway-api-keys.lst").write_text("Bearer " + "k" * 40 + "\n")
    check = haproxy_check(tmp_path, config)
    assert check.returncode == 0, check.stdout + check.stderr
    frontend = config.split("\nfrontend triton_openai\n", 1)[1].split("\nbackend ", 1)[0]
    assert "bind 0.0.0.0:9000" in frontend and "unless { req.hdr(authorization) -m str -f" in frontend
    # the triton_server role's default OpenAI port (9000) for every host here; health on the KServe port
    assert [s[1:] for s in server_lines(config, "triton_openai")] == [
        ["gpu-a", "10.0.0.5:9000", "check", "port", "8100"], ["gpu-b", "[fd00::7]:9000", "check", "port", "8000"],
        ["gpu-c", "10.0.1.9:9000", "check", "port", "8000"]]


def test_no_openai_endpoint_by_default(tmp_path):
    assert "triton_openai" not in render(tmp_path)
