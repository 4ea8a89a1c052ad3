#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: triton_model_gpus
short_description: The GPUs each Triton model really runs on, read from the driver
version_added: 0.1.0
description:
  - Asks the driver which processes hold GPU memory (C(nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory))
    and on which GPU (C(nvidia-smi --query-gpu=index,uuid)), then attributes each process to a Triton model
    through its process ancestry in C(/proc) - the process itself or an ancestor is the Python backend stub
    C(triton_python_backend_stub), whose first argument is C(<repository>/<model>/<version>/model.py)
    (python_backend C(src/stub_launcher.cc)); a vLLM engine process is a child of its model's stub.
  - Processes under no stub (the C++ backends, e.g. C(tensorrtllm), run inside C(tritonserver)) are returned
    with C(model) null.
  - The answer is what runs, not what was planned; the C(status) tasks of the triton_server role put it next
    to the plan. Read-only; on a host without C(nvidia-smi) it does not fail and says why in C(reason).
options:
  repository:
    description:
      - Keep only the models of this repository path (as the server was given it, e.g. C(/opt/triton/repository/current)).
        Empty keeps every model.
    type: str
    default: ""
  nvidia_smi_path:
    description: The C(nvidia-smi) binary; searched on E(PATH) when not given.
    type: path
  proc_root:
    description: Where the process table is mounted (for tests).
    type: path
    default: /proc
extends_documentation_fragment:
  - onprem.triton.read_only
author:
  - onprem.triton contributors (@onprem-triton)
"""

EXAMPLES = r"""
- name: Read where each model of the main instance runs
  onprem.triton.triton_model_gpus:
    repository: /opt/triton/repository/current
  register: placement

- name: Say where llama runs
  ansible.builtin.debug:
    msg: "llama runs on GPU(s) {{ placement.models.llama | default([]) }}"
"""

RETURN = r"""
available:
  description: Whether the driver answered (C(nvidia-smi) found and working).
  returned: always
  type: bool
  sample: true
reason:
  description: Why nothing could be read, empty when C(available).
  returned: always
  type: str
  sample: ""
models:
  description: Model name to the sorted indices of the GPUs its processes hold memory on.
  returned: always
  type: dict
  sample: {"chat": [0], "big": [2, 3]}
processes:
  description: Every compute process on the GPUs, with the model it belongs to (null when none).
  returned: always
  type: list
  elements: dict
  sample: [{"pid": 1122, "gpu": 0, "gpu_uuid": "GPU-b95c346c", "used_mib": 72188, "model": "chat",
            "repository": "/opt/triton/repository/current", "stub_pid": 1090}]
"""

import os

from ansible.module_utils.basic import AnsibleModule

STUB = "triton_python_backend_stub"
MAX_ANCESTORS = 64


def parse_csv(text):
    """Rows of nvidia-smi --format=csv,noheader,nounits output."""
    return [[cell.strip() for cell in line.split(",")] for line in text.splitlines() if line.strip()]


def read_cmdline(proc_root, pid):
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as handle:
            return [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
    except (IOError, OSError):
        return []


def read_ppid(proc_root, pid):
    """The parent pid from /proc/<pid>/stat (the field after the command in parentheses)."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat")) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[1])
    except (IOError, OSError, IndexError, ValueError):
        return 0


def stub_model(cmdline):
    """(repository, model) from a Python backend stub's command line, else None:
    <stub> <repository>/<model>/<version>/model.py <shm region> ..."""
    for position, part in enumerate(cmdline[:-1]):
        if os.path.basename(part) == STUB or part.endswith("/" + STUB):
            path = cmdline[position + 1]
            version_dir = os.path.dirname(path)
            model_dir = os.path.dirname(version_dir)
            return os.path.dirname(model_dir), os.path.basename(model_dir)
    return None


def owner(proc_root, pid):
    """(repository, model, stub pid) of the stub at or above pid, else (None, None, None)."""
    current = pid
    for _step in range(MAX_ANCESTORS):
        if current <= 1:
            break
        found = stub_model(read_cmdline(proc_root, current))
        if found:
            return found[0], found[1], current
        current = read_ppid(proc_root, current)
    return None, None, None


def attribute(gpu_rows, app_rows, proc_root, repository=""):
    """models {name: [gpu indices]} and processes, from the two nvidia-smi answers and /proc."""
    by_uuid = dict((row[1], int(row[0])) for row in gpu_rows if len(row) >= 2 and row[0].isdigit())
    processes, models = [], {}
    wanted = repository.rstrip("/")
    for row in app_rows:
        if len(row) < 2 or not row[0].isdigit():
            continue
        pid = int(row[0])
        repo, model, stub_pid = owner(proc_root, pid)
        if model is not None and wanted and repo.rstrip("/") != wanted:
            continue
        gpu = by_uuid.get(row[1])
        used = int(row[2]) if len(row) > 2 and row[2].isdigit() else None
        processes.append({"pid": pid, "gpu": gpu, "gpu_uuid": row[1], "used_mib": used, "model": model,
                          "repository": repo, "stub_pid": stub_pid})
        if model is not None and gpu is not None:
            models.setdefault(model, set()).add(gpu)
    return dict((name, sorted(gpus)) for name, gpus in models.items()), processes


class TritonModelGpus(object):
    def __init__(self, module):
        self.module = module

    def smi(self, binary, query):
        rc, out, err = self.module.run_command([binary, query, "--format=csv,noheader,nounits"])
        if rc != 0:
            raise RuntimeError("%s %s failed (rc %d): %s" % (binary, query, rc, (err or out).strip()))
        return parse_csv(out)

    def read(self):
        params = self.module.params
        binary = params["nvidia_smi_path"] or self.module.get_bin_path("nvidia-smi")
        result = {"available": False, "reason": "", "models": {}, "processes": []}
        if not binary:
            result["reason"] = "nvidia-smi not found: the driver cannot say where the models run"
            return result
        try:
            gpus = self.smi(binary, "--query-gpu=index,uuid")
            apps = self.smi(binary, "--query-compute-apps=pid,gpu_uuid,used_memory")
        except RuntimeError as error:
            result["reason"] = str(error)
            return result
        result["models"], result["processes"] = attribute(gpus, apps, params["proc_root"], params["repository"])
        result["available"] = True
        return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            repository=dict(type="str", default=""),
            nvidia_smi_path=dict(type="path"),
            proc_root=dict(type="path", default="/proc"),
        ),
        supports_check_mode=True,
    )
    module.exit_json(changed=False, **TritonModelGpus(module).read())


if __name__ == "__main__":
    main()
