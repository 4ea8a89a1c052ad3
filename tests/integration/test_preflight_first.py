"""site.yml checks every stage's inputs on every host before any host changes (playbooks/preflight.yml).

Fresh Debian 12 systemd hosts (the Molecule base image, nothing installed), the sandbox inventory's
settings with the GPU stack on (so the driver and toolkit stages are checked too; no GPU here, so
nvidia_driver_require_gpu is off). Every bad value is given to a real site.yml run (no --check, no
--tags), at most one value of each stage's role to a host in a run, three hosts a run: the run must
stop in its first play, name every variable and count every host's problems, and leave each host as
it was (packages, /etc, /opt, /srv, the apt lists). Then several bad values of one role on a host:
one run names them all.
"""
import json
import os
import re
import subprocess
import time
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
IMAGE = "onprem-triton/debian12-systemd:latest"
# The same container options as the Molecule instances (CONTRIBUTING.md).
RUN = ["run", "-d", "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
       "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "--cgroupns", "host",
       "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock", "--network", "host",
       "--stop-signal", "SIGRTMIN+3"]
HOSTS = ("fresh-a", "fresh-b", "fresh-c")
# What a run would change first on a fresh host: packages, configuration, weights, repository, apt lists.
STATE = "dpkg -l | md5sum; ls -laR /etc /opt /srv /var/lib/apt/lists 2>/dev/null | md5sum"
COMMON = {"triton_gpu_stack": True, "nvidia_driver_require_gpu": False}

# One bad value per stage input: (extra vars, the variable the message must name).
BAD_VALUES = [
    # stage 1, driver
    ({"nvidia_driver_branch": "999"}, "nvidia_driver_branch"),
    ({"nvidia_driver_source": "bogus"}, "nvidia_driver_source"),
    ({"nvidia_driver_version": "1.2.3"}, "nvidia_driver_version"),
    ({"nvidia_driver_triton_container_tag": "99.99-vllm-python-py3"}, "nvidia_driver_triton_container_tag"),
    # stage 2, engine and toolkit
    ({"container_engine_source": "bogus"}, "container_engine_source"),
    ({"container_engine_log_max_size": "100x"}, "container_engine_log_max_size"),
    ({"container_engine_storage_driver": "bogus"}, "container_engine_storage_driver"),
    ({"container_engine_log_max_file": 0}, "container_engine_log_max_file"),
    ({"nvidia_container_toolkit_version": "latest"}, "nvidia_container_toolkit_version"),
    # stage 3, weights
    ({"triton_models": [{"name": "tiny_llm", "backend": "vllm", "weights": {"repo_id": "no-owner"}}]},
     "triton_models[0].weights.repo_id"),
    ({"hf_model_models": [{"name": "tiny-llm", "repo_id": "onprem-test/tiny-llm"}]}, "hf_model_models"),
    ({"hf_model_dir": "models"}, "hf_model_dir"),
    ({"hf_model_fanout": "bogus"}, "hf_model_fanout"),
    ({"hf_model_endpoint": "ftp://mirror.example"}, "hf_model_endpoint"),
    ({"hf_model_min_free_bytes": 10 ** 18}, "hf_model_min_free_bytes"),
    # stage 4, repository
    ({"model_repository_root": "/"}, "model_repository_root"),
    ({"model_repository_keep_generations": 0}, "model_repository_keep_generations"),
    ({"triton_models": [{"name": "tiny_llm", "backend": "vllm", "model_path": "/opt/models/tiny-llm",
                         "engine_args": {"max_num_batched_token": 512}}]},
     "triton_models[0].engine_args.max_num_batched_token"),
    ({"triton_models": [{"name": "tiny_llm", "backend": "vllm", "model_path": "/opt/models/tiny-llm",
                         "gpus": [5]}]}, "triton_models[0].gpus"),
    # stage 5, server
    ({"triton_server_http_address": "999.1.1.1"}, "triton_server_http_address"),
    ({"triton_server_extra_args": "--foo"}, "triton_server_extra_args"),
    ({"triton_server_restart_sec": -1}, "triton_server_restart_sec"),
    ({"triton_server_http_port": 70000}, "triton_server_http_port"),
    ({"triton_server_shm_size": "lots"}, "triton_server_shm_size"),
    ({"triton_server_repository_api_key": "short"}, "triton_server_repository_api_key"),
    # stage 6, gate
    ({"triton_server_gate_prompt": " "}, "triton_server_gate_prompt"),
    ({"triton_server_ready_timeout": -5}, "triton_server_ready_timeout"),
    # rollout settings
    ({"triton_rollout_serial": "-5"}, "triton_rollout_serial"),
    ({"triton_rollout_max_fail_percentage": 150}, "triton_rollout_max_fail_percentage"),
]


def _docker(*args):
    return subprocess.run(["docker"] + list(args), capture_output=True, text=True, check=True, timeout=120)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three fresh systemd hosts and an inventory: the sandbox group_vars, unchanged."""
    tmp = tmp_path_factory.mktemp("preflight")
    names = dict((host, "preflight-%s-%s" % (host, uuid.uuid4().hex[:6])) for host in HOSTS)
    try:
        for name in names.values():
            _docker(*(RUN + ["--name", name, IMAGE, "/lib/systemd/systemd"]))
        # Booting writes /etc (machine-id, units): a host's state is read once it has booted.
        for name in names.values():
            subprocess.run(["docker", "exec", name, "systemctl", "is-system-running", "--wait"],
                           capture_output=True, text=True, timeout=120, check=False)
        lines = ["all:", "  children:", "    triton_servers:", "      children:", "        triton_vllm:",
                 "          hosts:"]
        for host, name in names.items():
            lines += ["            %s:" % host, "              ansible_host: %s" % name,
                      "              ansible_connection: community.docker.docker",
                      "              ansible_python_interpreter: /usr/bin/python3"]
        inventory = tmp / "inventory"
        inventory.mkdir()
        (inventory / "hosts.yml").write_text("\n".join(lines) + "\n")
        (inventory / "group_vars").symlink_to(os.path.join(ROOT, "inventories", "sandbox", "group_vars"))
        yield {"inventory": inventory, "names": names, "tmp": tmp}
    finally:
        for name in names.values():
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def _state(name):
    return _docker("exec", name, "sh", "-c", STATE).stdout


def _site(fleet, extra, *args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json", ONPREM_TRITON_SANDBOX_DIR=str(fleet["tmp"] / "sandbox"))
    result = subprocess.run(["ansible-playbook", "-i", str(fleet["inventory"]), os.path.join(ROOT, "site.yml"),
                             "-e", json.dumps(dict(COMMON, **extra))] + list(args),
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def test_the_sandbox_settings_pass_every_stage_check(fleet):
    rc, out = _site(fleet, {}, "--tags", "preflight", "--limit", "fresh-a")
    assert rc == 0, out
    assert ("fresh-a: preflight passed for rollout, nvidia_driver, container_engine, nvidia_container_toolkit, "
            "hf_model, model_repository, triton_server") in out, out


# Play-level settings (serial, max_fail_percentage): given as extra vars, one to a run, every host.
ROLLOUT = ("triton_rollout_",)
ROLES = ("nvidia_driver", "nvidia_container_toolkit", "container_engine", "hf_model", "model_repository",
         "triton_server")


def _owner(variable):
    """The role that checks a variable; None for the model catalog (triton_models), which every
    role's argument spec reads."""
    return next((role for role in ROLES if variable.startswith(role + "_")), None)


def _fits(variable, values):
    """A host's run may take this value: no other value of its role, and a catalog value alone (a
    value a role refuses in its argument spec stops that role's checks: it could hide another)."""
    owners = [_owner(v) for _e, v in values]
    return not values if _owner(variable) is None else None not in owners and _owner(variable) not in owners


def _rounds():
    """BAD_VALUES spread over runs of the three hosts (_fits); the rollout values, play-level, go
    one to a run as extra vars."""
    rounds = []
    for extra, variable in BAD_VALUES:
        if variable.startswith(ROLLOUT):
            spot = next((r for r in rounds if r["extra"] is None), None)
            if spot is None:
                spot = {"hosts": dict((host, []) for host in HOSTS), "extra": None}
                rounds.append(spot)
            spot["extra"] = (extra, variable)
            continue
        for round_ in rounds + [None]:
            if round_ is None:
                round_ = {"hosts": dict((host, []) for host in HOSTS), "extra": None}
                rounds.append(round_)
            host = next((h for h, values in round_["hosts"].items() if _fits(variable, values)), None)
            if host:
                round_["hosts"][host].append((extra, variable))
                break
    return rounds


def test_each_bad_value_stops_the_run_before_the_host_changes(fleet):
    """Every value, on a fresh host, in a real run (no --check, no --tags): 29 values in 4 runs."""
    names = fleet["names"]
    host_vars = fleet["inventory"] / "host_vars"
    host_vars.mkdir(exist_ok=True)
    before = dict((host, _state(name)) for host, name in names.items())
    rounds = _rounds()
    problems = []
    for round_ in rounds:
        try:
            for host, values in round_["hosts"].items():
                merged = {}
                for extra, _variable in values:
                    merged.update(extra)
                (host_vars / ("%s.yml" % host)).write_text(json.dumps(merged))
            started = time.time()
            rc, out = _site(fleet, round_["extra"][0] if round_["extra"] else {})
        finally:
            for host in HOSTS:
                (host_vars / ("%s.yml" % host)).unlink(missing_ok=True)
        variables = [v for values in round_["hosts"].values() for _e, v in values]
        variables += [round_["extra"][1]] if round_["extra"] else []
        print("%5.1f s: %s" % (time.time() - started, ", ".join(variables)))
        if rc == 0:
            problems.append("%s: the run passed" % variables)
            continue
        problems += ["%s: not named: %s" % (v, out[-1500:]) for v in variables if v not in out]
        for host, values in round_["hosts"].items():
            found = re.search(r"%s: ([0-9]+) problem\(s\) before anything changed" % host, out)
            wanted = len(values) + (1 if round_["extra"] else 0)
            if wanted and not (found and int(found.group(1)) >= wanted):
                problems.append("%s: %s problem(s) reported, %d given: %s" % (
                    host, found.group(1) if found else "no", wanted, out[-1500:]))
        if "Install the driver" in out or "Install Docker" in out:
            problems.append("%s: a task after the first play ran" % variables)
    assert not problems, "\n".join(problems)
    for host, name in names.items():
        assert _state(name) == before[host], "%s changed" % host
    placed = [v for r in rounds for values in r["hosts"].values() for _e, v in values]
    placed += [r["extra"][1] for r in rounds if r["extra"]]
    assert sorted(placed) == sorted(v for _e, v in BAD_VALUES) and len(BAD_VALUES) >= 25


def test_one_run_reports_every_problem_of_every_host(fleet):
    names = fleet["names"]
    host_vars = fleet["inventory"] / "host_vars"
    host_vars.mkdir(exist_ok=True)
    bad = {
        "fresh-a": {"triton_server_http_address": "999.1.1.1", "hf_model_dir": "models"},
        "fresh-b": {"container_engine_storage_driver": "bogus", "triton_server_restart_sec": -1,
                    "triton_server_gate_prompt": ""},
        "fresh-c": {"nvidia_driver_branch": "999", "model_repository_keep_generations": 0},
    }
    try:
        for host, values in bad.items():
            (host_vars / ("%s.yml" % host)).write_text(json.dumps(values))
        before = dict((host, _state(name)) for host, name in names.items())
        rc, out = _site(fleet, {"triton_rollout_serial": "0%"})
    finally:
        for host in bad:
            (host_vars / ("%s.yml" % host)).unlink()
    assert rc != 0, out
    for host, values in bad.items():
        for variable in values:
            assert variable in out, (variable, out)
        # each of its values (two of fresh-b's in the same role) and the rollout setting
        found = re.search(r"%s: ([0-9]+) problem\(s\) before anything changed" % host, out)
        assert found and int(found.group(1)) >= len(values) + 1, out
    assert "triton_rollout_serial" in out
    # Nothing after the first play ran on any host.
    assert "Install the driver" not in out and "Install Docker" not in out, out
    for host, name in names.items():
        assert _state(name) == before[host], "%s changed" % host
