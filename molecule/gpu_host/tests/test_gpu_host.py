"""Real state of the converged GPU host instance (Debian 12, no GPU).

The repositories are the fixtures of tests/fixtures/apt_repo: the CUDA stand-in offers the
driver at 590.48.01-1 and newer 610.43.02-1 and 615.71.09-1 (converge.yml installs 590,
side_effect.yml changes the branch to 610), the libnvidia-container stand-in the toolkit
at 1.17.7-1 and a newer 1.17.8-1 (molecule.yml). The exact versions below are those the
role must choose against those newer ones.
"""
import json

TOOLKIT = ["nvidia-container-toolkit", "nvidia-container-toolkit-base",
           "libnvidia-container-tools", "libnvidia-container1"]
TOOLKIT_VERSION = "1.17.7-1"       # nvidia_container_toolkit_version
TOOLKIT_NEWEST = "1.17.8-1"
# The role's default path on Debian 12 (cuda_repo, proprietary) converged on branch 590 (A), then
# side_effect.yml moved it to branch 610 (B): what is checked here is the host after the move.
BRANCH_PIN = "nvidia-driver-pinning-610"
OLD_BRANCH_PIN = "nvidia-driver-pinning-590"
DRIVER = "cuda-drivers"
OLD_DRIVER_VERSION = "590.48.01-1"  # branch A, where converge.yml put it
DRIVER_VERSION = "610.43.02-1"     # the newest of branch 610 in the repository
DRIVER_NEWEST = "615.71.09-1"      # newer, outside the branch: the pin must keep it out
# What cuda-drivers pulls in at its own version (the fixture's dependencies).
DRIVER_DEPENDENCIES = ["libnvidia-ml1", "nvidia-persistenced"]


def held(host):
    return set(host.check_output("apt-mark showhold").split())


def versions_offered(host, name):
    return set(host.check_output("apt-cache madison %s | awk -F'|' '{print $2}'", name).split())


def installed_version(host, name):
    """dpkg's own record: the version installed, or None (testinfra's .version would raise)."""
    out = host.run("dpkg-query -W -f='${db:Status-Status} ${Version}' %s", name).stdout.split()
    return out[1] if out[:1] == ["installed"] else None


def test_repository_offers_a_driver_newer_than_the_branch(host):
    # The precondition that makes the next tests mean something: A, B and a newer one are offered.
    assert {OLD_DRIVER_VERSION, DRIVER_VERSION, DRIVER_NEWEST} <= versions_offered(host, DRIVER)


def test_branch_pinning_package_installed_held_and_pins_610(host):
    assert installed_version(host, BRANCH_PIN) is not None
    assert BRANCH_PIN in held(host)
    assert installed_version(host, "nvidia-driver-pinning-615") is None
    assert "Pin: version 610.*" in host.file("/etc/apt/preferences.d/" + BRANCH_PIN).content_string


def test_nothing_of_branch_590_remains(host):
    # Purged, not only removed: dpkg has no record of it, its preferences file (a conffile) is gone.
    status = host.run("dpkg-query -W -f='${db:Status-Status}' %s", OLD_BRANCH_PIN)
    assert status.rc != 0 or status.stdout.strip() in ("", "not-installed"), status.stdout
    assert not host.file("/etc/apt/preferences.d/" + OLD_BRANCH_PIN).exists
    assert OLD_BRANCH_PIN not in held(host)
    installed = host.check_output("dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\\n'").splitlines()
    assert [line for line in installed if line.startswith("installed ") and " 590." in line] == []


def test_only_branch_610_is_held(host):
    driver_holds = {name for name in held(host) if name.startswith(("nvidia-driver-pinning-", "cuda-drivers", "nvidia-open"))}
    assert driver_holds == {BRANCH_PIN, DRIVER}


def test_driver_installed_from_the_pinned_branch_and_held(host):
    assert installed_version(host, DRIVER) == DRIVER_VERSION
    for name in DRIVER_DEPENDENCIES:
        assert installed_version(host, name) == DRIVER_VERSION, name
    assert DRIVER in held(host)


def test_driver_repository_is_keyring_signed(host):
    source = host.file("/etc/apt/sources.list.d/nvidia-cuda.sources").content_string
    assert "URIs: http://127.0.0.1:18201/cuda" in source
    assert "Signed-By: /etc/apt/keyrings/nvidia-cuda.asc" in source
    assert "BEGIN PGP PUBLIC KEY BLOCK" in host.file("/etc/apt/keyrings/nvidia-cuda.asc").content_string


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
    assert {TOOLKIT_VERSION, TOOLKIT_NEWEST} <= versions_offered(host, "nvidia-container-toolkit")
    for name in TOOLKIT:
        assert installed_version(host, name) == TOOLKIT_VERSION, name
    assert set(TOOLKIT) <= held(host)


def test_toolkit_repository_is_keyring_signed_and_legacy_list_gone(host):
    source = host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").content_string
    assert "URIs: http://127.0.0.1:18201/libnvidia-container" in source
    assert "Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.asc" in source
    assert "BEGIN PGP PUBLIC KEY BLOCK" in host.file("/etc/apt/keyrings/nvidia-container-toolkit.asc").content_string
    assert not host.file("/etc/apt/sources.list.d/nvidia-docker.list").exists


def test_cdi_spec_generated_for_the_installed_driver(host):
    lib = host.file("/etc/cdi/nvidia.yaml.driver").content_string.strip()
    assert lib.endswith("/libnvidia-ml.so." + DRIVER_VERSION.split("-", maxsplit=1)[0])
    assert "hostPath: " + lib in host.file("/etc/cdi/nvidia.yaml").content_string
