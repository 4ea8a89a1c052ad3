#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: hf_model_peer
short_description: Copy synced model weights from host to host, verified against the controller's manifest
version_added: "0.2.0"
description:
  - The host-to-host half of M(onprem.triton.hf_model)'s controller fan-out. The controller sends each
    file to the first host(s) only; the others pull from a host that already holds the verified copy,
    so the controller's uplink carries each file once whatever the fleet size.
  - With O(mode=serve) the host serves the copies named in O(copies) (folders C(.versions/<name>@<version>)
    under O(models_dir) that have a manifest) over HTTP on O(bind_address):O(port), read-only, only the
    files their manifests list, only to requests carrying O(token), until O(stop_file) exists or
    O(serve_seconds) have passed. Meant to run with C(async) and C(poll=0).
  - With O(mode=receive) the host pulls one copy from O(source_url) into its staging folder (resuming what
    an interrupted pull left there), refuses it unless the peer's manifest has the sha256 O(manifest_sha256)
    (the controller's), then verifies the size and sha256 of every file and switches to it atomically, as
    for a copy sent by the controller. A failed pull leaves the served copy untouched.
author:
  - onprem.triton maintainers (@onprem-triton)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: O(mode=receive) reports whether the copy would be pulled; O(mode=serve) serves nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  mode:
    description: V(serve) the copies this host holds, or V(receive) one copy from a peer.
    type: str
    choices: [serve, receive]
    required: true
  models_dir:
    description: Absolute directory holding the models (the role's C(hf_model_dir)).
    type: path
    required: true
  token:
    description: Secret of this run, shared by the servers and the pullers. Never logged.
    type: str
    required: true
  copies:
    description: For O(mode=serve), the copies to serve, each C(<name>@<version>).
    type: list
    elements: str
    default: []
  bind_address:
    description: For O(mode=serve), the address to listen on.
    type: str
    default: 127.0.0.1
  port:
    description: For O(mode=serve), the TCP port to listen on.
    type: int
    default: 18899
  stop_file:
    description: For O(mode=serve), serving stops when this file exists.
    type: path
  serve_seconds:
    description: For O(mode=serve), the longest time to serve.
    type: int
    default: 3600
  name:
    description: For O(mode=receive), directory name of the model under O(models_dir).
    type: str
  commit_sha:
    description: For O(mode=receive), the commit of the copy.
    type: str
  version:
    description: For O(mode=receive), the version of the copy (commit and file selection, as the download returned it).
    type: str
  source_url:
    description: For O(mode=receive), C(http://<address>:<port>) of a host serving the copy.
    type: str
  manifest_sha256:
    description: For O(mode=receive), sha256 of the controller's manifest of the copy; a peer's that differs is refused.
    type: str
  keep_versions:
    description: For O(mode=receive), how many older copies to keep (as M(onprem.triton.hf_model_sync)).
    type: int
    default: 1
  keep_referenced_in:
    description: For O(mode=receive), folders whose files name copies that are never pruned (as M(onprem.triton.hf_model_sync)).
    type: list
    elements: str
    default: []
notes:
  - Plain HTTP inside the site's network, for the few minutes of a run, with a token per run. Hosts must reach each
    other on O(port); where they cannot, the role sends every host its copy from the controller.
"""

EXAMPLES = r"""
- name: Serve the verified copies of this host to the others, for the run
  onprem.triton.hf_model_peer:
    mode: serve
    models_dir: /opt/models
    copies: ["llama-3.1-8b-instruct@0e9e39f249a16976918f6564b8830bc894c89659-1b2c3d4e"]
    bind_address: "{{ ansible_host }}"
    port: 18899
    token: "{{ run_token }}"
    stop_file: /run/onprem-triton-hf-peer.stop
  async: 3600
  poll: 0

- name: Pull the copy from a host that has it
  onprem.triton.hf_model_peer:
    mode: receive
    models_dir: /opt/models
    name: llama-3.1-8b-instruct
    commit_sha: 0e9e39f249a16976918f6564b8830bc894c89659
    version: 0e9e39f249a16976918f6564b8830bc894c89659-1b2c3d4e
    source_url: http://10.0.0.11:18899
    token: "{{ run_token }}"
    manifest_sha256: "{{ controller_manifest.stat.checksum }}"
"""

RETURN = r"""
bytes_received:
  description: Bytes pulled from the peer in this run (what an earlier, interrupted pull left is not counted).
  returned: when mode is receive
  type: int
  sample: 16060522496
bytes_sent:
  description: Bytes this host served to its peers.
  returned: when mode is serve
  type: int
  sample: 32121044992
requests:
  description: File requests this host served.
  returned: when mode is serve
  type: int
  sample: 18
refused:
  description: Requests refused (no or wrong token, a file not served).
  returned: when mode is serve
  type: int
  sample: 0
version:
  description: Version installed (as M(onprem.triton.hf_model_sync) returns it).
  returned: when mode is receive
  type: str
  sample: 0e9e39f249a16976918f6564b8830bc894c89659-1b2c3d4e
msg:
  description: What happened.
  returned: always
  type: str
  sample: llama-3.1-8b-instruct installed at 0e9e39f249a16976918f6564b8830bc894c89659
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.onprem.triton.plugins.module_utils.hf_model import ModelSync, SyncError
from ansible_collections.onprem.triton.plugins.module_utils.hf_model_peer import pull, serve

ARGUMENT_SPEC = dict(
    mode=dict(type="str", required=True, choices=["serve", "receive"]),
    models_dir=dict(type="path", required=True),
    token=dict(type="str", required=True, no_log=True),
    copies=dict(type="list", elements="str", default=[]),
    bind_address=dict(type="str", default="127.0.0.1"),
    port=dict(type="int", default=18899),
    stop_file=dict(type="path"),
    serve_seconds=dict(type="int", default=3600),
    name=dict(type="str"),
    commit_sha=dict(type="str"),
    version=dict(type="str"),
    source_url=dict(type="str"),
    manifest_sha256=dict(type="str"),
    keep_versions=dict(type="int", default=1),
    keep_referenced_in=dict(type="list", elements="str", default=[]),
)


def receive(params, check_mode):
    sync = ModelSync(dict(params, operation="install", min_free_bytes=0), check_mode=check_mode)
    sync.validate()
    if sync.is_current(sync.current()):
        return dict(sync.install_received(), bytes_received=0)
    if check_mode:
        return {"changed": True, "name": params["name"], "bytes_received": 0,
                "msg": "would pull %s from %s" % (params["name"], params["source_url"])}
    sync.ensure_dirs()
    staging = sync.staging_dir(params["version"] or params["commit_sha"])
    received = pull(params["source_url"], params["token"], "%s@%s" % (params["name"], params["version"]),
                    staging, params["manifest_sha256"])
    return dict(sync.install_received(), bytes_received=received)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[
            ("mode", "serve", ("stop_file",)),
            ("mode", "receive", ("name", "commit_sha", "version", "source_url", "manifest_sha256")),
        ],
        supports_check_mode=True,
    )
    params = module.params
    if params["mode"] == "serve":
        if module.check_mode:
            module.exit_json(changed=False, bytes_sent=0, requests=0, refused=0, msg="check mode: nothing served")
        try:
            stats = serve(params["bind_address"], params["port"], params["models_dir"] + "/.versions", params["copies"],
                          params["token"], params["stop_file"], params["serve_seconds"])
        except (OSError, IOError) as exc:  # the address is not this host's, or the port is taken
            module.fail_json(msg="cannot serve on %s:%d: %s" % (params["bind_address"], params["port"], exc))
        module.exit_json(changed=False, msg="served %s (%d bytes, %d requests, %d refused; stopped by %s)"
                         % (", ".join(stats["served"]) or "nothing", stats["bytes_sent"], stats["requests"],
                            stats["refused"], stats["stopped_by"]), **stats)
    try:
        result = receive(params, module.check_mode)
    except SyncError as exc:
        module.fail_json(msg="%s: %s" % (params["name"], exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
