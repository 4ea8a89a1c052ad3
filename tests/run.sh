#!/usr/bin/env bash
# The test command (make test, and so CI). On a fresh Debian 12 machine that
# reaches only PyPI and Debian's archive it prepares everything it needs, then
# runs every stage for real and prints the time of each:
#   setup        virtualenv from requirements.txt, collection link
#   host         docker.io and debootstrap installed, dockerd running
#   images       the systemd base image and the Triton fixture image (cached)
#   lint         ansible-lint, production profile
#   sanity       ansible-test sanity in an ansible_collections/onprem/triton tree
#   unit         pytest tests/unit
#   integration  pytest tests/integration
#   deploy       the README's first command, `make deploy`, from cold (no sandbox
#                left from an earlier run), then again: the recap must show
#                changed=0 for every host; then the curl line its summary
#                printed is run as printed and must get an answer; then the
#                sandbox is torn down; in between, on the converged host, site.yml --check
#                runs through, tests/deploy (testinfra) reads what it holds, bad values are
#                refused before any change and each stage tag alone changes nothing
#   molecule     every scenario under molecule/: create, converge, idempotence,
#                verify (testinfra), destroy
# images, lint, sanity and unit run at the same time (each writes its own log,
# printed whole when all are done); the GenAI-Perf virtualenv that integration needs
# is built in the background from the start. Then integration, deploy and each Molecule
# scenario run as jobs in CI_LANES lanes (default 2) at the same time (run_jobs_in_lanes).
# `tests/run.sh STAGE...` runs only the named stages (setup, host and images
# always run; a failed images stage stops the run after the checks that ran with it).
# Exits non-zero when any stage fails.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
repo="$(pwd)"

all_stages=(lint sanity unit integration deploy molecule)
if (($#)); then stages=("$@"); else stages=("${all_stages[@]}"); fi

declare -a summary=() failures=()
declare -A stage_rc=()
failed=0
passed=0

run_stage() {
  local name="$1"; shift
  local start end rc
  echo
  echo "======== stage ${name} ========"
  start=$(date +%s)
  # Each stage's output is kept in tests/output/stages/, so that the summary can repeat
  # why a stage failed: CI often shows only the tail of a long run.
  local log
  log="$(stage_log "${name}")"
  # Not a pipe: the stage runs in this shell, so what it sets (the dockerd it started) stays.
  "$@" > >(tee "${log}") 2>&1
  rc=$?
  end=$(date +%s)
  ((rc == 0)) || sleep 1  # let tee write the last lines before the summary reads them
  record_stage "${name}" "${rc}" $((end - start)) "${log}"
  echo "======== stage ${name}: exit ${rc} in $((end - start))s ========"
  return "${rc}"
}

stage_log() {
  local log="${repo}/tests/output/stages/${1// /_}.log"
  mkdir -p "${log%/*}"
  echo "${log}"
}

record_stage() {
  local name="$1" rc="$2" seconds="$3" log="$4"
  if ((rc == 0)); then
    passed=$((passed + 1)); summary+=("$(printf '%-22s ok     %5ss' "${name}" "${seconds}")")
  else
    failed=$((failed + 1)); summary+=("$(printf '%-22s FAILED %5ss (exit %s)' "${name}" "${seconds}" "${rc}")")
    failures+=("${name}: ${log#"${repo}/"}")
    failures+=("$(stage_failure_lines "${log}")")
  fi
}

# Stages that need nothing from each other, run at the same time: lint and sanity are each
# bound to one core, the machine has two (measured in the commit that added this). Each
# writes only its own log while it runs; the logs are then printed whole, in order, and each
# stage is recorded with its own exit status and wall time (the times overlap).
run_stages_together() {
  local name rc
  local -a pids=()
  echo
  echo "======== stages $*, at the same time ========"
  for name in "$@"; do
    (
      start=$(date +%s)
      "${name}" >"$(stage_log "${name}")" 2>&1
      rc=$?
      echo "${rc} $(($(date +%s) - start))" >"$(stage_log "${name}").rc"
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  rc=0
  for name in "$@"; do
    local log result
    log="$(stage_log "${name}")"
    result="$(cat "${log}.rc" 2>/dev/null || echo "1 0")"
    rm -f "${log}.rc"
    echo
    echo "======== stage ${name} ========"
    cat "${log}"
    record_stage "${name}" "${result% *}" "${result#* }" "${log}"
    stage_rc[${name}]="${result% *}"
    echo "======== stage ${name}: exit ${result% *} in ${result#* }s ========"
    ((${result% *} == 0)) || rc=1
  done
  return "${rc}"
}

# The lines that say why a stage failed (Ansible, pytest, Molecule, shell), at most 20.
stage_failure_lines() {
  grep -E -e '^(fatal|failed): \[' -e 'FAILED!' -e '^(E  |FAILED |ERROR )' -e 'CRITICAL|Error:' "$1" \
    | grep -v 'FAILED - RETRYING' | cut -c1-400 | tail -n 20
}

print_summary() {
  echo
  echo "======== summary ========"
  printf '%s\n' "${summary[@]}"
  [[ -z "${lanes_summary:-}" ]] || echo "${lanes_summary}"
  if ((${#failures[@]})); then
    echo "---- why the failed stages failed ----"
    printf '%s\n' "${failures[@]}"
  fi
  echo "stages: ${passed} passed, ${failed} failed"
}

# --- host prerequisites (shared with make deploy) ----------------------------
# shellcheck source=scripts/host.sh
source scripts/host.sh
# A genai-perf build still running when the run stops early (setup failed) stops with it.
trap '[[ -z "${genai_perf_build_pid}" ]] || kill "${genai_perf_build_pid}" 2>/dev/null; stop_dockerd' EXIT

# --- stages ----------------------------------------------------------------
images() {
  tests/images/build_base_image.sh || return 1
  tests/images/build_triton_image.sh || return 1
}

lint() {
  local rc=0
  ansible-lint --profile production || rc=$?
  # changelogs/fragments/ (antsibull-changelog): each fragment valid before it is released.
  antsibull-changelog lint || rc=$?
  # ansible-lint installs a copy of the collection into ~/.ansible/collections
  # to resolve its FQCNs; later stages must use the checkout itself.
  rm -rf ~/.ansible/collections/ansible_collections/onprem/triton
  return "${rc}"
}

sanity() {
  # ansible-test wants the collection at ansible_collections/<ns>/<name>;
  # copy what git tracks (plus what is new and not ignored) into such a tree.
  local root="${repo}/tests/output/sanity"
  rm -rf "${root}" && mkdir -p "${root}/ansible_collections/onprem/triton"
  git ls-files --cached --others --exclude-standard -z \
    | xargs -0 -I{} cp --parents -P {} "${root}/ansible_collections/onprem/triton/" 2>/dev/null
  # ansible-test downloads its pip bootstrap from a host these machines cannot
  # reach: give it the offline equivalent, under the name it looks for.
  local pip_version
  pip_version="$(python - <<'PY'
import re, ansible_test, pathlib
src = (pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
)"
  mkdir -p ~/.ansible/test/cache
  cp tests/sanity/get_pip_offline.py ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"
  (cd "${root}/ansible_collections/onprem/triton" && git init -q && git add -A \
    && ansible-test sanity --venv --python 3.11 --color no)
}

unit() {
  pytest -q tests/unit
}

# GenAI-Perf and its perf_analyzer for tests/integration/test_benchmark_playbook.py:
# a virtualenv of their own (about 1 GB), rebuilt only when its pins change. On a cold
# machine the build (about 55 s, mostly download and unpacking) runs in the background
# from the start of the run, next to setup, images and the checks, and integration waits
# for it.
genai_perf_venv_build() {
  local venv="${repo}/.venv-genai-perf" stamp
  stamp="$(sha256sum tests/requirements-genai-perf.txt | cut -c1-16)"
  if [[ "$(cat "${venv}/.stamp" 2>/dev/null)" != "${stamp}" ]]; then
    echo "building ${venv}"
    rm -rf "${venv}" && python3 -m venv "${venv}" || return 1
    # --no-deps: the file is the freeze of a venv known to work; tritonclient
    # 2.51 declares numpy<2 while genai-perf's pandas needs numpy 2, so a
    # resolver run refuses the set that runs fine.
    "${venv}/bin/pip" install -q --disable-pip-version-check --no-deps -r tests/requirements-genai-perf.txt 2>&1 \
      | grep -v 'is ignored: it is neither a file nor a directory' || true
    "${venv}/bin/genai-perf" --version >/dev/null || return 1
    echo "${stamp}" > "${venv}/.stamp"
  fi
}

genai_perf_build_pid=""
genai_perf_venv_start() {
  local log
  log="$(stage_log genai-perf-venv)"
  genai_perf_venv_build >"${log}" 2>&1 &
  genai_perf_build_pid=$!
}

genai_perf_venv() {
  local venv="${repo}/.venv-genai-perf" cudart out rc=0 log
  log="$(stage_log genai-perf-venv)"
  if [[ -n "${genai_perf_build_pid}" ]]; then
    wait "${genai_perf_build_pid}" || rc=$?
    genai_perf_build_pid=""
    cat "${log}"
  else
    genai_perf_venv_build || rc=$?
  fi
  ((rc == 0)) || { echo "building ${venv} failed (exit ${rc})" >&2; return 1; }
  # genai-perf only drives perf_analyzer, a native binary (libb64 from the host,
  # libcudart from the venv): it must really run, with the LD_LIBRARY_PATH the
  # README gives benchmark_environment, on every run, cached venv or not.
  cudart="$(compgen -G "${venv}/lib/python3*/site-packages/nvidia/cuda_runtime/lib" | head -n 1)"
  if ! out="$(LD_LIBRARY_PATH="${cudart}" "${venv}/bin/perf_analyzer" --version 2>&1)"; then
    echo "perf_analyzer of ${venv} does not run (LD_LIBRARY_PATH=${cudart:-none: nvidia-cuda-runtime-cu12 missing}):" >&2
    echo "${out}" | tail -n 5 >&2
    return 1
  fi
  export GENAI_PERF_VENV="${venv}"
}

integration() {
  # --durations: where the stage's time goes, in every CI log.
  pytest -q -rs --durations=25 tests/integration
}

# make deploy as a user runs it. The first run builds what is missing (the
# sandbox host, the image tarball, the weights); the second must change nothing.
deploy() {
  local out="${repo}/tests/output/deploy" sandbox_dir="${ONPREM_TRITON_SANDBOX_DIR:-/tmp/onprem-triton-sandbox}"
  local rc=0 start
  mkdir -p "${out}" && rm -f "${out}"/*.log
  # Cold: nothing kept from an earlier run (sandbox host, tarball, weights cache).
  scripts/sandbox.sh down
  rm -rf "${sandbox_dir}"
  start=$(date +%s)
  make deploy 2>&1 | tee "${out}/first.log"
  rc=${PIPESTATUS[0]}
  echo "deploy: first make deploy exit ${rc} in $(($(date +%s) - start))s"
  if ((rc == 0)); then
    start=$(date +%s)
    make deploy 2>&1 | tee "${out}/second.log"
    rc=${PIPESTATUS[0]}
    echo "deploy: second make deploy exit ${rc} in $(($(date +%s) - start))s"
  fi
  ((rc == 0)) && { deploy_unchanged "${out}/second.log" || rc=1; }
  ((rc == 0)) && { deploy_ask "${out}/second.log" || rc=1; }
  ((rc == 0)) && { deploy_check_mode "${out}" || rc=1; }
  ((rc == 0)) && { deploy_host_tests || rc=1; }
  ((rc == 0)) && { deploy_refuses_bad_values "${out}" || rc=1; }
  scripts/sandbox.sh down
  rm -rf "${sandbox_dir}"
  return "${rc}"
}

# site.yml in check mode on the converged host: it must run through (honest check mode: every
# read-only probe runs, nothing fails for want of what a real run would have made).
deploy_check_mode() {
  local log="$1/check.log"
  if ! ansible-playbook site.yml -i inventories/sandbox --check >"${log}" 2>&1; then
    echo "deploy: site.yml --check failed on the converged host (${log}):"; tail -n 30 "${log}"; return 1
  fi
  echo "deploy: site.yml --check ran through on the converged host:"
  sed -n '/^PLAY RECAP/,/^$/p' "${log}" | grep -E ' : ok='
}

# What the deployed host holds and serves, read on it with testinfra (tests/deploy).
deploy_host_tests() {
  pytest -q -p no:cacheprovider --hosts=docker://onprem-triton-sandbox tests/deploy
}

# Every host of the second run's PLAY RECAP at changed=0; otherwise the tasks
# that changed.
deploy_unchanged() {
  local log="$1" recap
  recap="$(sed -n '/^PLAY RECAP/,/^$/p' "${log}" | grep -E '^[^ ].* : ok=')"
  if [[ -z "${recap}" ]]; then
    echo "deploy: no PLAY RECAP in the second run"; return 1
  fi
  echo "deploy: second run's recap:"; echo "${recap}"
  if grep -qvE ' changed=0 ' <<<"${recap}"; then
    echo "deploy: the second make deploy changed something (must be changed=0 for every host):"
    awk '/^TASK \[/ {task = $0} /^changed: / {print task; print "    " $0}' "${log}"
    return 1
  fi
}

# On the converged sandbox host, one bad value from every stage, all in one run: it stops in
# its first play naming each variable, and the server (its PID, unit, repository generation)
# is untouched and still answers.
deploy_refuses_bad_values() {
  local out="$1" host=onprem-triton-sandbox value variable before after log n merged
  local -a values=(
    '{"triton_server_http_address": "999.1.1.1"}'
    '{"triton_server_extra_args": "--foo"}'
    '{"container_engine_storage_driver": "bogus"}'
    '{"triton_server_restart_sec": -1}'
    '{"triton_server_gate_prompt": ""}'
    '{"triton_rollout_serial": "-5"}'
    '{"hf_model_min_free_bytes": 1000000000000000000}'
    '{"triton_models": [{"name": "tiny_llm", "backend": "vllm", "weights": {"repo_id": "onprem-test/tiny-llm", "revision": "v1.0", "dir": "tiny-llm"}, "engine_args": {"max_num_batched_token": 1}}]}'
  )
  server_state() {
    docker exec "${host}" sh -c 'systemctl show -p MainPID --value triton-sandbox; readlink -f /opt/triton/repository/current;
      md5sum /etc/systemd/system/triton-sandbox.service /etc/docker/daemon.json'
  }
  # All of them in one run (the first play checks every stage and reports every problem together,
  # each naming its variable): one site.yml run instead of one per value.
  before="$(server_state)"
  log="${out}/bad-values.log"
  merged="$(python3 -c 'import json, sys; merged = {}; [merged.update(json.loads(v)) for v in sys.argv[1:]]; print(json.dumps(merged))' "${values[@]}")"
  if ANSIBLE_CALLBACK_RESULT_FORMAT=json ansible-playbook site.yml -i inventories/sandbox -e "${merged}" >"${log}" 2>&1; then
    echo "deploy: ${merged} was accepted on the converged host (${log})"; return 1
  fi
  n="$(grep -oE "${host}: [0-9]+ problem\(s\) before anything changed" "${log}" | grep -oE '[0-9]+' | head -n 1)"
  if ((${n:-0} < ${#values[@]})); then
    echo "deploy: ${#values[@]} bad values gave ${n:-no} problem(s) before anything changed (${log})"; return 1
  fi
  for value in "${values[@]}"; do
    variable="$(python3 -c 'import json, sys; print(next(iter(json.loads(sys.argv[1]))))' "${value}")"
    grep -q "${variable}" "${log}" || { echo "deploy: ${value} was not named in the first play's problems (${log})"; return 1; }
    echo "deploy: refused before any change: ${value}"
  done
  # One stage alone, by its tag, on the converged host: it finds what it needs, changes nothing.
  local tag
  local -A stage_work=(
    [container_engine]="onprem.triton._common : Install the packages, pinned (apt)"
    [hf_model]="onprem.triton.hf_model : Start the downloads on the controller"
  )
  for tag in container_engine triton_server model_repository hf_model; do
    log="${out}/tag-${tag}.log"
    if ! ansible-playbook site.yml -i inventories/sandbox --tags "${tag}" >"${log}" 2>&1; then
      echo "deploy: --tags ${tag} failed on the converged host (${log})"; tail -30 "${log}"; return 1
    fi
    deploy_unchanged "${log}" >/dev/null || { echo "deploy: --tags ${tag} changed the converged host (${log})"; return 1; }
    # The stage's work ran, not only its include (an include's own tags do not reach what it includes).
    local work="${stage_work[${tag}]:-}"
    if [[ -n "${work}" ]] && ! grep -qF "TASK [${work}]" "${log}"; then
      echo "deploy: --tags ${tag} skipped its stage's work (no task '${work}' in ${log})"; return 1
    fi
    echo "deploy: --tags ${tag} ran alone${work:+ (its work too: ${work})}, nothing changed"
  done
  after="$(server_state)"
  if [[ "${before}" != "${after}" ]]; then
    echo "deploy: the server changed:"; diff <(echo "${before}") <(echo "${after}"); return 1
  fi
  echo "deploy: server PID, unit, daemon.json and repository generation unchanged:"; echo "${after}"
  deploy_ask "${out}/second.log"
}

# The curl line the summary printed, run as printed from outside Ansible: the
# answer must be a text_output that is not empty.
deploy_ask() {
  local log="$1" line answer
  line="$(grep -m1 -E '^ +curl ' "${log}" | sed -E 's/^ +//')"
  if [[ -z "${line}" ]]; then
    echo "deploy: the summary printed no curl line"; return 1
  fi
  echo "deploy: running the summary's curl line:"; echo "${line}"
  answer="$(timeout 120 bash -c "${line}")" || { echo "deploy: curl failed: ${answer}"; return 1; }
  echo "deploy: the server answered: ${answer}"
  python3 -c 'import json, sys
answer = json.loads(sys.argv[1])
text = answer.get("text_output")
if "error" in answer or not isinstance(text, str) or not text.strip():
    sys.exit("deploy: no answer in that reply")
print("deploy: text_output:%s" % text)' "${answer}"
}

# Integration, deploy and every Molecule scenario are jobs that need nothing from each other
# (distinct loopback ports and instance names), run in CI_LANES lanes at the same time (default
# 2), each lane one job after another, longest first into the least loaded lane. Why: run one
# after another, integration and deploy left one of the two cores idle (stop 27's cold run: 7423 s
# in all; CI's limit is 5400 s). Not 3: measured on a cold run, three lanes kept both cores busy
# but made no more progress than two, and the one-process integration job got a third of its
# share. CI_LANES=1 runs them one after another, as when chasing a timing problem.
# Seconds each job took in the cold run of 2026-12-01 (ci d430d8d: 2136 s in all, lanes 1955 s,
# CPU 84% busy; a fast day: CI's machine has run the same jobs 2-3 times slower, and only their
# ratios matter here), to fill the lanes; a job not listed counts as 300 s.
declare -A job_cold_seconds=(
  [integration]=909 [deploy]=274
  [molecule fleet]=843 [molecule triton_fleet]=283 [molecule triton_instances]=425
  [molecule monitoring]=425 [molecule triton_server]=210 [molecule gpu_host]=257
  [molecule hf_model]=78 [molecule model_repository]=50
)

run_job() {
  case "$1" in
    integration) integration ;;
    deploy) deploy ;;
    "molecule "*) molecule test -s "${1#molecule }" ;;
  esac
}

# "busy idle" jiffies of all CPUs so far (/proc/stat), to say how much of the machine the lanes used.
cpu_jiffies() {
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat
}

run_jobs_in_lanes() {
  local lanes="$1"; shift
  local job i best rc=0 log result start cpu_before cpu_after busy idle
  local -a lane_jobs=() lane_load=() pids=()
  for ((i = 0; i < lanes; i++)); do lane_jobs[i]=""; lane_load[i]=0; done
  while IFS= read -r job; do
    best=0
    for ((i = 1; i < lanes; i++)); do ((lane_load[i] < lane_load[best])) && best=${i}; done
    lane_jobs[best]+="${lane_jobs[best]:+|}${job}"
    lane_load[best]=$((lane_load[best] + ${job_cold_seconds[${job}]:-300}))
  done < <(for job in "$@"; do echo "${job_cold_seconds[${job}]:-300} ${job}"; done | sort -rn | cut -d' ' -f2-)
  echo
  start=$(date +%s)
  cpu_before="$(cpu_jiffies)"
  for ((i = 0; i < lanes; i++)); do
    [[ -n "${lane_jobs[i]}" ]] || continue
    echo "======== lane $((i + 1)): ${lane_jobs[i]//|/, } ========"
    (
      IFS='|' read -ra lane_job_list <<<"${lane_jobs[i]}"
      for job in "${lane_job_list[@]}"; do
        log="$(stage_log "${job}")"
        local job_start
        job_start=$(date +%s)
        run_job "${job}" >"${log}" 2>&1
        echo "$? $(($(date +%s) - job_start))" >"${log}.rc"
        echo "${job} (lane $((i + 1))): exit $(cut -d' ' -f1 "${log}.rc") in $(cut -d' ' -f2 "${log}.rc")s," \
          "$(($(date +%s) - start))s into the lanes"
      done
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  cpu_after="$(cpu_jiffies)"
  busy=$(( ${cpu_after% *} - ${cpu_before% *} )); idle=$(( ${cpu_after#* } - ${cpu_before#* } ))
  lanes_summary="lanes: ${lanes}, $(($(date +%s) - start))s, CPU $((100 * busy / (busy + idle + 1)))% busy"
  echo "${lanes_summary}"
  for job in "$@"; do
    log="$(stage_log "${job}")"
    result="$(cat "${log}.rc" 2>/dev/null || echo "1 0")"
    rm -f "${log}.rc"
    echo
    echo "======== stage ${job} ========"
    cat "${log}"
    record_stage "${job}" "${result% *}" "${result#* }" "${log}"
    echo "======== stage ${job}: exit ${result% *} in ${result#* }s ========"
    ((${result% *} == 0)) || rc=1
  done
  return "${rc}"
}

[[ " ${stages[*]} " == *" integration "* ]] && genai_perf_venv_start
run_stage setup scripts/setup.sh || { print_summary; exit 1; }
# shellcheck disable=SC1091
source .venv/bin/activate
export ANSIBLE_COLLECTIONS_PATH="${repo}/.ansible/collections"
export PY_COLORS=0 ANSIBLE_FORCE_COLOR=0
run_stage host host_prerequisites || { print_summary; exit 1; }

# images (debootstrap: measured 50 s of CPU in 140 s, the rest download and disk) and lint,
# sanity and unit when asked for, at the same time; the other stages one after another,
# and none of them without the images.
together=(images)
for stage in "${stages[@]}"; do
  case "${stage}" in lint | sanity | unit) together+=("${stage}") ;; esac
done
run_stages_together "${together[@]}"
[[ "${stage_rc[images]:-1}" == 0 ]] || { print_summary; exit 1; }
ci_jobs=()
for stage in "${stages[@]}"; do
  case "${stage}" in
    lint | sanity | unit) ;;
    # integration's GenAI-Perf virtualenv (built in the background since the start) first, here:
    # a lane is a subshell, which cannot wait for this shell's background job.
    integration) run_stage "integration venv" genai_perf_venv && ci_jobs+=(integration) ;;
    deploy) ci_jobs+=(deploy) ;;
    molecule)
      mapfile -t -O "${#ci_jobs[@]}" ci_jobs < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' \
        | xargs -n1 basename | sort | sed 's/^/molecule /') ;;
    *) echo "unknown stage ${stage}"; failed=$((failed + 1)) ;;
  esac
done
lanes_summary=""
((${#ci_jobs[@]})) && run_jobs_in_lanes "$((${CI_LANES:-2} < ${#ci_jobs[@]} ? ${CI_LANES:-2} : ${#ci_jobs[@]}))" "${ci_jobs[@]}"
print_summary
((failed == 0))
