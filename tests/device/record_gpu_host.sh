#!/usr/bin/env bash
# Records what a real GPU machine reports, for tests/fixtures/nvidia/<name>/ (run by hand on
# such a machine, never by CI). It needs python3 with nvidia-ml-py, jinja2 and PyYAML, and the
# wheels of ansible-core and what it needs beside them in .whl/ (carried: the machine may have
# no package index), e.g. from the repository root on a machine with PyPI:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux2014_x86_64 --platform any -d .whl \
#     ansible-core==2.19.14 resolvelib==1.2.1 cryptography==46.0.3 cffi==2.0.0 pycparser==2.23
# Usage: tests/device/record_gpu_host.sh OUT_DIR [CONTAINER_TAG [TOO_NEW_CONTAINER_TAG]]
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:?usage: $0 OUT_DIR [CONTAINER_TAG [TOO_NEW_CONTAINER_TAG]]}"
tag="${2:-25.12-trtllm-python-py3}"
too_new="${3:-}"
mkdir -p "${out}"
# Into a folder on PYTHONPATH, not a venv: jinja2, PyYAML, packaging and nvidia-ml-py come from
# the machine's python3 (a venv of it did not see them on the H200 machines).
lib="$(mktemp -d)"
python3 -m pip install -q --no-index --no-deps --find-links .whl --target "${lib}" \
  ansible-core resolvelib cryptography cffi pycparser
export PYTHONPATH="${lib}${PYTHONPATH:+:${PYTHONPATH}}"
playbook=(python3 "${lib}/bin/ansible-playbook")
mkdir -p .ansible/collections/ansible_collections/onprem
ln -sfn ../../../.. .ansible/collections/ansible_collections/onprem/triton
export ANSIBLE_COLLECTIONS_PATH="${PWD}/.ansible/collections" ANSIBLE_NOCOLOR=1 OUT="${out}"

fields=index,uuid,name,memory.total,compute_cap,mig.mode.current,pci.bus_id,driver_version
nvidia-smi --query-gpu="${fields}" --format=csv,noheader,nounits > "${out}/nvidia_smi_query.csv"
nvidia-smi --version > "${out}/nvidia_smi_version.txt"
nvidia-smi -q > "${out}/nvidia_smi_q.txt"
{
  echo "== query fields: ${fields}"
  head -1 /proc/driver/nvidia/version 2>/dev/null || true
  uname -a
  grep PRETTY_NAME /etc/os-release || true
  python3 --version
  # whole outputs cut with sed, not head: an early-closed pipe fails the script under pipefail
  python3 -m pip show nvidia-ml-py 2>/dev/null | sed -n 1,3p
  command -v nvidia-smi
  "${playbook[@]}" --version | sed -n 1p
} > "${out}/env.txt"
"${playbook[@]}" -c local -i localhost, tests/device/verify_gpu_host.yml \
  -e "{\"ansible_python_interpreter\": \"$(command -v python3)\", \"container_tag\": \"${tag}\",
       \"too_new_container_tag\": \"${too_new}\"}" 2>&1 | tee "${out}/playbook.log"
