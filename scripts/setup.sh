#!/usr/bin/env bash
# Prepares a checkout to run the collection: a virtualenv with exactly
# requirements.txt, and the collection visible to Ansible as onprem.triton
# (ansible.cfg points collections_path at .ansible/collections).
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
stamp=".venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [[ ! -x .venv/bin/python || "$(cat "${stamp}" 2>/dev/null)" != "${want}" ]]; then
  echo "==> creating .venv from requirements.txt"
  "${python}" -m venv .venv
  # pip.conf on some machines names local indexes that may be absent: keep
  # those warnings out of the log, keep every real error.
  .venv/bin/python -m pip install --quiet --upgrade pip 2> >(grep -v 'is ignored: it is neither' >&2)
  .venv/bin/python -m pip install --quiet --requirement requirements.txt 2> >(grep -v 'is ignored: it is neither' >&2)
  echo "${want}" > "${stamp}"
fi

link=".ansible/collections/ansible_collections/onprem/triton"
if [[ ! -L "${link}" ]]; then
  mkdir -p "$(dirname "${link}")"
  ln -sfn ../../../.. "${link}"
fi
