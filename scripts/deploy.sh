#!/usr/bin/env bash
# make deploy: run site.yml against an inventory (default inventories/sandbox,
# which first brings up the sandbox host and its stand-ins on this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
inventory="${1:-inventories/sandbox}"
shift || true

# shellcheck source=/dev/null
source .venv/bin/activate
export ANSIBLE_COLLECTIONS_PATH="${PWD}/.ansible/collections"

if [[ "${inventory%/}" == "inventories/sandbox" ]]; then
  # shellcheck source=scripts/host.sh
  source scripts/host.sh
  host_prerequisites
  scripts/sandbox.sh up
fi
# Task results as YAML (what ansible.cfg's `result_format = yaml` asks for; the
# option's name is callback_result_format): the summary site.yml ends with then
# shows its curl line as a shell runs it, not as an escaped JSON string.
export ANSIBLE_CALLBACK_RESULT_FORMAT="${ANSIBLE_CALLBACK_RESULT_FORMAT:-yaml}"
ansible-playbook site.yml -i "${inventory}" "$@"
echo
echo "ansible-playbook and this collection come from this checkout: run the day-2 playbooks above from"
echo "${PWD} after: source .venv/bin/activate"
