# SPDX-License-Identifier: Apache-2.0
"""nvidia_driver's parsing expressions, templated by Ansible exactly as the task files write them.

- kernel_module.yml reads the loaded module's version from /proc/driver/nvidia/version: checked on
  the line recorded on the real H100 and H200 machines (tests/fixtures/nvidia/*/env.txt). Its
  regular expression once had doubled backslashes, literal in a folded Jinja string: it matched
  nothing, so a GPU host always looked as if a reboot were pending.
- install-dnf.yml reads the enabled stream of the nvidia-driver module (a branch change switches
  it) from `dnf module list --enabled` output, and the wanted stream from the matrix entry.
"""
import os

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TASKS = os.path.join(ROOT, "roles", "nvidia_driver", "tasks")


def _set_fact(task_file, task_name, fact):
    with open(os.path.join(TASKS, task_file), encoding="utf-8") as handle:
        tasks = yaml.safe_load(handle)
    task = next(t for t in tasks if t.get("name") == task_name)
    return task["ansible.builtin.set_fact"][fact]


def _template(expression, **variables):
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(expression))


def _recorded_nvrm_line(machine):
    with open(os.path.join(ROOT, "tests", "fixtures", "nvidia", machine, "env.txt"), encoding="utf-8") as handle:
        return next(line for line in handle if line.startswith("NVRM version:"))


@pytest.mark.parametrize("text,version", [
    (_recorded_nvrm_line("h100"), "580.159.04"),
    (_recorded_nvrm_line("h200x2"), "580.159.04"),
    # The proprietary modules' line (no "for <arch>").
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  590.48.01  Mon Dec  1 2025\n", "590.48.01"),
    ("", ""),
])
def test_the_loaded_module_version_is_read(text, version):
    expression = _set_fact("kernel_module.yml", "Compare the loaded and the installed module", "__nvidia_driver_loaded_version")
    assert _template(expression, __nvidia_driver_loaded_text=text).strip() == version


DNF_ENABLED = """\
Name          Stream       Profiles         Summary
nvidia-driver 590-dkms [e] default [i], fm  Nvidia driver for 590-dkms branch

Hint: [d]efault, [e]nabled, [x]disabled, [i]nstalled
"""


@pytest.mark.parametrize("stdout,stream", [(DNF_ENABLED, "590-dkms"), ("", "")])
def test_the_enabled_stream_is_read(stdout, stream):
    expression = _set_fact("install-dnf.yml", "Decide whether the stream changes", "__nvidia_driver_stream_from")
    assert _template(expression, __nvidia_driver_enabled_stream_raw={"stdout": stdout}).strip() == stream


def test_the_wanted_stream_is_read_from_the_matrix_entry():
    expression = _set_fact("install-dnf.yml", "Decide whether the stream changes", "__nvidia_driver_stream_to")
    assert _template(expression, __nvidia_driver_pinned=["@nvidia-driver:610-open"]).strip() == "610-open"
    assert _template(expression, __nvidia_driver_pinned=["cuda-drivers"]).strip() == ""
