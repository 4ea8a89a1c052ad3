#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
# Copyright: onprem.triton contributors

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: triton_model_repository
short_description: Install a Triton model repository as an immutable generation and switch to it atomically
version_added: "0.1.0"
description:
  - Writes the given files (and copies of code folders already on the host) into a new generation folder
    C(<root>/generations/<id>), where C(<id>) is a digest of the content, then points the C(<root>/current)
    symlink at it with an atomic rename. The generation C(current) pointed at before is kept and linked
    as C(<root>/previous) for a rollback.
  - Nothing is written when C(current) already holds the same content, so the module is idempotent and
    reports which models changed, for the server role to reload only those.
  - With I(state=rollback) it points C(current) back at O(generation) (default the C(previous) one) and
    C(previous) at the generation it leaves, so the two links and the result (the facts the role
    publishes) stay consistent. This is the collection's one rollback of a repository; triton_server's
    rollback to the last configuration that passed the gate comes here too.
  - Validation happens before this module runs (module M(onprem.triton.triton_model_repository_render) on
    the controller); this module only installs and switches.
author:
  - onprem.triton contributors (@onprem-triton)
options:
  root:
    description: Folder holding C(generations/), C(current) and C(previous).
    type: path
    required: true
  state:
    description: C(present) installs the content; C(rollback) switches C(current) back to O(generation).
    type: str
    choices: [present, rollback]
    default: present
  generation:
    description:
      - With O(state=rollback), the generation to go back to - its id, C(generations/<id>) (what the links and
        C(current_target) hold) or its absolute path under O(root). Default - the one C(previous) points at.
      - It must be a generation of this repository that is still on disk.
    type: str
  files:
    description:
      - Files to write, relative path inside the repository to text content.
      - A file here replaces the file of the same path in a folder of O(copies) (the role's model.yaml wins over upstream's).
    type: dict
    default: {}
  copies:
    description:
      - Folders to copy from the host into the repository, relative destination to absolute source folder
        (the TensorRT-LLM python models copied out of the container image).
    type: dict
    default: {}
  model_dirs:
    description:
      - Model name to the repository folders that belong to it (a TensorRT-LLM ensemble and its parts), so
        that C(changed_models) names models rather than folders. Folders not listed count as their own model.
    type: dict
    default: {}
  keep:
    description: Generations kept on disk (current and previous always are).
    type: int
    default: 3
attributes:
  check_mode:
    support: full
    description: Computes the new generation and reports what would change, writing nothing; a fresh host needs no prior run.
  diff_mode:
    support: full
    description: Shows the changed files of the repository before and after.
notes:
  - Needs only the Python standard library on the target.
  - Relative symlinks, so the server may mount C(root) anywhere and use C(<mount>/current) as its repository
    path; mount C(root) itself, not C(current) (a bind mount of a symlink is resolved once, at start).
"""

EXAMPLES = r"""
- name: Install the repository rendered on the controller
  onprem.triton.triton_model_repository:
    root: /opt/triton/repository
    files:
      gemma_local/config.pbtxt: "{{ lookup('ansible.builtin.file', 'config.pbtxt') }}"
      gemma_local/1/model.json: '{"model": "/opt/models/gemma_local", "gpu_memory_utilization": 0.9}'
  register: repository

- name: Roll back to the previous generation
  onprem.triton.triton_model_repository:
    root: /opt/triton/repository
    state: rollback
"""

RETURN = r"""
generation:
  description: Id (content digest) of the generation C(current) points at after the run.
  returned: always
  type: str
  sample: 3f2a9c1b7e4d
current_path:
  description: The stable path the server reads (the C(current) symlink).
  returned: always
  type: str
  sample: /opt/triton/repository/current
current_target:
  description: The generation folder C(current) points at after the run.
  returned: always
  type: str
  sample: /opt/triton/repository/generations/3f2a9c1b7e4d
previous_path:
  description: The generation kept for a rollback; null when there is none yet.
  returned: always
  type: str
  sample: /opt/triton/repository/generations/91c0d2aa45e1
changed_models:
  description: Models whose files differ from what C(current) held (added ones included).
  returned: always
  type: list
  elements: str
  sample: [gemma_local]
removed_models:
  description: Models C(current) held that the new generation lacks.
  returned: always
  type: list
  elements: str
  sample: []
pruned:
  description: Generation folders removed because more than I(keep) existed.
  returned: always
  type: list
  elements: str
  sample: []
"""

import hashlib
import os
import shutil

from ansible.module_utils.basic import AnsibleModule


def _digest(data):
    return hashlib.sha256(data).hexdigest()


def read_tree(root):
    """{relative path: bytes} of every file under root ({} when missing)."""
    content = {}
    if not os.path.isdir(root):
        return content
    for base, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(".pyc"):
                continue
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                content[os.path.relpath(path, root)] = handle.read()
    return content


def generation_id(content):
    digest = hashlib.sha256()
    for path in sorted(content):
        digest.update(path.encode("utf-8") + b"\0" + _digest(content[path]).encode("ascii") + b"\n")
    return digest.hexdigest()[:12]


def model_digests(content, model_dirs):
    """{model: digest of all its folders' files}."""
    owner = {}
    for model, dirs in model_dirs.items():
        for directory in dirs:
            owner[directory] = model
    per_model = {}
    for path in sorted(content):
        top = path.split("/", 1)[0]
        model = owner.get(top, top)
        per_model.setdefault(model, hashlib.sha256()).update(
            path.encode("utf-8") + b"\0" + _digest(content[path]).encode("ascii"))
    return dict((model, digest.hexdigest()) for model, digest in per_model.items())


class ModelRepository:
    def __init__(self, module):
        self.module = module
        self.root = module.params["root"]
        self.generations = os.path.join(self.root, "generations")
        self.current = os.path.join(self.root, "current")
        self.previous = os.path.join(self.root, "previous")

    def _target(self, link):
        if os.path.islink(link):
            target = os.readlink(link)
            return os.path.normpath(os.path.join(self.root, target))
        return None

    def desired_content(self):
        content = {}
        # Copied code folders first, rendered files over them: upstream's llmapi/tensorrt_llm/1
        # ships its own model.yaml, and the one the role rendered must win.
        for dest, source in self.module.params["copies"].items():
            if not os.path.isdir(source):
                if self.module.check_mode:
                    # Fetched earlier in the same run, skipped by check mode: the content is unknown.
                    content[os.path.normpath(os.path.join(dest, ".unknown-in-check-mode"))] = source.encode("utf-8")
                    continue
                self.module.fail_json(msg="copies: source folder %s for %s does not exist on the host (the TensorRT-LLM "
                                          "python models come from the container image, see model_repository_trtllm_"
                                          "all_models_dir)" % (source, dest))
            for rel, data in read_tree(source).items():
                content[os.path.normpath(os.path.join(dest, rel))] = data
        for path, text in self.module.params["files"].items():
            content[os.path.normpath(path)] = (text or "").encode("utf-8")
        for path in content:
            if path.startswith("..") or os.path.isabs(path):
                self.module.fail_json(msg="files: %s leaves the repository" % path)
        return content

    def _write_generation(self, content, gen_dir):
        staging = "%s.staging-%d" % (gen_dir, os.getpid())
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging, 0o755)
        for path, data in content.items():
            target = os.path.join(staging, path)
            parent = os.path.dirname(target)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            with open(target, "wb") as handle:
                handle.write(data)
            os.chmod(target, 0o644)
        for base, dirs, _names in os.walk(staging):
            for name in dirs:
                os.chmod(os.path.join(base, name), 0o755)
        if os.path.exists(gen_dir):
            shutil.rmtree(gen_dir)
        os.rename(staging, gen_dir)

    def _link(self, link, gen_dir):
        """Points link at gen_dir (relative), replacing it atomically."""
        tmp = "%s.tmp-%d" % (link, os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.relpath(gen_dir, self.root), tmp)
        os.rename(tmp, link)

    def _prune(self, protect):
        keep = max(self.module.params["keep"], 1)
        if not os.path.isdir(self.generations):
            return []
        entries = [os.path.join(self.generations, name) for name in os.listdir(self.generations)]
        stale = [path for path in entries if ".staging-" in os.path.basename(path)]
        gens = sorted((path for path in entries if path not in stale and os.path.isdir(path)),
                      key=os.path.getmtime, reverse=True)
        remove = [path for path in gens[keep:] if path not in protect] + stale
        if not self.module.check_mode:
            for path in remove:
                shutil.rmtree(path, ignore_errors=True)
        return sorted(remove)

    def _diff(self, before, after):
        changed = sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))

        def show(content):
            parts = []
            for path in changed:
                if path in content:
                    try:
                        text = content[path].decode("utf-8")
                    except UnicodeDecodeError:
                        text = "<binary, sha256 %s>" % _digest(content[path])
                    parts.append("### %s\n%s" % (path, text))
            return "\n".join(parts) + ("\n" if parts else "")

        return {"before_header": self.current, "after_header": self.current, "before": show(before), "after": show(after)}

    def result(self, changed, before, after, generation, current_target, previous_target, pruned=()):
        dirs = self.module.params["model_dirs"]
        old, new = model_digests(before, dirs), model_digests(after, dirs)
        result = dict(
            changed=changed, generation=generation, current_path=self.current, current_target=current_target,
            previous_path=previous_target,
            changed_models=sorted(m for m in new if old.get(m) != new[m]),
            removed_models=sorted(m for m in old if m not in new), pruned=list(pruned))
        if self.module._diff:
            result["diff"] = self._diff(before, after)
        return result

    def present(self):
        content = self.desired_content()
        gen_id = generation_id(content)
        gen_dir = os.path.join(self.generations, gen_id)
        current_target = self._target(self.current)
        before = read_tree(current_target) if current_target else {}
        previous_target = self._target(self.previous)
        if current_target == gen_dir and before == content:
            pruned = self._prune({current_target, previous_target})
            return self.result(bool(pruned), before, content, gen_id, gen_dir, previous_target, pruned)
        new_previous = current_target if current_target and current_target != gen_dir and os.path.isdir(current_target) \
            else previous_target
        if not self.module.check_mode:
            if not os.path.isdir(self.generations):
                os.makedirs(self.generations, 0o755)
            if read_tree(gen_dir) != content:
                self._write_generation(content, gen_dir)
            else:
                os.utime(gen_dir, None)  # newest again: pruning goes by age
            if new_previous and new_previous != previous_target:
                self._link(self.previous, new_previous)
            self._link(self.current, gen_dir)
        pruned = self._prune({gen_dir, new_previous})
        return self.result(True, before, content, gen_id, gen_dir, new_previous, pruned)

    def rollback(self):
        current_target = self._target(self.current)
        wanted = self.module.params["generation"]
        if wanted:
            # an id alone, or a path relative to root (generations/<id>) or absolute
            target = os.path.normpath(os.path.join(self.root if "/" in wanted else self.generations, wanted))
            if os.path.dirname(target) != os.path.normpath(self.generations) or not os.path.isdir(target):
                self.module.fail_json(msg="generation %s is not a generation of %s on disk (under %s)"
                                      % (wanted, self.root, self.generations))
        else:
            target = self._target(self.previous)
            if not target or not os.path.isdir(target):
                self.module.fail_json(msg="no previous generation to roll back to under %s" % self.root)
        before = read_tree(current_target) if current_target else {}
        after = read_tree(target)
        if current_target == target:
            return self.result(False, before, after, os.path.basename(target), target, self._target(self.previous))
        left = current_target if current_target and os.path.isdir(current_target) else self._target(self.previous)
        if not self.module.check_mode:
            self._link(self.current, target)
            if left:
                self._link(self.previous, left)
        return self.result(True, before, after, os.path.basename(target), target, left)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=["present", "rollback"]),
            files=dict(type="dict", default={}),
            copies=dict(type="dict", default={}),
            model_dirs=dict(type="dict", default={}),
            keep=dict(type="int", default=3),
            generation=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    repository = ModelRepository(module)
    if module.params["state"] == "rollback":
        module.exit_json(**repository.rollback())
    module.exit_json(**repository.present())


if __name__ == "__main__":
    main()
