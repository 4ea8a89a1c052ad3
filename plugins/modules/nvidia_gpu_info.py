#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nvidia_gpu_info
short_description: Gather NVIDIA GPU facts from NVML or nvidia-smi
version_added: 0.1.0
description:
  - Reads the NVIDIA GPUs of the host through NVML (the C{nvidia-ml-py} package, imported as C{pynvml})
    when it can be imported and initialised, otherwise through
    C{nvidia-smi --query-gpu=... --format=csv,noheader,nounits}.
  - Returns the facts as the host fact C(nvidia_gpu_info) for later roles (count, per-GPU name, memory,
    compute capability, MIG mode, driver and CUDA versions).
  - On a host without a GPU or without a working driver it does not fail; it returns C(count=0) and a
    C(reason) saying why, so that a role can decide what to do.
options:
  backend:
    description:
      - Where the facts come from. V(auto) tries NVML first, then C(nvidia-smi).
    type: str
    choices: [auto, nvml, nvidia-smi]
    default: auto
  nvidia_smi_path:
    description:
      - Path of the C(nvidia-smi) binary. Searched on E(PATH), C(/usr/bin) and C(/usr/local/nvidia/bin)
        when not given.
    type: path
requirements:
  - nvidia-ml-py (optional; without it C(nvidia-smi) is used)
extends_documentation_fragment:
  - onprem.triton.read_only
attributes:
  facts:
    support: full
    description: Sets the host fact C(nvidia_gpu_info).
author:
  - onprem.triton contributors (@onprem-triton)
notes:
  - MIG states are normalised to V(enabled), V(disabled) or V(unsupported) (GPUs without MIG).
  - C(memory_total_mib) is the total framebuffer memory in MiB as the driver reports it.
"""

EXAMPLES = r"""
- name: Gather GPU facts
  onprem.triton.nvidia_gpu_info:

- name: Stop when the host has no usable GPU
  ansible.builtin.assert:
    that: nvidia_gpu_info.count > 0
    fail_msg: "No usable NVIDIA GPU: {{ nvidia_gpu_info.reason }}"

- name: Force nvidia-smi (for example to compare with NVML)
  onprem.triton.nvidia_gpu_info:
    backend: nvidia-smi
  register: smi_facts
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: always
  type: complex
  contains:
    nvidia_gpu_info:
      description: Same content as the top-level keys below.
      returned: always
      type: dict
count:
  description: Number of GPUs found; 0 on a host without a usable GPU or driver.
  returned: always
  type: int
  sample: 1
gpus:
  description: One entry per GPU, ordered by index.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: The GPU's index as NVML / nvidia-smi number it.
      type: int
      sample: 0
    uuid:
      description: The GPU's UUID.
      type: str
      sample: GPU-3f0a4a5c-8f5e-1d2b-7c4e-0a1b2c3d4e5f
    name:
      description: Product name.
      type: str
      sample: NVIDIA H100 80GB HBM3
    memory_total_mib:
      description: Total GPU memory in MiB.
      type: int
      sample: 81559
    compute_capability:
      description: CUDA compute capability as C(major.minor).
      type: str
      sample: "9.0"
    mig_mode:
      description: Current MIG mode.
      type: str
      choices: [enabled, disabled, unsupported]
      sample: disabled
    pci_bus_id:
      description: PCI bus id of the GPU.
      type: str
      sample: "00000000:00:07.0"
  sample:
    - index: 0
      uuid: GPU-3f0a4a5c-8f5e-1d2b-7c4e-0a1b2c3d4e5f
      name: NVIDIA H100 80GB HBM3
      memory_total_mib: 81559
      compute_capability: "9.0"
      mig_mode: disabled
      pci_bus_id: "00000000:00:07.0"
driver_version:
  description: The loaded driver's version; null when no driver answered.
  returned: always
  type: str
  sample: "580.159.04"
cuda_version:
  description: The highest CUDA version the driver supports; null when unknown.
  returned: always
  type: str
  sample: "13.0"
source:
  description: Where the facts came from.
  returned: always
  type: str
  choices: [nvml, nvidia-smi, none]
  sample: nvml
reason:
  description: Why no GPU was found (only set when C(count) is 0).
  returned: always
  type: str
  sample: "nvidia-smi not found and NVML unavailable (No module named 'pynvml')"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text

from ansible_collections.onprem.triton.plugins.module_utils.nvidia import (
    SMI_QUERY_FIELDS,
    NvidiaParseError,
    cuda_version_from_int,
    normalise_mig_mode,
    parse_cuda_version,
    parse_query_csv,
)

try:
    import pynvml  # provided by nvidia-ml-py
    HAS_PYNVML = True
    PYNVML_IMPORT_ERROR = None
except ImportError as import_error:  # no GPU stack on this host; nvidia-smi is the fallback
    pynvml = None
    HAS_PYNVML = False
    PYNVML_IMPORT_ERROR = import_error

_SMI_DIRS = ["/usr/bin", "/usr/local/nvidia/bin", "/usr/local/bin"]


class GpuUnavailable(Exception):
    """No GPU facts from this backend; the message says why."""


class NvidiaGpuInfo:
    def __init__(self, module):
        self.module = module

    @staticmethod
    def _empty(reason):
        return {"count": 0, "gpus": [], "driver_version": None, "cuda_version": None, "source": "none",
                "reason": reason}

    def from_nvml(self):
        if not HAS_PYNVML:
            raise GpuUnavailable("NVML unavailable (%s)" % to_text(PYNVML_IMPORT_ERROR))
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise GpuUnavailable("NVML could not initialise: %s" % to_text(exc))
        try:
            driver = to_text(pynvml.nvmlSystemGetDriverVersion())
            cuda = cuda_version_from_int(pynvml.nvmlSystemGetCudaDriverVersion())
            gpus = [self._nvml_gpu(index) for index in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError as exc:
            raise GpuUnavailable("NVML query failed: %s" % to_text(exc))
        finally:
            pynvml.nvmlShutdown()
        return {"count": len(gpus), "gpus": gpus, "driver_version": driver, "cuda_version": cuda,
                "source": "nvml", "reason": "" if gpus else "NVML reports no GPU"}

    @staticmethod
    def _nvml_gpu(index):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        try:
            mig_current = pynvml.nvmlDeviceGetMigMode(handle)[0]
        except pynvml.NVMLError:
            # GPUs without MIG answer NotSupported.
            mig_current = None
        return {
            "index": index,
            "uuid": to_text(pynvml.nvmlDeviceGetUUID(handle)),
            "name": to_text(pynvml.nvmlDeviceGetName(handle)),
            "memory_total_mib": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)),
            "compute_capability": "%d.%d" % (major, minor),
            "mig_mode": normalise_mig_mode(mig_current),
            "pci_bus_id": to_text(pynvml.nvmlDeviceGetPciInfo(handle).busId),
        }

    def _smi_path(self):
        path = self.module.params["nvidia_smi_path"]
        if path:
            return path
        path = self.module.get_bin_path("nvidia-smi", opt_dirs=_SMI_DIRS)
        if not path:
            raise GpuUnavailable("nvidia-smi not found (no NVIDIA driver installed?)")
        return path

    def from_smi(self):
        smi = self._smi_path()
        rc, out, err = self.module.run_command(
            [smi, "--query-gpu=%s" % ",".join(SMI_QUERY_FIELDS), "--format=csv,noheader,nounits"])
        if rc != 0:
            message = (err or out).strip().splitlines()
            raise GpuUnavailable("nvidia-smi exited %d: %s" % (rc, message[0] if message else "no output"))
        try:
            gpus, driver = parse_query_csv(out)
        except NvidiaParseError as exc:
            self.module.fail_json(msg="Could not parse nvidia-smi output: %s" % to_text(exc), stdout=out)
        return {"count": len(gpus), "gpus": gpus, "driver_version": driver, "cuda_version": self._smi_cuda(smi),
                "source": "nvidia-smi", "reason": "" if gpus else "nvidia-smi lists no GPU"}

    def _smi_cuda(self, smi):
        # Newer drivers print it in --version; older ones only in the -q report.
        for args in ([smi, "--version"], [smi, "-q"]):
            rc, out, dummy = self.module.run_command(args)
            version = parse_cuda_version(out) if rc == 0 else None
            if version:
                return version
        return None

    def gather(self):
        backend = self.module.params["backend"]
        attempts = {"auto": (self.from_nvml, self.from_smi), "nvml": (self.from_nvml,),
                    "nvidia-smi": (self.from_smi,)}[backend]
        reasons = []
        for attempt in attempts:
            try:
                return attempt()
            except GpuUnavailable as exc:
                reasons.append(to_text(exc))
        return self._empty("; ".join(reasons))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend=dict(type="str", default="auto", choices=["auto", "nvml", "nvidia-smi"]),
            nvidia_smi_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    facts = NvidiaGpuInfo(module).gather()
    module.exit_json(changed=False, ansible_facts={"nvidia_gpu_info": facts}, **facts)


if __name__ == "__main__":
    main()
