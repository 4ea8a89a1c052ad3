#!/usr/bin/env bash
# Sourced by tests/run.sh and scripts/deploy.sh: the packages and the docker
# daemon this machine needs to build images and run instances.

started_dockerd=""

# Stops the dockerd that host_prerequisites started, if it started one.
stop_dockerd() {
  if [[ -n "${started_dockerd}" ]]; then
    echo "stopping the dockerd this run started (pid ${started_dockerd})"
    kill "${started_dockerd}" 2>/dev/null || true
    wait "${started_dockerd}" 2>/dev/null || true
  fi
}

host_prerequisites() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  command -v rsync >/dev/null || missing+=(rsync)
  # promtool and amtool (check and unit-test the monitoring role's rules and routes, tests/unit/roles).
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
  # haproxy (the gateway role's configuration through haproxy -c, tests/unit/roles).
  command -v haproxy >/dev/null || missing+=(haproxy)
  # socat: the gateway drain/undrain tasks talk to HAProxy's admin socket with it
  # (tests/integration/test_gateway_drain.py runs them on this machine).
  command -v socat >/dev/null || missing+=(socat)
  # perf_analyzer (the benchmark playbook's integration test) links libb64.
  [[ -e /usr/lib/x86_64-linux-gnu/libb64.so.0d ]] || missing+=(libb64-0d)
  if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || return 1
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "starting dockerd"
    mkdir -p tests/output
    dockerd >tests/output/dockerd.log 2>&1 &
    started_dockerd=$!
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not come up:"; tail -20 tests/output/dockerd.log; return 1; }
  fi
  echo "docker $(docker version --format '{{.Server.Version}}'), storage $(docker info --format '{{.Driver}}')"
}
