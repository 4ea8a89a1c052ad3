# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors
"""Filter triton_log_cause: why did a Triton server not bring its models up?"""

from __future__ import annotations

import re

DOCUMENTATION = r"""
name: triton_log_cause
short_description: Explain from a Triton server log why its models are not ready
version_added: "0.1.0"
description:
  - Reads the output of a C(tritonserver) run (container log or journal) and returns the last
    model status table, the first error line and a classified cause with a hint, so a failed
    readiness gate can say why instead of timing out.
  - "The last status table wins (a restarted server logs one per start); the first error is the
    first C(failed to load) line, else the first line that looks like an error: C(error: creating server),
    an C(E) log line, C(ERROR:) of the container banner, docker's own errors, or the exception line that
    ends a Python traceback (a launcher or frontend that fails at start)."
  - Causes, in the order tried on the failing models' reasons then on the error lines -
    C(hf_unauthorized), C(hf_offline), C(cuda_oom), C(driver_too_old), C(shm_too_small),
    C(wrong_backend), C(gpu_runtime_missing), C(ulimit_denied), C(image_missing), C(model_not_found), C(bad_config);
    otherwise C(unknown).
positional: _input
options:
  _input:
    description: The log text.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Explain a failed start
  ansible.builtin.debug:
    msg: "{{ (journal.stdout | onprem.triton.triton_log_cause).summary }}"
"""

RETURN = r"""
_value:
  description: The diagnosis.
  type: dict
  contains:
    models:
      description: Rows of the last model status table (name, version, status, reason).
      type: list
      elements: dict
    failed_models:
      description: Names of the models whose status is not READY.
      type: list
      elements: str
    first_error:
      description: The first error line, empty when none was found.
      type: str
    cause:
      description: The classified cause (see the description), C(unknown) or C(none).
      type: str
    hint:
      description: What to do about the cause.
      type: str
    summary:
      description: One line for a failure message.
      type: str
"""

# (cause, pattern, hint). Order matters: the first match wins, so specific
# causes come before the generic "bad config" patterns they may also match.
_CAUSES = (
    ("hf_unauthorized",
     r"401 Client Error|\b401\b.*Unauthorized|GatedRepoError|Access to model .* is restricted|"
     r"Invalid user token|Cannot access gated repo|JSONDecodeError",
     "the Hugging Face Hub refused the download: set a token that accepted the model's licence "
     "(hf_token, in the env file) or sync the weights with the hf_model role and serve them offline"),
    ("hf_offline",
     r"LocalEntryNotFoundError|HF_HUB_OFFLINE|outgoing traffic has been disabled|"
     r"Cannot find the requested files in the (?:disk|local) cache|couldn't connect to 'https://huggingface.co'",
     "the server runs offline but the weights are not on local disk: check that model.json points at the "
     "synced folder under hf_model_dir (mounted at the same path)"),
    ("cuda_oom",
     r"CUDA out of memory|OutOfMemoryError|out of memory|No available memory for the cache blocks|"
     r"cudaErrorMemoryAllocation|cudaMallocAsync",
     "the GPU ran out of memory: lower gpu_memory_utilization / max_model_len (vLLM) or the KV-cache "
     "fraction (TensorRT-LLM), free the GPU from other processes, or add GPUs (tensor_parallel_size)"),
    ("driver_too_old",
     r"driver version is insufficient|NVIDIA driver on your system is too old|"
     r"forward compatibility was attempted on non supported HW|Driver/library version mismatch|"
     r"CUDA_ERROR_SYSTEM_DRIVER_MISMATCH|unsatisfied condition: cuda>=|was built for NVIDIA Driver Release",
     "the NVIDIA driver is older than the container's CUDA needs: upgrade the driver (nvidia_driver role) "
     "or pin an older Triton release"),
    ("shm_too_small",
     r"Unable to initialize shared memory key|shared memory.*(?:No space left|too small)",
     "the container's /dev/shm is too small: raise triton_server_shm_size"),
    ("wrong_backend",
     r"unable to find backend library for backend|unable to find '.*' backend",
     "the image does not ship this backend: pick the matching image (triton_server_backend vllm or trtllm)"),
    ("gpu_runtime_missing",
     r"could not select device driver|unresolvable CDI devices|unknown or invalid runtime name: nvidia|"
     r"nvidia-container-cli: initialization error",
     "docker cannot give the container GPUs: run the nvidia_container_toolkit role (CDI spec or runtime), "
     "or check triton_server_gpu_mode"),
    ("ulimit_denied",
     r"error setting rlimits?",
     "docker may not raise the container's limits (--ulimit memlock=-1 needs CAP_SYS_RESOURCE for dockerd): "
     "fix the host or adjust triton_server_ulimits"),
    ("image_missing",
     r"Unable to find image|pull access denied|manifest unknown|No such image|unauthorized: authentication required",
     "the image is neither local nor pullable: check the tag/digest, the registry login or the air-gapped tarball"),
    ("model_not_found",
     r"failed to stat file|not found in model repository|no version is available|failed to find '.*' in repository",
     "the model is not in the repository the server reads: check model_repository_load_models and the mount"),
    ("bad_config",
     r"max_batch_size|decoupled|unexpected keyword argument|failed to parse|Invalid argument|config\.pbtxt|"
     r"model\.json|auto-complete|Streaming is only supported|unable to load model config|TypeError|ValueError",
     "the model configuration is invalid: fix config.pbtxt / model.json of the model named above"),
)

_TABLE_HEADER = re.compile(r"^\|\s*Model\s*\|\s*Version\s*\|\s*Status\s*\|\s*$")
_TABLE_ROW = re.compile(r"^\|(?P<name>[^|]*)\|(?P<version>[^|]*)\|(?P<status>.*)\|\s*$")
_TABLE_RULE = re.compile(r"^\+[-+]+\+\s*$")
_FAILED_LOAD = re.compile(r"failed to load '[^']+' version")
_GENERIC_ERROR = re.compile(
    r"^error: creating server:|^E\d{4} |^docker: |^Unable to find image|^ERROR: |^Error(?: response from daemon)?:|Traceback \(most recent call last\)")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
# `json.decoder.JSONDecodeError: ...`, `SystemExit: ...`, `KeyboardInterrupt`: a traceback's last line.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)(?::\s.*)?$")
# tritonserver's info and warning lines; never a cause on their own.
_INFO_OR_WARNING = re.compile(r"^[IW]\d{4} ")
# Lines tritonserver logs as errors on every start without a GPU; not a cause.
# The unit's ExecStartPre removing a container that is not there is not one either.
_BENIGN_ERRORS = re.compile(r"CudaDriverHelper has not been initialized|Failed to initialize NVML$|^Error: No such container:")


def _parse_last_table(lines):
    """Rows of the last `| Model | Version | Status |` table; continuation rows
    (empty name column) extend the reason of the row above."""
    start = None
    for index, line in enumerate(lines):
        if _TABLE_HEADER.match(line.strip()):
            start = index
    if start is None:
        return []
    rows = []
    for line in lines[start + 1:]:
        line = line.strip()
        if _TABLE_RULE.match(line):
            if rows:
                break
            continue
        match = _TABLE_ROW.match(line)
        if not match:
            break
        name, version, status = (match.group(g).strip() for g in ("name", "version", "status"))
        if name:
            rows.append({"name": name, "version": version, "status": status})
        elif rows and status:
            rows[-1]["status"] += "\n" + status
    for row in rows:
        state, separator, reason = row["status"].partition(":")
        row["state"] = state.strip()
        row["reason"] = reason.strip() if separator else ""
    return rows


def _first_error(lines):
    for pattern in (_FAILED_LOAD, _GENERIC_ERROR):
        for index, line in enumerate(lines):
            if pattern.search(line) and not _BENIGN_ERRORS.search(line):
                if _TRACEBACK.search(line):
                    return _exception_of(lines[index + 1:]) or line.strip()
                return line.strip()
    return ""


def _exception_of(lines):
    """The line that ends a Python traceback (`Type: message`): what a traceback's own first line does not say."""
    for line in lines:
        if _EXCEPTION_LINE.match(line.strip()):
            return line.strip()
    return ""


def _classify(texts):
    for text in texts:
        if not text:
            continue
        for cause, pattern, hint in _CAUSES:
            if re.search(pattern, text, re.IGNORECASE if cause == "cuda_oom" else 0):
                return cause, hint
    return "unknown", "read the full log: journalctl -u triton-<name>"


def triton_log_cause(text):
    """Diagnose a tritonserver log; see DOCUMENTATION."""
    lines = (text or "").splitlines()
    models = _parse_last_table(lines)
    failed = [row for row in models if row["state"] != "READY"]
    first_error = _first_error(lines)
    if not failed and not first_error:
        return {"models": models, "failed_models": [], "first_error": "", "cause": "none",
                "hint": "", "summary": "no model failure in the log"}
    other_lines = "\n".join(line for line in lines if not _INFO_OR_WARNING.match(line))
    cause, hint = _classify([row["reason"] for row in failed] + [first_error, other_lines])
    described = "; ".join(
        "{0} v{1}: {2}".format(row["name"], row["version"], row["status"].splitlines()[0]) for row in failed)
    summary = "cause {0}: {1}".format(cause, hint)
    if described:
        summary += " | models: " + described
    if first_error:
        summary += " | first error: " + first_error[:400]
    return {"models": models, "failed_models": [row["name"] for row in failed], "first_error": first_error,
            "cause": cause, "hint": hint, "summary": summary}


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self):
        return {"triton_log_cause": triton_log_cause}
