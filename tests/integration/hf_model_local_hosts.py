"""Local "hosts" for the hf_model role: each its own hf_model_dir and weights peer port on
loopback, the controller on this machine, tiny-llm from the Hub double. Used by
tests/integration/test_hf_model_fanout.py and bench/hf_model_fanout.py."""

import json
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The role on every host, then each host's hf_model_synced written to <report_dir>/<host>.json.
PLAYBOOK = os.path.join(ROOT, "tests", "integration", "playbooks", "hf_model_sync_report.yml")
MODELS = [{"name": "tiny-llm", "serve": False,
           "weights": {"repo_id": "onprem-test/tiny-llm", "ignore_patterns": ["original/*"]}}]


def write_inventory(path, workdir, hosts, endpoint, first_peer_port, **settings):
    """An inventory of `hosts` local hosts host0..hostN-1 under workdir (settings: more group
    variables, e.g. hf_model_fanout). Written as JSON, which Ansible reads as YAML."""
    variables = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "hf_model_endpoint": endpoint,
        "hf_model_poll_interval": 1,
        "hf_model_min_free_bytes": 0,
        "hf_model_controller_dir": os.path.join(str(workdir), "controller"),
        # the peer address left to the role's default (ansible_host), as in an inventory
        "ansible_host": "127.0.0.1",
        "report_dir": os.path.join(str(workdir), "report"),
        "triton_models": MODELS,
    }
    variables.update(settings)
    members = dict(("host%d" % index, {"hf_model_dir": os.path.join(str(workdir), "host%d" % index, "models"),
                                       "hf_model_peer_port": first_peer_port + index})
                   for index in range(hosts))
    with open(str(path), "w") as handle:
        json.dump({"all": {"vars": variables, "hosts": members}}, handle, indent=2)
    return str(path)
