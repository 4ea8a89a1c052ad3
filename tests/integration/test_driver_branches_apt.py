# SPDX-License-Identifier: Apache-2.0
"""Every cuda_repo branch of nvidia_driver's apt matrices resolves on the CUDA repository fixture.

The fixture (tests/fixtures/apt_repo, built here with the versions molecule/gpu_host serves:
590, 610 and 615) is resolved by the real apt of this machine, in a private apt tree (its own
sources, lists, preferences and an empty dpkg status: the machine's apt is not touched). For each
branch and kernel-module flavour of roles/nvidia_driver/vars/{Debian-12,Ubuntu-22,Ubuntu-24}.yml,
as the role's install-apt.yml does: the branch's pinning package's preferences file is in place
(what installing it does), then the pinned packages are installed in simulation. The driver must
come from that branch although newer branches are offered, and must bring the driver's libraries
(on 615 NVIDIA's cuda-drivers installs nothing: a proprietary 615 entry would install no driver).
"""
import os
import re
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILDER = os.path.join(ROOT, "tests", "fixtures", "apt_repo", "build_repo.py")
GPU_HOST = os.path.join(ROOT, "molecule", "gpu_host", "molecule.yml")
APT_OSES = ["Debian-12", "Ubuntu-22", "Ubuntu-24"]


def _fixture_versions():
    with open(GPU_HOST, encoding="utf-8") as handle:
        scenario = yaml.safe_load(handle)
    return scenario["provisioner"]["inventory"]["group_vars"]["all"]["fixture_driver_versions"]


def _cases():
    for os_vars in APT_OSES:
        with open(os.path.join(ROOT, "roles", "nvidia_driver", "vars", os_vars + ".yml"), encoding="utf-8") as handle:
            branches = yaml.safe_load(handle)["_nvidia_driver_os"]["sources"]["cuda_repo"]["branches"]
        for branch, flavours in branches.items():
            for flavour, packages in flavours.items():
                if packages.get("branch_pin"):          # the branches of the pinning-package scheme
                    yield pytest.param(branch, packages, id="%s-%s-%s" % (os_vars, branch, flavour))


@pytest.fixture(scope="module")
def apt_tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("apt")
    repo = base / "repo"
    subprocess.run([sys.executable, BUILDER, "cuda", str(repo)] + _fixture_versions(), check=True,
                   capture_output=True)
    for sub in ("lists/partial", "cache/archives/partial", "preferences.d", "log"):
        (base / sub).mkdir(parents=True)
    (base / "status").write_text("")
    (base / "sources.list").write_text("deb [trusted=yes] file:%s ./\n" % repo)
    options = ["-o", "Dir::State::Lists=%s" % (base / "lists"), "-o", "Dir::State::status=%s" % (base / "status"),
               "-o", "Dir::Cache=%s" % (base / "cache"), "-o", "Dir::Etc::SourceList=%s" % (base / "sources.list"),
               "-o", "Dir::Etc::SourceParts=/nonexistent", "-o", "Dir::Etc::Preferences=/nonexistent",
               "-o", "Dir::Etc::PreferencesParts=%s" % (base / "preferences.d"), "-o", "Dir::Log=%s" % (base / "log"),
               "-o", "APT::Architecture=amd64", "-o", "APT::Get::List-Cleanup=false"]
    subprocess.run(["apt-get"] + options + ["update"], check=True, capture_output=True)
    return base, repo, options


def _install_pin(base, repo, name):
    """What installing the pinning package does: its preferences file in preferences.d."""
    for old in (base / "preferences.d").iterdir():
        old.unlink()
    deb = next(path for path in repo.iterdir() if path.name.startswith(name + "_"))
    unpacked = base / ("unpacked-" + name)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    source = unpacked / "etc" / "apt" / "preferences.d" / name
    (base / "preferences.d" / name).write_text(source.read_text())


def test_the_fixture_offers_every_branch_the_matrices_name(apt_tree):
    base, _repo, options = apt_tree
    offered = subprocess.run(["apt-cache"] + options + ["pkgnames"], check=True, capture_output=True, text=True)
    names = set(offered.stdout.split())
    for branch, packages in (case.values for case in _cases()):
        assert set(packages["branch_pin"] + packages["pinned"]) <= names, branch


@pytest.mark.parametrize("branch,packages", list(_cases()))
def test_each_branch_installs_a_driver_of_that_branch(apt_tree, branch, packages):
    base, repo, options = apt_tree
    for pin in packages["branch_pin"]:
        _install_pin(base, repo, pin)
    result = subprocess.run(["apt-get"] + options + ["-s", "install", "--no-install-recommends"] + packages["pinned"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    installed = dict(re.findall(r"^Inst (\S+) \((\S+)", result.stdout, re.MULTILINE))
    assert "libnvidia-ml1" in installed, "%s installs no driver:\n%s" % (packages["pinned"], result.stdout)
    assert all(version.startswith(branch + ".") for version in installed.values()), installed
