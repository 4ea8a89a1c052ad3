# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""A stage tag runs the stage's work, not only the include of it.

Ansible gives an include_tasks/include_role's own `tags` to the include alone: without
`apply: {tags: ...}`, `--tags container_engine` ran "Install Docker" and skipped every task it
included (found in the session of 2026-11-30: `--tags hf_model` synced nothing). Tags inherited
from a parent (an import, a block, the play) do reach included tasks, so only an include with tags
of its own needs `apply` (an include_role of a whole role is exempt: main.yml's imports tag its tasks).
--list-tasks (tests/integration/test_stage_tags.py) cannot see this: it
does not expand dynamic includes."""

import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
INCLUDES = ("ansible.builtin.include_tasks", "ansible.builtin.include_role")


def _includes(tasks):
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        for key in ("block", "rescue", "always"):
            yield from _includes(task.get(key))
        for key in INCLUDES:
            # A whole role (no tasks_from) tags its own tasks (main.yml's imports): --tags finds them.
            if key in task and not (key.endswith("include_role") and "tasks_from" not in task[key]):
                yield task, task[key]


def problems(document):
    """The includes of a task file or playbook whose own tags do not reach what they include."""
    document = document or []
    plays = [play for play in document if isinstance(play, dict) and "hosts" in play]
    task_lists = [play.get(section) for play in plays for section in ("pre_tasks", "tasks", "post_tasks")] \
        if plays else [document]
    found = []
    for tasks in task_lists:
        for task, argument in _includes(tasks):
            own = task.get("tags")
            applied = (argument.get("apply") or {}).get("tags") if isinstance(argument, dict) else None
            if own and not (applied and set(own) <= set(applied)):
                found.append("%r has tags %s but its included tasks do not get them (apply: {tags: ...})"
                             % (task.get("name"), own))
    return found


FILES = sorted((ROOT / "roles").glob("*/tasks/*.yml")) + sorted((ROOT / "playbooks").glob("**/*.yml"))


@pytest.mark.parametrize("path", FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_an_include_with_tags_applies_them_to_what_it_includes(path):
    assert problems(yaml.safe_load(path.read_text())) == []


def test_the_check_finds_an_include_without_apply():
    """The rule above can fail: the form found in five roles is reported."""
    broken = [{"name": "Install Docker", "ansible.builtin.include_tasks": "install-apt.yml",
               "tags": ["container_engine", "install"]}]
    assert problems(broken) == ["'Install Docker' has tags ['container_engine', 'install'] but its included tasks "
                                "do not get them (apply: {tags: ...})"]
    fixed = [dict(broken[0], **{"ansible.builtin.include_tasks": {
        "file": "install-apt.yml", "apply": {"tags": ["container_engine", "install"]}}})]
    assert problems(fixed) == []
