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


def _ansible_env(**overrides):
    """This checkout's roles and collection, no colour: the environment of every run here."""
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".ansible" / "collections"),
                ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", **overrides)


def run_role_check(tmp_path, role, hosts, variables, inventory_args, gather_facts=False, env_overrides=None,
                   tasks_from=None):
    playbook = role_play(tmp_path, role, hosts, gather_facts, tasks_from)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(variables), encoding="utf-8")
    env = _ansible_env(**(env_overrides or {}))
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


class HostResult:
    """What one inventory host of a shared run got: whether it failed, whether a task reported a
    change on it, and its text (its result lines, with the strings of their JSON unescaped)."""

    def __init__(self, name):
        self.name = name
        self.failed = False
        self.changed = False
        self.lines = []

    @property
    def text(self):
        return "\n".join(self.lines)


def _strings(value):
    """The strings of a result, without the argument spec a failed validation echoes: its
    descriptions name every variable of the role, so a name found there proves nothing."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != "argument_spec_data":
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


RESULT_LINE = re.compile(r"^(ok|changed|fatal|failed|skipping|rescued|ignored): \[([^\]]+)\]")
RECAP_LINE = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)")


def split_by_host(output, hosts):
    """One ansible-playbook output (default callback, JSON results) split into each host's results."""
    results = {host: HostResult(host) for host in hosts}
    lines = output.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        match = RESULT_LINE.match(line)
        if match and match.group(2) in results:
            result = results[match.group(2)]
            result.changed |= match.group(1) == "changed"
            head, _sep, body = line.partition(" => ")
            # a result on one line, or (debug) indented over the lines up to its closing brace
            if body == "{":
                while index < len(lines) and lines[index - 1] != "}":
                    body += "\n" + lines[index]
                    index += 1
            try:
                result.lines += [head, *_strings(json.loads(body))]
            except ValueError:
                result.lines.append(line)
            continue
        match = RECAP_LINE.match(line)
        if match and match.group(1) in results:
            results[match.group(1)].failed = int(match.group(2)) + int(match.group(3)) > 0
    return results


def run_cases_as_hosts(tmp_path, playbook, cases, group="all", other_groups=None, env_overrides=None):
    """Each case (host name -> its variables) becomes a host of one inventory (connection local,
    this Python), so one ansible-playbook run --check gives every case its own result: a host's
    failure does not stop the others. Returns the run and each host's HostResult.
    Host variables rank below a role's vars/ and set_fact, where -e ranks above: a case whose
    value the role sets itself belongs in a run of its own (run_role_check)."""
    hosts = {name: dict({"ansible_connection": "local", "ansible_python_interpreter": sys.executable}, **variables)
             for name, variables in cases.items()}
    children = dict(other_groups or {})
    if group == "all":
        inventory = {"all": {"hosts": hosts, "children": children}}
    else:
        inventory = {"all": {"children": dict(children, **{group: {"hosts": hosts}})}}
    (tmp_path / "hosts.json").write_text(json.dumps(inventory), encoding="utf-8")
    env = _ansible_env(ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_FORKS=str(len(cases)), **(env_overrides or {}))
    run = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "--check", "-i", str(tmp_path / "hosts.json"),
         str(playbook)], capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    return run, split_by_host(run.stdout + run.stderr, cases)


def role_play(tmp_path, role, hosts, gather_facts=False, tasks_from=None, gather_subset=None):
    """A one-task play that includes the role (as run_role_check writes it)."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        f"- hosts: {hosts}\n  gather_facts: {str(gather_facts).lower()}\n"
        + (f"  gather_subset: {json.dumps(gather_subset)}\n" if gather_subset else "") + "  tasks:\n"
        f"    - ansible.builtin.include_role:\n        name: {role}\n"
        + (f"        tasks_from: {tasks_from}\n" if tasks_from else ""), encoding="utf-8")
    return playbook


def assert_host_refused_before_any_change(result, named, output=""):
    """As assert_refused_before_any_change, for one host of a shared run."""
    assert result.failed, (result.name, result.text[-3000:] or output[-3000:])
    assert named in result.text, (named, result.text[-3000:] or output[-3000:])
    assert not result.changed, result.text[-3000:]
