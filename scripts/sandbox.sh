#!/usr/bin/env bash
# The sandbox of `make deploy` (inventories/sandbox) and of the Molecule default
# scenario: what a GPU-less, offline machine needs around site.yml.
#   sandbox.sh services   Triton fixture image saved as a tarball, Hub double started
#   sandbox.sh up         services + the systemd container onprem-triton-sandbox
#   sandbox.sh down       stops the Hub double and removes the container
# Files go to $ONPREM_TRITON_SANDBOX_DIR (default /tmp/onprem-triton-sandbox).
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${ONPREM_TRITON_SANDBOX_DIR:-/tmp/onprem-triton-sandbox}"
hub_port="${SANDBOX_HUB_PORT:-18510}"
container=onprem-triton-sandbox
# The names an on-prem mirror of NGC gives the images (inventories/sandbox): the
# fixture image has both stand-in backends, so it stands in for both.
mirror_refs=(registry.onprem.test/nvidia/tritonserver:25.12-vllm-python-py3
             registry.onprem.test/nvidia/tritonserver:25.12-trtllm-python-py3)
python="${PYTHON:-$(command -v python3)}"

services() {
  mkdir -p "${dir}"
  tests/images/build_base_image.sh >/dev/null
  tests/images/build_triton_image.sh >/dev/null
  local image_id
  image_id="$(docker image inspect --format '{{.Id}}' onprem-triton/tritonserver-fixture:latest)"
  if [[ "$(cat "${dir}/tritonserver-fixture.id" 2>/dev/null)" != "${image_id} ${mirror_refs[*]}" ]]; then
    echo "saving the Triton fixture image as ${mirror_refs[*]}"
    # The mirror's names are tags in this machine's Docker that the Molecule scenarios tag and untag
    # too (molecule/triton_server/tasks/prepare_image.yml), some at the same time: one at a time.
    (
      flock 9
      for ref in "${mirror_refs[@]}"; do docker tag onprem-triton/tritonserver-fixture:latest "${ref}"; done
      docker save --output "${dir}/tritonserver-fixture.tar" "${mirror_refs[@]}"
      docker rmi "${mirror_refs[@]}" >/dev/null
    ) 9>/tmp/onprem-triton-mirror-tags.lock
    echo "${image_id} ${mirror_refs[*]}" > "${dir}/tritonserver-fixture.id"
  fi
  if hub_running; then
    echo "Hub double already running on 127.0.0.1:${hub_port}"
  else
    setsid "${python}" tests/fixtures/hf_hub/server.py --port "${hub_port}" --pidfile "${dir}/hf_hub.pid" \
      >"${dir}/hf_hub.log" 2>&1 < /dev/null &
    for _ in $(seq 1 50); do
      (echo > "/dev/tcp/127.0.0.1/${hub_port}") 2>/dev/null && break
      sleep 0.2
    done
    (echo > "/dev/tcp/127.0.0.1/${hub_port}") 2>/dev/null || { echo "the Hub double did not start:"; cat "${dir}/hf_hub.log"; exit 1; }
    echo "Hub double listening on 127.0.0.1:${hub_port}"
  fi
}

# The Hub double of this sandbox runs: its pid file names a live process that IS the double on
# this port. A pid file left by a run that was killed can name a reused PID, any process.
hub_running() {
  local pid
  pid="$(cat "${dir}/hf_hub.pid" 2>/dev/null)" || return 1
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q "hf_hub/server.py --port ${hub_port} "
}

stop_services() {
  if hub_running; then
    kill "$(cat "${dir}/hf_hub.pid")" 2>/dev/null || true
  fi
  rm -f "${dir}/hf_hub.pid"
}

up() {
  services
  if [[ "$(docker inspect --format '{{.State.Running}}' "${container}" 2>/dev/null)" != "true" ]]; then
    docker rm -f -v "${container}" >/dev/null 2>&1 || true
    # The same container options as the Molecule instances (CONTRIBUTING.md).
    docker run -d --name "${container}" --hostname "${container}" \
      --cap-add SYS_ADMIN --cap-add NET_ADMIN \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v /var/lib/docker --tmpfs /run --tmpfs /run/lock \
      --network host --stop-signal SIGRTMIN+3 \
      onprem-triton/debian12-systemd:latest /lib/systemd/systemd >/dev/null
    echo "started the sandbox host ${container}"
  fi
}

down() {
  stop_services
  # -v: the anonymous volume of its /var/lib/docker too
  docker rm -f -v "${container}" >/dev/null 2>&1 || true
}

case "${1:-}" in
  services) services ;;
  stop-services) stop_services ;;
  up) up ;;
  down) down ;;
  *) echo "usage: $0 services|stop-services|up|down" >&2; exit 2 ;;
esac
