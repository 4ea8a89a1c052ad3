"""Real state of the converged GPU host instance (Debian 12, no GPU)."""
import json

TOOLKIT = ["nvidia-container-toolkit", "nvidia-container-toolkit-base",
           "libnvidia-container-tools", "libnvidia-container1"]
DRIVER = ["nvidia-kernel-dkms", "nvidia-smi", "libcuda1", "nvidia-persistenced"]


def held(host):
    return set(host.check_output("apt-mark showhold").split())


def test_driver_packages_installed_and_held(host):
    for name in DRIVER:
        assert host.package(name).is_installed, name
        assert host.package(name).version.startswith("535."), name
    assert set(DRIVER) <= held(host)


def test_driver_kept_out_of_unattended_upgrades(host):
    text = host.file("/etc/apt/apt.conf.d/51onprem-triton-nvidia").content_string
    assert '"nvidia-";' in text and '"libnvidia-";' in text


def test_nouveau_blacklisted(host):
    conf = host.file("/etc/modprobe.d/blacklist-nouveau.conf")
    assert conf.mode == 0o644
    assert "blacklist nouveau" in conf.content_string.splitlines()


def test_persistenced_enabled_not_started_without_gpu(host):
    service = host.service("nvidia-persistenced")
    assert service.is_enabled
    # No /dev/nvidia* in a container: the role starts it only once the module is loaded.
    assert not service.is_running


def test_docker_installed_held_active_enabled(host):
    assert host.package("docker.io").is_installed
    assert "docker.io" in held(host)
    docker = host.service("docker")
    assert docker.is_running and docker.is_enabled
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["Driver"] == "vfs"
    assert "nvidia" in info["Runtimes"]


def test_daemon_json_merged_and_custom_keys_survive(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["max-concurrent-downloads"] == 7          # the operator's key
    assert config["log-opts"]["labels"] == "team"            # the operator's nested key
    assert config["log-driver"] == "json-file"
    assert config["log-opts"]["max-size"] == "100m"
    assert config["log-opts"]["max-file"] == "3"
    assert config["storage-driver"] == "vfs"
    assert config["bridge"] == "none" and config["iptables"] is False
    assert config["runtimes"]["nvidia"] == {"path": "/usr/bin/nvidia-container-runtime", "args": []}
    assert config["features"]["cdi"] is True
    assert "default-runtime" not in config


def test_toolkit_pinned_below_newest_and_held(host):
    candidate = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert "Candidate: 1.17.8-1" in candidate or "1.17.8-1" in candidate  # a newer one is offered
    for name in TOOLKIT:
        assert host.package(name).version == "1.17.7-1", name
    assert set(TOOLKIT) <= held(host)


def test_toolkit_repository_is_keyring_signed_and_legacy_list_gone(host):
    source = host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").content_string
    assert "URIs: http://127.0.0.1:18201" in source
    assert "Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.asc" in source
    assert "BEGIN PGP PUBLIC KEY BLOCK" in host.file("/etc/apt/keyrings/nvidia-container-toolkit.asc").content_string
    assert not host.file("/etc/apt/sources.list.d/nvidia-docker.list").exists


def test_cdi_spec_generated_for_the_installed_driver(host):
    lib = host.file("/etc/cdi/nvidia.yaml.driver").content_string.strip()
    assert lib.endswith(host.package("libnvidia-ml1").version.split("-")[0])
    assert "hostPath: " + lib in host.file("/etc/cdi/nvidia.yaml").content_string
