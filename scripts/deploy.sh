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
exec ansible-playbook site.yml -i "${inventory}" "$@"
