# SPDX-License-Identifier: Apache-2.0
"""Fan-out figures for the hf_model role: bytes served by the Hub and wall time
for every-host-from-the-Hub (hf_model_fanout=hub) against download-once-and-
distribute (hf_model_fanout=controller), for 1, 3 and 6 hosts, and the time of
a re-run when nothing changed.

Runs the real role with ansible-playbook against N "hosts" that are local
connections with their own hf_model_dir, and the Hub test double
(tests/fixtures/hf_hub) behind one throttled link shared by all downloads, so
that the Hub side behaves like a site's internet uplink. Distribution is rsync
on the same machine here, so it measures the protocol cost, not a LAN.
Not run by CI.

    python bench/hf_model_fanout.py [--hosts 1,3,6] [--lfs-mb 32] [--link-mbps 400]
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# The Hub double is a script folder, not a package: load it under a name of its own.
_SPEC = importlib.util.spec_from_file_location("hf_hub_double", os.path.join(ROOT, "tests/fixtures/hf_hub/server.py"))
hub_double = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(hub_double)
PORT = 18330
ENDPOINT = "http://127.0.0.1:%d" % PORT

PLAYBOOK = """
- name: Sync the models
  hosts: all
  gather_facts: false
  roles:
    - role: onprem.triton.hf_model
"""


def hub_call(path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(ENDPOINT + path, data=data)) as response:
        return json.load(response)


def write_inventory(workdir, hosts, fanout):
    lines = ["all:", "  vars:",
             "    ansible_connection: local",
             "    ansible_python_interpreter: %s" % sys.executable,
             "    hf_model_fanout: %s" % fanout,
             "    hf_model_endpoint: %s" % ENDPOINT,
             "    hf_model_client_install: false",
             "    hf_model_poll_interval: 1",
             "    hf_model_min_free_bytes: 0",
             "    hf_model_controller_dir: %s/controller" % workdir,
             "    triton_models: [{name: tiny-llm, serve: false,"
             " weights: {repo_id: onprem-test/tiny-llm, ignore_patterns: ['original/*']}}]",
             "  hosts:"]
    for index in range(hosts):
        lines += ["    host%d:" % index, "      hf_model_dir: %s/host%d/models" % (workdir, index)]
    path = os.path.join(workdir, "inventory-%s.yml" % fanout)
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def run_playbook(workdir, inventory):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"),
               HF_HOME=os.path.join(workdir, "hf_home"))
    playbook = os.path.join(workdir, "sync.yml")
    start = time.time()
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory,
                           playbook], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.time() - start
    if ARGS.show_output:
        sys.stdout.write(proc.stdout)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        raise SystemExit("ansible-playbook failed (%s)" % inventory)
    return elapsed


def measure(hosts, fanout, base):
    workdir = tempfile.mkdtemp(prefix="hf-%s-%d-" % (fanout, hosts), dir=base)
    with open(os.path.join(workdir, "sync.yml"), "w") as handle:
        handle.write(PLAYBOOK)
    inventory = write_inventory(workdir, hosts, fanout)
    hub_call("/_reset", {})
    hub_call("/_control", {"rate": ARGS.link_mbps * 1000 * 1000 // 8})
    first = run_playbook(workdir, inventory)
    first_bytes = hub_call("/_stats")["bytes_sent"]
    hub_call("/_reset", {})
    again = run_playbook(workdir, inventory)
    again_bytes = hub_call("/_stats")["bytes_sent"]
    shutil.rmtree(workdir)
    return first_bytes, first, again, again_bytes


def main():
    base = tempfile.mkdtemp(prefix="hf-model-bench-")
    double = hub_double.spawn(PORT, "--lfs-mb", str(ARGS.lfs_mb))
    try:
        print("model: onprem-test/tiny-llm (%.0f MiB LFS shard), Hub link %d Mbit/s shared by all downloads"
              % (ARGS.lfs_mb, ARGS.link_mbps))
        print("%-5s %-22s %14s %9s %12s %14s" % ("hosts", "fan-out", "Hub bytes", "wall s", "re-run s",
                                                 "re-run bytes"))
        for hosts in ARGS.hosts:
            for fanout, label in (("hub", "hub per host"), ("controller", "download once + rsync")):
                got, wall, again, again_bytes = measure(hosts, fanout, base)
                print("%-5d %-22s %14d %9.1f %12.1f %14d" % (hosts, label, got, wall, again, again_bytes))
                sys.stdout.flush()
    finally:
        double.terminate()
        double.wait(10)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=lambda v: [int(x) for x in v.split(",")], default=[1, 3, 6])
    parser.add_argument("--lfs-mb", type=float, default=32)
    parser.add_argument("--link-mbps", type=int, default=400, help="the Hub uplink, Mbit/s")
    parser.add_argument("--show-output", action="store_true", help="print the playbook output")
    ARGS = parser.parse_args()
    main()
