# SPDX-License-Identifier: Apache-2.0
"""What converging site.yml costs for a fleet of N hosts, N = 1, 2, 4, 8.

For each N, starts N fresh sandbox hosts (Debian 12 systemd containers
onprem-triton-bench-1..N, with the options of `scripts/sandbox.sh up`: host
networking, Docker nested on a /var/lib/docker volume), writes an inventory for them (groups
triton_servers > triton_vllm, the group_vars of inventories/sandbox, and per
host its own Triton ports 18820+10*(i-1) .. +2, its weights peer port +5 and triton_server_name benchN,
since host networking puts every instance on the same loopback), empties the
controller's copy of the weights and runs the real `ansible-playbook site.yml`
three times:
  first    wall time of the run that installs everything on the fresh hosts
  re-run   wall time of a second run that must find nothing to change: serve.yml's
           plan must put every host in the steady pass
  one      wall time of a third run after one host (the last) changed a serving
           setting in its inventory host_vars (triton_server_log_verbose: 1, a flag
           of its unit's tritonserver command line): the plan must roll that host
           alone ('<host>: rolls (<name>: systemd unit)'), else the bench fails
and prints them with the forks and the strategy plugin used, the CPU-seconds the machine
spent busy in each re-run and the controller's own share of them (and the floor that puts
under the 8-host ratio), the tasks that
changed in each run (0 in the re-run when the run is idempotent), the wall time
of the rolling pass in the third run (one host's rolling batch, from the
profile_tasks timestamps), the ratios of the issue's targets (issue 15: the
8-host re-run against the 1-host one, the re-run against the first run, the
one-changed run against the re-run plus one host's rolling batch) and the 10
slowest tasks of each re-run from its profile_tasks summary (ansible.cfg enables
the callback).
Each run's full output is saved as <out>/fleet-N-{first,rerun,one}.log; the
re-run's profile_tasks summary, every task of it, as <out>/fleet-N-rerun-profile.txt.

Around the hosts it uses `scripts/sandbox.sh services` with its own files in
/tmp/onprem-triton-bench (the Triton fixture image tarball) and its own Hub
double on 127.0.0.1:18810; all traffic stays on 127.0.0.1. It removes its
containers after each N and stops the Hub double at the end, also on failure
or Ctrl-C. Not run by CI; the figures depend on the machine and its load.

    source .venv/bin/activate
    python bench/fleet_scale.py [--hosts 1 2 4 8] [--forks 20] [--strategy linear] [--env NAME=VALUE ...] [--out bench/results]

--env passes a setting to ansible-playbook to compare it against the same run
without (e.g. --env ANSIBLE_PIPELINING=True). The last play of site.yml keeps
its serial (triton_rollout_serial, 25%: one host a batch up to N=4), as a real
rollout does.
"""

import argparse
import configparser
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SANDBOX_DIR = "/tmp/onprem-triton-bench"
HUB_PORT = 18810
FIRST_TRITON_PORT = 18820
IMAGE = "onprem-triton/debian12-systemd:latest"
CONTAINER_PREFIX = "onprem-triton-bench-"
MAX_HOSTS = 8
# The options of `scripts/sandbox.sh up` (and of the Molecule instances, CONTRIBUTING.md).
CONTAINER_OPTIONS = ["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
                     "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                     "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v", "/var/lib/docker",
                     "--tmpfs", "/run", "--tmpfs", "/run/lock",
                     "--network", "host", "--stop-signal", "SIGRTMIN+3"]
RECAP = re.compile(r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)")
PROFILE_LINE = re.compile(r"^(?P<name>.*?)\s-*\s(?P<seconds>\d+\.\d+)s$")
# serve.yml's plan report, one a host (debug msg, in the yaml or the json result format).
PLAN_LINE = re.compile(r"""^\s*"?msg"?:\s*['"]?(?P<host>\S+): (?P<verdict>rolls|steady)\b(?P<rest>.*?)['"]?$""")
# profile_tasks' banner under each task: "<date> (<previous task>)  <elapsed since the start>".
PROFILE_STAMP = re.compile(r"\(\d+:\d\d:\d\d\.\d+\)\s+(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d\.\d+)")
PLAY_BANNER = re.compile(r"^PLAY \[(?P<name>.*)\] \*+$")
# serve.yml's rolling pass (playbooks/serve_pass.yml under the name of the serving play before the plan).
ROLLING_PLAY = "Model repository, Triton server and the generation gate"
# The setting the third run changes on one host: shipped and documented (triton_server's
# argument_specs), it reaches only that host's unit (tritonserver --log-verbose).
ONE_CHANGE = {"triton_server_log_verbose": 1}


def host_name(index):
    """The container and inventory name of bench host `index` (1-based)."""
    return f"{CONTAINER_PREFIX}{index}"


def host_ports(index):
    """HTTP, gRPC and metrics ports of bench host `index` (1-based)."""
    http = FIRST_TRITON_PORT + 10 * (index - 1)
    return http, http + 1, http + 2


def sandbox_env():
    """The environment of sandbox.sh and ansible-playbook: the bench's own sandbox files and Hub port."""
    return dict(os.environ, ONPREM_TRITON_SANDBOX_DIR=SANDBOX_DIR, SANDBOX_HUB_PORT=str(HUB_PORT), PYTHON=sys.executable,
                ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"))


def listening(port):
    """True when something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def remove_containers():
    """Removes every bench container that exists (only the names this script gives)."""
    names = [host_name(index) for index in range(1, MAX_HOSTS + 1)]
    existing = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True)
    ours = [name for name in existing.stdout.split() if name in names]
    if ours:
        subprocess.run(["docker", "rm", "-f", "-v"] + ours, capture_output=True, check=True)


def start_containers(count):
    """Starts bench hosts 1..count, each a systemd container like `sandbox.sh up` starts."""
    for index in range(1, count + 1):
        name = host_name(index)
        subprocess.run(["docker", "run", "-d", "--name", name, "--hostname", name] + CONTAINER_OPTIONS + [IMAGE, "/lib/systemd/systemd"],
                       capture_output=True, check=True)
    for index in range(1, count + 1):
        # systemd must be up before Ansible manages units: wait until it answers (degraded is fine).
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(["docker", "exec", host_name(index), "systemctl", "is-system-running"],
                                   capture_output=True, text=True, check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{host_name(index)}: systemd did not come up (state {state!r})")
            time.sleep(0.5)


def write_inventory(workdir, count):
    """Inventory of bench hosts 1..count beside links to inventories/sandbox/group_vars; returns its path."""
    group_vars = os.path.join(workdir, "group_vars")
    if os.path.lexists(group_vars):
        os.unlink(group_vars)
    # The third run's change (change_one_host) of a previous bench starts undone.
    shutil.rmtree(os.path.join(workdir, "host_vars"), ignore_errors=True)
    os.symlink(os.path.join(ROOT, "inventories", "sandbox", "group_vars"), group_vars)
    lines = ["---", f"# Written by bench/fleet_scale.py: {count} sandbox hosts on this machine.",
             "all:", "  children:", "    triton_servers:", "      children:", "        triton_vllm:", "          hosts:"]
    for index in range(1, count + 1):
        http, grpc, metrics = host_ports(index)
        # Host variables win over group_vars: the bench's Hub double and distinct ports per host.
        lines += [f"            {host_name(index)}:",
                  "              ansible_connection: community.docker.docker",
                  "              ansible_python_interpreter: /usr/bin/python3",
                  f"              sandbox_hub_port: {HUB_PORT}",
                  f"              triton_server_name: bench{index}",
                  f"              triton_server_http_port: {http}",
                  f"              triton_server_grpc_port: {grpc}",
                  f"              triton_server_metrics_port: {metrics}",
                  # the weights' host-to-host copies (hf_model_fanout controller): one port each here
                  "              hf_model_peer_address: 127.0.0.1",
                  f"              hf_model_peer_port: {metrics + 3}"]
    path = os.path.join(workdir, "hosts.yml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def cpu_busy_seconds():
    """CPU-seconds this machine has spent busy since boot (all cores, all processes: /proc/stat's first line,
    everything but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    """User + system CPU-seconds of this process's finished children and all their waited-for descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_playbook(args, inventory, log_path):
    """Runs site.yml against `inventory`; returns (wall seconds, {host: recap counts}, output, CPU-seconds):
    the CPU-seconds are {'machine': busy CPU of the whole machine meanwhile (the controller, dockerd and
    every host: a quiet machine is assumed), 'controller': CPU of ansible-playbook and every process it
    started on this side (its workers, the docker CLI of each connection, rsync ...)}."""
    env = dict(sandbox_env(), ANSIBLE_STRATEGY=args.strategy, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               PROFILE_TASKS_TASK_OUTPUT_LIMIT="all", PROFILE_TASKS_SORT_ORDER="descending", COLUMNS="160")
    env.update(args.env)
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "site.yml", "-i", inventory,
               "--forks", str(args.forks)]
    start, cpu_start, controller_start = time.monotonic(), cpu_busy_seconds(), children_cpu_seconds()
    proc = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    elapsed = time.monotonic() - start
    cpu = {"machine": cpu_busy_seconds() - cpu_start, "controller": children_cpu_seconds() - controller_start}
    with open(log_path, "w", encoding="utf-8") as handle:
        handle.write(proc.stdout)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-6000:])
        raise SystemExit(f"ansible-playbook failed (rc {proc.returncode}); full output in {log_path}")
    recap = {}
    for line in proc.stdout.splitlines():
        match = RECAP.match(line)
        if match:
            recap[match.group("host")] = {key: int(value) for key, value in match.groupdict().items() if key != "host"}
    return elapsed, recap, proc.stdout, cpu


def change_one_host(workdir, host):
    """Writes ONE_CHANGE into `host`'s inventory host_vars beside the inventory (Ansible reads host_vars/ there)."""
    os.makedirs(os.path.join(workdir, "host_vars"), exist_ok=True)
    with open(os.path.join(workdir, "host_vars", f"{host}.yml"), "w", encoding="utf-8") as handle:
        handle.write("---\n# Written by bench/fleet_scale.py: the one-host-changed run's change.\n")
        handle.writelines(f"{name}: {value}\n" for name, value in ONE_CHANGE.items())


def plan_verdicts(output):
    """serve.yml's plan of a run as {host: (rolls|steady, the rest of its line)}."""
    verdicts = {}
    for line in output.splitlines():
        match = PLAN_LINE.match(line)
        if match:
            verdicts[match.group("host")] = (match.group("verdict"), match.group("rest").strip())
    return verdicts


def check_plan(output, count, rolling, log_path):
    """Fails the bench unless the plan reached all `count` hosts and rolled exactly the hosts in `rolling`."""
    verdicts = plan_verdicts(output)
    rolled = sorted(host for host, (verdict, _rest) in verdicts.items() if verdict == "rolls")
    if len(verdicts) != count or rolled != sorted(rolling):
        details = "; ".join(f"{host}: {verdict} {rest}" for host, (verdict, rest) in sorted(verdicts.items()))
        raise SystemExit(f"serve.yml's plan rolled {rolled or 'no host'} of {len(verdicts)} planned, expected "
                         f"{sorted(rolling) or 'no host'} of {count} ({details}); full output in {log_path}")
    return {host: rest for host, (verdict, rest) in verdicts.items() if verdict == "rolls"}


def play_seconds(output, name):
    """Wall seconds of the play(s) called `name` (serial batches included), from the profile_tasks stamps:
    the elapsed time at its first task to the elapsed time at the next other play's first task; 0 when absent."""
    start = end = None
    current = None
    for line in output.splitlines():
        banner = PLAY_BANNER.match(line)
        if banner:
            current = banner.group("name")
            continue
        stamp = PROFILE_STAMP.search(line)
        if not stamp or current is None:
            continue
        elapsed = int(stamp.group("h")) * 3600 + int(stamp.group("m")) * 60 + float(stamp.group("s"))
        if current == name and start is None:
            start = elapsed
        elif current != name and start is not None and end is None:
            end = elapsed
        current = None  # only the first stamp after each banner counts
    if start is None:
        return 0.0
    return (end if end is not None else start) - start


def profile_summary(output):
    """The profile_tasks summary of a run's output as [(seconds, task name)], slowest first."""
    lines = output.splitlines()
    starts = [number for number, line in enumerate(lines) if line.startswith("TASKS RECAP")]
    if not starts:
        return []
    tasks = []
    for line in lines[starts[-1] + 1:]:
        match = PROFILE_LINE.match(line.rstrip())
        if match and not line.startswith("="):
            tasks.append((float(match.group("seconds")), match.group("name").strip()))
    return sorted(tasks, reverse=True)


def measure(args, count):
    """Converges site.yml twice on `count` fresh hosts; returns the row of figures and the re-run's profile."""
    workdir = os.path.join(SANDBOX_DIR, f"fleet-{count}")
    os.makedirs(workdir, exist_ok=True)
    # Every N starts from nothing: fresh hosts and no weights on the controller yet.
    shutil.rmtree(os.path.join(SANDBOX_DIR, "hf_model_controller"), ignore_errors=True)
    inventory = write_inventory(workdir, count)
    remove_containers()
    try:
        start_containers(count)
        first, first_recap, _first_output, _first_cpu = run_playbook(args, inventory, os.path.join(args.out, f"fleet-{count}-first.log"))
        again_log = os.path.join(args.out, f"fleet-{count}-rerun.log")
        again, again_recap, output, again_cpu = run_playbook(args, inventory, again_log)
        check_plan(output, count, [], again_log)
        # The last host changes a serving setting in its inventory: the plan must roll it and no other.
        changed_host = host_name(count)
        change_one_host(workdir, changed_host)
        one_log = os.path.join(args.out, f"fleet-{count}-one.log")
        one, one_recap, one_output, _one_cpu = run_playbook(args, inventory, one_log)
        reasons = check_plan(one_output, count, [changed_host], one_log)
    finally:
        if not args.keep:
            remove_containers()
    profile = profile_summary(output)
    with open(profile_path(args, count), "w", encoding="utf-8") as handle:
        handle.write(f"# profile_tasks of the no-change re-run of site.yml, {count} host(s), {settings(args)}: {again:.1f} s wall\n")
        handle.writelines(f"{seconds:8.2f}s  {name}\n" for seconds, name in profile)
    row = {"hosts": count, "first": first, "again": again, "again_cpu": again_cpu,
           "first_changed": sum(host["changed"] for host in first_recap.values()),
           "again_changed": sum(host["changed"] for host in again_recap.values()),
           "one": one, "one_changed": sum(host["changed"] for host in one_recap.values()),
           # the rolling pass of the third run: one batch of the one host that changed
           "one_batch": play_seconds(one_output, ROLLING_PLAY), "again_batch": play_seconds(output, ROLLING_PLAY),
           "rolled": f"{changed_host}: rolls {reasons[changed_host]}"}
    return row, profile


def settings(args):
    """The settings a figure was taken with, in words."""
    return ", ".join([f"forks {args.forks}", f"strategy {args.strategy}"] + [f"{name}={value}" for name, value in args.env.items()])


def profile_path(args, count):
    """Where the re-run's profile of N=`count` is saved."""
    return os.path.join(args.out, f"fleet-{count}-rerun-profile.txt")


def default_forks():
    """The forks ansible.cfg sets (what a plain `ansible-playbook site.yml` uses), else Ansible's default 5."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "ansible.cfg"))
    return config.getint("defaults", "forks", fallback=5)


def preflight(args):
    """Refuses to start when a port the bench needs is taken or the hosts asked for are out of range."""
    if any(count < 1 or count > MAX_HOSTS for count in args.hosts):
        raise SystemExit(f"--hosts: 1 to {MAX_HOSTS}")
    ports = [port for index in range(1, max(args.hosts) + 1) for port in host_ports(index)]
    taken = [port for port in ports if listening(port)]
    if taken:
        raise SystemExit(f"ports in use on 127.0.0.1: {taken} (another bench or sandbox running?)")
    if listening(HUB_PORT) and not os.path.exists(os.path.join(SANDBOX_DIR, "hf_hub.pid")):
        raise SystemExit(f"port {HUB_PORT} is in use by something that is not this bench's Hub double")


def main(args):
    """Brings up the services, measures each N, prints the table and the re-run's slowest tasks."""
    preflight(args)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    sandbox = os.path.join(ROOT, "scripts", "sandbox.sh")
    try:
        subprocess.run([sandbox, "services"], cwd=ROOT, env=sandbox_env(), check=True)
        print(f"site.yml on N sandbox hosts (Debian 12 systemd containers, nested Docker), {settings(args)}")
        print(f"{'hosts':<5} {'forks':<6} {'strategy':<11} {'first s':>9} {'changed':>8} {'re-run s':>9} {'changed':>8} "
              f"{'CPU s':>7} {'ctl CPU':>8} {'busy':>5} {'one s':>9} {'changed':>8} {'its batch s':>12}")
        sys.stdout.flush()
        for count in args.hosts:
            row, profile = measure(args, count)
            rows.append((row, profile))
            print(f"{count:<5} {args.forks:<6} {args.strategy:<11} {row['first']:>9.1f} {row['first_changed']:>8} "
                  f"{row['again']:>9.1f} {row['again_changed']:>8} {row['again_cpu']['machine']:>7.0f} "
                  f"{row['again_cpu']['controller']:>8.0f} {busy_share(row):>4.0%} "
                  f"{row['one']:>9.1f} {row['one_changed']:>8} "
                  f"{row['one_batch']:>12.1f}")
            sys.stdout.flush()
    finally:
        subprocess.run([sandbox, "stop-services"], cwd=ROOT, env=sandbox_env(), check=False)
    print("\nplan of each one-host-changed run (the only host it rolled): "
          + "; ".join(f"N={row['hosts']} {row['rolled']}" for row, _profile in rows))
    print_targets([row for row, _profile in rows])
    for row, profile in rows:
        print(f"\nN={row['hosts']}, no-change re-run {row['again']:.1f} s: the 10 slowest tasks "
              f"(profile_tasks; every task in {profile_path(args, row['hosts'])})")
        for seconds, name in profile[:10]:
            print(f"  {seconds:7.2f}s  {name}")


def busy_share(row):
    """How busy the machine's cores were in the no-change re-run of `row` (1.0: every core all the time)."""
    return row["again_cpu"]["machine"] / (row["again"] * os.cpu_count())


def print_targets(rows):
    """The ratios issue 15's targets name, from the rows of this run."""
    by_hosts = {row["hosts"]: row for row in rows}
    print("\nissue 15's targets, from this run:")
    if 1 in by_hosts and len(by_hosts) > 1:
        largest = by_hosts[max(by_hosts)]
        print(f"  no-change re-run, {largest['hosts']} hosts / 1 host: {largest['again']:.1f} / {by_hosts[1]['again']:.1f} s "
              f"= {largest['again'] / by_hosts[1]['again']:.2f} x (target <= 1.5 x)")
        # The floor this machine puts under the ratio: the re-run's CPU work spread over every core at once.
        cores, count, cpu = os.cpu_count(), largest["hosts"], largest["again_cpu"]
        one_host = by_hosts[1]["again"]
        print(f"  CPU of that re-run: {cpu['machine']:.0f} CPU-s busy ({cpu['machine'] / count:.1f} a host, "
              f"{busy_share(largest):.0%} of {cores} cores); even with every core busy all along it cannot take less "
              f"than {cpu['machine'] / cores:.1f} s = {cpu['machine'] / cores / one_host:.2f} x the 1-host re-run; "
              f"1.5 x needs at most {1.5 * one_host * cores / count:.1f} CPU-s a host")
        # On a real fleet each host runs its modules on its own CPU: only the controller's share is shared.
        print(f"  of it the controller's own (ansible-playbook, its workers, each connection's docker CLI): "
              f"{cpu['controller']:.0f} CPU-s ({cpu['controller'] / count:.1f} a host), the rest the hosts' modules and "
              f"dockerd's execs; with hosts of their own, the controller's part on these {cores} cores alone takes "
              f"{cpu['controller'] / cores:.1f} s = {cpu['controller'] / cores / one_host:.2f} x the 1-host re-run")
    for row in rows:
        print(f"  N={row['hosts']}: no-change re-run / first run: {row['again']:.1f} / {row['first']:.1f} s "
              f"= {100 * row['again'] / row['first']:.0f}% (target <= 25%); "
              f"one host changed: {row['one']:.1f} s against re-run + its rolling batch {row['again']:.1f} + {row['one_batch']:.1f} "
              f"= {row['again'] + row['one_batch']:.1f} s ({row['one'] - row['again'] - row['one_batch']:+.1f} s; target <= 0)")


def parse_args():
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4, 8], help="fleet sizes to measure, in order")
    parser.add_argument("--forks", type=int, default=default_forks(), help="ansible-playbook --forks (default: ansible.cfg's)")
    parser.add_argument("--strategy", default="linear", help="strategy plugin (ANSIBLE_STRATEGY): linear, free, host_pinned, ...")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for ansible-playbook, to compare a setting (e.g. ANSIBLE_PIPELINING=True); repeatable")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="where the logs and profiles go")
    parser.add_argument("--keep", action="store_true", help="leave each N's containers running until the next N (remove them by hand)")
    args = parser.parse_args()
    args.out = os.path.abspath(args.out)
    if any("=" not in pair for pair in args.env):
        parser.error("--env takes NAME=VALUE")
    args.env = dict(pair.split("=", 1) for pair in args.env)
    return args


def _terminate(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    main(parse_args())
