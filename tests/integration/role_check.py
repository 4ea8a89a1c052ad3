# SPDX-License-Identifier: Apache-2.0
"""Runs one role of the checkout against this machine in check mode, as the preflight tests
do: a one-task play that includes the role, its variables from a JSON file (-e @file)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_role_check(tmp_path, role, hosts, variables, inventory_args, gather_facts=False, env_overrides=None,
                   tasks_from=None):
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        f"- hosts: {hosts}\n  gather_facts: {str(gather_facts).lower()}\n  tasks:\n"
        f"    - ansible.builtin.include_role:\n        name: {role}\n"
        + (f"        tasks_from: {tasks_from}\n" if tasks_from else ""), encoding="utf-8")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".ansible" / "collections"),
               ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", **(env_overrides or {}))
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "--check", *inventory_args,
         str(playbook), "-e", "@" + str(extra)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False)


def assert_refused_before_any_change(run, named):
    """The run failed, its output names the setting, and no task that changes the host ran
    (it stopped in the argument spec or the preflight asserts)."""
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert named in output, output
    # A task result line (an argument spec's descriptions echoed in a failure may contain the word).
    assert not re.search(r"^changed: ", run.stdout, re.MULTILINE), output
