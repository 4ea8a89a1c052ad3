"""The collection builds into a tarball that installs and runs by FQCN."""
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent


def run(args, cwd, env=None):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    run([BIN / "ansible-galaxy", "collection", "build", "--output-path", str(out), str(REPO)], cwd=REPO)
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    tarball = out / f"onprem-triton-{version}.tar.gz"
    assert tarball.is_file()
    collections = tmp_path_factory.mktemp("collections")
    # --no-deps: the community collections come from the 'ansible' package, and
    # Galaxy is not reachable from these machines.
    # --force: the checkout itself may be on ANSIBLE_COLLECTIONS_PATH (tests/run.sh), and
    # ansible-galaxy would then call the collection installed already.
    run([BIN / "ansible-galaxy", "collection", "install", "--no-deps", "--force", "-p", str(collections), str(tarball)], cwd=out)
    return collections, tarball


def test_tarball_leaves_out_development_files(installed):
    collections = installed[0]
    root = collections / "ansible_collections" / "onprem" / "triton"
    assert (root / "MANIFEST.json").is_file()
    assert (root / "playbooks" / "site.yml").is_file()
    for unwanted in (".venv", ".ansible", ".ci", ".git"):
        assert not (root / unwanted).exists(), unwanted


def test_installed_collection_runs_by_fqcn(installed, tmp_path):
    collections = installed[0]
    # An empty config: nothing from the checkout's ansible.cfg (ansible-core 2.19 refuses /dev/null).
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_CONFIG=str(config))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  children:\n    triton_servers:\n      hosts:\n        node-1:\n")
    listing = run([BIN / "ansible-playbook", "onprem.triton.site", "-i", str(inventory), "--list-tasks"], cwd=tmp_path, env=env)
    for stage in ("NVIDIA driver", "Container engine", "Model weights", "Triton server"):
        assert stage in listing, listing
    roles = run([BIN / "ansible-doc", "-t", "role", "-l", "onprem.triton"], cwd=tmp_path, env=env)
    for role in ("nvidia_driver", "container_engine", "hf_model", "model_repository", "triton_server"):
        assert f"onprem.triton.{role}" in roles, roles


def test_installed_collection_reads_its_release_table(installed, tmp_path):
    """The lookup finds the release table inside the installed collection (not the checkout)."""
    collections = installed[0]
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_CONFIG=str(config))
    out = run([BIN / "ansible", "localhost", "-m", "ansible.builtin.debug", "-a",
               "msg={{ lookup('onprem.triton.triton_releases') | onprem.triton.triton_release_image("
               "lookup('onprem.triton.triton_releases').default, 'trtllm') }}"], cwd=tmp_path, env=env)
    assert '"msg": "25.12-trtllm-python-py3"' in out, out
    assert (collections / "ansible_collections" / "onprem" / "triton" / "roles" / "_common" / "vars"
            / "triton_releases.yml").is_file()


def _pins(lines):
    """{distribution name: pinned version} of requirement lines ('name[extras]==version')."""
    pins = {}
    for line in lines:
        requirement, separator, version = line.split("#")[0].partition("==")
        if separator:
            pins[requirement.split("[")[0].strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_execution_environment_definition_makes_a_build_context(installed, tmp_path):
    """ansible-builder accepts meta/execution-environment.yml and lays out what AWX/AAP builds.

    `ansible-builder build` itself needs the base image from quay.io and Ansible Galaxy,
    which these machines cannot reach; `create` validates the definition against the
    builder's schema and writes the build context that `build` would hand to the engine.
    """
    tarball = installed[1]
    # The definition's layout: meta/execution-environment.yml beside the tarball's folder.
    (tmp_path / "meta").mkdir()
    definition = tmp_path / "meta" / "execution-environment.yml"
    definition.write_text((REPO / "meta" / "execution-environment.yml").read_text())
    (tmp_path / tarball.name).write_bytes(tarball.read_bytes())
    context = tmp_path / "context"
    run([BIN / "ansible-builder", "create", "-f", str(definition), "--context", str(context)], cwd=tmp_path)

    assert (context / "_build" / "collection" / tarball.name).is_file()
    containerfile = next(context.glob("[CD]*file")).read_text()
    install = [line for line in containerfile.splitlines() if "ansible-galaxy collection install --no-deps /tmp/collection/onprem-triton-" in line]
    assert len(install) == 1, containerfile
    # In the final stage, before it drops to the unprivileged user.
    assert containerfile.rindex("FROM ") < containerfile.index(install[0]) < containerfile.rindex("USER "), containerfile

    # What the modules import runs in the EE with the versions the tests ran with.
    tested = _pins((REPO / "requirements.txt").read_text().splitlines())
    image = _pins((context / "_build" / "requirements.txt").read_text().splitlines())
    assert {"huggingface-hub", "tritonclient", "protobuf"} <= set(image), image
    for name, version in image.items():
        assert name in tested, f"{name}=={version}: not in requirements.txt"
        assert version == tested[name], (name, version, tested[name])
    spec = yaml.safe_load(definition.read_text())
    assert spec["dependencies"]["ansible_core"]["package_pip"] == "ansible-core==" + tested["ansible-core"]
    assert "rsync" in (context / "_build" / "bindep.txt").read_text()
