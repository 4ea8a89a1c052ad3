"""Every stage tag CONTRIBUTING advertises keeps a host safe when run alone.

For each tag (`<role>`, `<role>_install`, `<role>_configure`, `install`, `configure`, and the
plays' own tags) `ansible-playbook site.yml --list-tasks --tags TAG` must show, for every role
that has work under that tag, its preflight first; and whenever a task that can restart the
Triton server is selected (a new image, unit or env file), the generation gate is selected too
(its rescue, the rollback, is checked in service.yml: --list-tasks does not show rescues). The task lists are Ansible's own, read from the real playbook.
"""
import functools
import os
import re
import subprocess

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ROLES = ["nvidia_driver", "container_engine", "nvidia_container_toolkit", "hf_model", "model_repository",
         "triton_server"]
TAGS = sorted({t for role in ROLES for t in (role, role + "_install", role + "_configure")}
              | {"install", "configure", "driver", "container", "models", "serve"})
GATE = "Wait until every model is ready and generates"
ROLLBACK = "Roll back to the last configuration that passed the gate"
LINE = re.compile(r"^\s{6}(?:onprem\.triton\.(?P<role>\w+) : )?(?P<name>.+?)\tTAGS: \[")


def _task_names(role, filename):
    """Top-level and block task names of roles/<role>/tasks/<filename>."""
    with open(os.path.join(ROOT, "roles", role, "tasks", filename)) as handle:
        tasks = yaml.safe_load(handle) or []
    names = []
    for task in tasks:
        names.append(task.get("name", ""))
        for key in ("block", "rescue", "always"):
            names.extend(inner.get("name", "") for inner in task.get(key, []))
    return names


@functools.lru_cache(maxsize=None)
def list_tasks(tag):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"),
               ANSIBLE_NOCOLOR="1")
    result = subprocess.run(["ansible-playbook", "site.yml", "-i", "inventories/sandbox", "--list-tasks",
                             "--tags", tag], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                            check=True)
    tasks = []
    for line in result.stdout.splitlines():
        match = LINE.match(line)
        if match and not match.group("name").startswith("Validating arguments against arg spec"):
            tasks.append((match.group("role") or "", match.group("name")))
    return tuple(tasks)


def _preflight_names(role):
    return {name for name in _task_names(role, "preflight.yml") if name}


@pytest.mark.parametrize("tag", TAGS)
def test_a_stage_tag_runs_preflight_before_any_work(tag):
    tasks = list_tasks(tag)
    for role in ROLES:
        preflight = _preflight_names(role)
        positions = [i for i, (owner, _name) in enumerate(tasks) if owner == role]
        work = [i for i in positions if tasks[i][1] not in preflight]
        if not work:
            continue
        checks = [i for i in positions if tasks[i][1] in preflight]
        assert checks, "--tags %s runs %s tasks without its preflight: %s" % (
            tag, role, [tasks[i][1] for i in work][:5])
        assert min(checks) < min(work), "--tags %s runs %r before %s's preflight" % (tag, tasks[min(work)][1], role)


@pytest.mark.parametrize("tag", TAGS)
def test_no_tag_restarts_the_server_without_the_gate_and_rollback(tag):
    tasks = list_tasks(tag)
    restarting = set(_task_names("triton_server", "configure.yml")) | set(_task_names("triton_server", "image.yml"))
    selected = [name for owner, name in tasks if owner == "triton_server" and name in restarting]
    names = [name for owner, name in tasks if owner == "triton_server"]
    if selected:
        assert GATE in names, (
            "--tags %s selects %s (which can restart the server) without the gate and rollback" % (tag, selected))


def test_the_gate_rolls_back_when_it_fails():
    """--list-tasks does not show rescue sections: the rollback is read from service.yml itself."""
    with open(os.path.join(ROOT, "roles", "triton_server", "tasks", "service.yml")) as handle:
        blocks = [task for task in yaml.safe_load(handle) if "block" in task]
    gate_block = [b for b in blocks if GATE in [t.get("name") for t in b["block"]]]
    assert gate_block and ROLLBACK in [t.get("name") for t in gate_block[0].get("rescue", [])]


def test_the_listing_sees_the_gate():
    """The parser reads the real listing: the full run selects the gate and every preflight."""
    names = [name for _owner, name in list_tasks("all")]
    assert GATE in names
    for role in ROLES:
        assert _preflight_names(role) & set(names), role
