#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: hf_model_sync
short_description: Sync a model from the Hugging Face Hub into a models directory, verified and atomic
version_added: "0.1.0"
description:
  - Resolves a revision (branch, tag or commit) of a Hub model to its commit sha and compares it with
    the manifest of the copy installed under O(models_dir); when they match nothing is downloaded.
  - Otherwise downloads the selected files into a staging directory on the same filesystem, verifies
    the size of every file, the sha256 of LFS files and the git blob id of the others against the
    Hub's metadata, writes a manifest, moves the copy to C(.versions/<name>@<commit>) and swaps the
    symlink C(<models_dir>/<name>) in one rename. A failed or interrupted sync leaves the served copy
    untouched; the next run resumes the staged download.
  - With O(operation=plan) and O(operation=install) the module serves hosts that receive a copy made
    elsewhere (download once, distribute over the LAN); these never contact the Hub.
  - Uses the HTTP download path of C(huggingface_hub) (the Xet path is disabled) and honours
    C(HF_ENDPOINT)-style mirrors through O(endpoint).
author:
  - onprem.triton maintainers (@onprem-triton)
requirements:
  - huggingface_hub >= 0.30 on the host that downloads (O(operation=download) without O(offline))
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Resolves the revision and reports what would be downloaded (RV(would_download)).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  name:
    description: Directory name of the model under O(models_dir); the path Triton reads is C(<models_dir>/<name>).
    type: str
    required: true
  models_dir:
    description: Absolute directory holding the models (mounted read-only into the Triton container).
    type: path
    required: true
  operation:
    description:
      - V(download) syncs from the Hub (or confirms the installed copy with O(offline)).
      - V(plan) tells whether O(commit_sha) must be transferred to this host and checks free space for it.
      - V(install) verifies the copy transferred into RV(staging_path) against its manifest and switches to it.
    type: str
    choices: [download, plan, install]
    default: download
  repo_id:
    description: Hub model id, C(owner/name). Required for O(operation=download).
    type: str
  revision:
    description: Branch, tag or 40-character commit sha.
    type: str
    default: main
  allow_patterns:
    description: Only files matching one of these glob patterns (for example C(*.safetensors), C(tokenizer*)).
    type: list
    elements: str
  ignore_patterns:
    description: Files matching one of these glob patterns are skipped (for example C(original/*)).
    type: list
    elements: str
  token:
    description:
      - Hugging Face access token. Never logged. When omitted, C(huggingface_hub) reads C(HF_TOKEN) from the
        environment of the module.
    type: str
  endpoint:
    description: Hub URL, for an on-prem mirror. Defaults to C(https://huggingface.co).
    type: str
  offline:
    description:
      - Never contact the Hub (C(HF_HUB_OFFLINE) hosts); succeed only when O(revision) is installed already.
    type: bool
    default: false
  commit_sha:
    description: Commit to plan for or install, for O(operation=plan) and O(operation=install).
    type: str
  version:
    description:
      - RV(version) of the copy made by the downloading host (commit and file selection), for O(operation=plan)
        and O(operation=install), so that a changed selection on the same commit is sent again.
    type: str
  total_bytes:
    description: Size of the commit's files, for the free-space check of O(operation=plan).
    type: int
    default: 0
  min_free_bytes:
    description: Bytes that must stay free on the filesystem of O(models_dir) after the download.
    type: int
    default: 1073741824
  keep_versions:
    description: How many older copies of the model to keep under C(.versions) for a rollback.
    type: int
    default: 1
  keep_referenced_in:
    description:
      - Folders (glob patterns) whose files name the copies they serve from, e.g. the model repositories'
        generations. An older copy that a file there names as C(.versions/<name>@<version>) is never pruned,
        whatever O(keep_versions) says, so that a rollback to a kept generation finds its weights.
    type: list
    elements: str
    default: []
notes:
  - Long downloads are meant to run with C(async) and a poll on C(<models_dir>/.staging/<name>.progress.json);
    the role M(onprem.triton.hf_model) does that.
"""

EXAMPLES = r"""
- name: Sync Llama 3.1 8B Instruct, safetensors and tokenizer only
  onprem.triton.hf_model_sync:
    name: llama-3.1-8b-instruct
    repo_id: meta-llama/Llama-3.1-8B-Instruct
    revision: main
    allow_patterns: ["*.safetensors", "*.json", "tokenizer*"]
    ignore_patterns: ["original/*"]
    models_dir: /opt/models
    token: "{{ vault_hf_token }}"
  register: llama

- name: On a receiving host, ask whether the controller's copy must be sent
  onprem.triton.hf_model_sync:
    operation: plan
    name: llama-3.1-8b-instruct
    models_dir: /opt/models
    commit_sha: "{{ llama.commit_sha }}"
    total_bytes: "{{ llama.total_bytes }}"
"""

RETURN = r"""
path:
  description: Stable path of the model (a symlink to the verified copy); give this to Triton.
  returned: always
  type: str
  sample: /opt/models/llama-3.1-8b-instruct
version:
  description: Identity of the copy, C(<commit>-<8 hex of the file selection>).
  returned: when operation is download or install
  type: str
  sample: 0e9e39f249a16976918f6564b8830bc894c89659-1b2c3d4e
version_path:
  description: Directory of the copy the symlink points to.
  returned: when operation is download or install
  type: str
  sample: /opt/models/.versions/llama-3.1-8b-instruct@0e9e39f249a16976918f6564b8830bc894c89659-1b2c3d4e
commit_sha:
  description: Commit the revision resolved to.
  returned: always
  type: str
  sample: 0e9e39f249a16976918f6564b8830bc894c89659
repo_id:
  description: Hub model id.
  returned: when operation is download or install
  type: str
  sample: meta-llama/Llama-3.1-8B-Instruct
revision:
  description: Revision asked for.
  returned: when operation is download or install
  type: str
  sample: main
files:
  description: Files of the copy, relative to RV(path).
  returned: when operation is download or install
  type: list
  elements: str
  sample: [config.json, model-00001-of-00004.safetensors]
total_bytes:
  description: Size of those files.
  returned: when operation is download or install
  type: int
  sample: 16060522496
bytes_downloaded:
  description: Bytes fetched from the Hub by this run (0 when nothing changed; less than the total when resumed).
  returned: when operation is download or install
  type: int
  sample: 0
would_download:
  description: Files a real run would download.
  returned: in check mode, when a download is needed
  type: list
  elements: str
  sample: [model-00001-of-00004.safetensors]
bytes_to_download:
  description: Bytes a real run would download.
  returned: in check mode, when a download is needed
  type: int
  sample: 16060522496
needed:
  description: Whether O(commit_sha) must be transferred to this host.
  returned: when operation is plan
  type: bool
  sample: true
staging_path:
  description: Where a transfer must put the copy (same filesystem as O(models_dir)).
  returned: when operation is plan
  type: str
  sample: /opt/models/.staging/llama-3.1-8b-instruct@0e9e39f249a16976918f6564b8830bc894c89659-1b2c3d4e
current_commit_sha:
  description: Commit installed before this run, if any.
  returned: when operation is plan
  type: str
  sample: null
msg:
  description: What happened.
  returned: always
  type: str
  sample: llama-3.1-8b-instruct synced to 0e9e39f249a16976918f6564b8830bc894c89659
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.onprem.triton.plugins.module_utils.hf_model import (
    HUB_IMPORT_ERROR,
    ModelSync,
    SyncError,
)

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    models_dir=dict(type="path", required=True),
    operation=dict(type="str", default="download", choices=["download", "plan", "install"]),
    repo_id=dict(type="str"),
    revision=dict(type="str", default="main"),
    allow_patterns=dict(type="list", elements="str"),
    ignore_patterns=dict(type="list", elements="str"),
    token=dict(type="str", no_log=True),
    endpoint=dict(type="str"),
    offline=dict(type="bool", default=False),
    commit_sha=dict(type="str"),
    version=dict(type="str"),
    total_bytes=dict(type="int", default=0),
    min_free_bytes=dict(type="int", default=1073741824),
    keep_versions=dict(type="int", default=1),
    keep_referenced_in=dict(type="list", elements="str", default=[]),
)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[
            ("operation", "download", ("repo_id",)),
            ("operation", "plan", ("commit_sha",)),
            ("operation", "install", ("commit_sha",)),
        ],
        supports_check_mode=True,
    )
    needs_hub = module.params["operation"] == "download" and not module.params["offline"]
    if needs_hub and HUB_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("huggingface_hub"), exception=HUB_IMPORT_ERROR)
    try:
        result = ModelSync(module.params, check_mode=module.check_mode).run()
    except SyncError as exc:
        module.fail_json(msg="%s: %s" % (module.params["name"], exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
