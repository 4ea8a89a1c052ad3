# SPDX-License-Identifier: Apache-2.0
"""Fan-out figures for the hf_model role, for 1, 2, 4 and 8 hosts: bytes served by the Hub,
bytes the controller sent, bytes hosts sent each other, and wall time, for every host from the
Hub (hf_model_fanout=hub), download once and send from the controller to every host
(hf_model_fanout=controller, hf_model_controller_copies = the hosts) and download once and copy
host to host (hf_model_fanout=controller, the default hf_model_controller_copies 1); then a
re-run when nothing changed and a re-run after one host lost its copy.

Runs the real role with ansible-playbook against N "hosts" that are local
connections with their own hf_model_dir, and the Hub test double
(tests/fixtures/hf_hub) behind one throttled link shared by all downloads, so
that the Hub side behaves like a site's internet uplink. Distribution is rsync
and HTTP on the same machine here, so it measures the protocol cost and the bytes each side
sends, not a LAN.
Not run by CI.

    python bench/hf_model_fanout.py [--hosts 1,2,4,8] [--lfs-mb 32] [--link-mbps 400]
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
sys.path.insert(0, ROOT)
from tests.integration.hf_model_local_hosts import PLAYBOOK, write_inventory  # noqa: E402 pylint: disable=wrong-import-position
PORT = 18330
PEER_PORT = 18340
ENDPOINT = "http://127.0.0.1:%d" % PORT


def hub_call(path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(ENDPOINT + path, data=data)) as response:
        return json.load(response)


def inventory_for(workdir, hosts, fanout, copies):
    path = os.path.join(workdir, "inventory-%s-%d.yml" % (fanout, copies))
    return write_inventory(path, workdir, hosts, ENDPOINT, PEER_PORT, hf_model_fanout=fanout,
                           hf_model_client_install=False, hf_model_controller_copies=copies)


def run_playbook(workdir, inventory):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".ansible", "collections"),
               HF_HOME=os.path.join(workdir, "hf_home"))
    start = time.time()
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory,
                           PLAYBOOK], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.time() - start
    if ARGS.show_output:
        sys.stdout.write(proc.stdout)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
        raise SystemExit("ansible-playbook failed (%s)" % inventory)
    return elapsed


def transfers(workdir):
    """(bytes the controller sent, bytes hosts sent each other) in the last run, from each host's
    hf_model_synced."""
    controller = peers = 0
    report = os.path.join(workdir, "report")
    for name in os.listdir(report):
        with open(os.path.join(report, name)) as handle:
            synced = json.load(handle)
        for model in synced.values():
            if model.get("received_from") == "controller":
                controller += model["bytes"]
        peers += max([m.get("bytes_sent_to_peers", 0) for m in synced.values()] or [0])
        os.unlink(os.path.join(report, name))
    return controller, peers


def one_run(workdir, inventory):
    hub_call("/_reset", {})
    wall = run_playbook(workdir, inventory)
    controller, peers = transfers(workdir)
    return {"hub": hub_call("/_stats")["bytes_sent"], "controller": controller, "peers": peers, "wall": wall}


def measure(hosts, fanout, copies, base):
    """First run, re-run with nothing changed, re-run after the last host lost its copy."""
    workdir = tempfile.mkdtemp(prefix="hf-%s-%d-" % (fanout, hosts), dir=base)
    os.makedirs(os.path.join(workdir, "report"))
    inventory = inventory_for(workdir, hosts, fanout, copies)
    hub_call("/_control", {"rate": ARGS.link_mbps * 1000 * 1000 // 8})
    runs = [one_run(workdir, inventory), one_run(workdir, inventory)]
    shutil.rmtree(os.path.join(workdir, "host%d" % (hosts - 1)))
    runs.append(one_run(workdir, inventory))
    shutil.rmtree(workdir)
    return runs


def main():
    base = tempfile.mkdtemp(prefix="hf-model-bench-")
    double = hub_double.spawn(PORT, "--lfs-mb", str(ARGS.lfs_mb))
    try:
        print("model: onprem-test/tiny-llm (%.0f MiB LFS shard), Hub link %d Mbit/s shared by all downloads"
              % (ARGS.lfs_mb, ARGS.link_mbps))
        header = ("hosts", "fan-out", "run", "Hub bytes", "controller sent", "hosts sent", "wall s")
        print("%-5s %-26s %-16s %12s %14s %12s %8s" % header)
        for hosts in ARGS.hosts:
            for fanout, copies, label in (("hub", 1, "hub per host"),
                                          ("controller", hosts, "controller to every host"),
                                          ("controller", 1, "controller once + peers")):
                for run, figures in zip(("first", "no change", "one host lost"), measure(hosts, fanout, copies, base)):
                    row = (hosts, label, run, figures["hub"], figures["controller"], figures["peers"], figures["wall"])
                    print("%-5d %-26s %-16s %12d %14d %12d %8.1f" % row)
                    sys.stdout.flush()
    finally:
        double.terminate()
        double.wait(10)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4, 8])
    parser.add_argument("--lfs-mb", type=float, default=32)
    parser.add_argument("--link-mbps", type=int, default=400, help="the Hub uplink, Mbit/s")
    parser.add_argument("--show-output", action="store_true", help="print the playbook output")
    ARGS = parser.parse_args()
    main()
