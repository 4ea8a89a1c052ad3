# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Model sync logic shared by the hf_model_sync module: Hub resolution, staging,
verification, atomic switch and the on-disk manifest.

Layout under ``models_dir`` (the folder later mounted read-only into Triton)::

    <name>                     -> .versions/<name>@<commit>   (relative symlink, swapped atomically)
    .versions/<name>@<commit>/  verified files + .hf_model_manifest.json
    .staging/<name>@<commit>/   download in progress (same filesystem, so the switch is a rename)
    .staging/<name>.progress.json
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import re
import shutil
import threading
import traceback

# The Xet transfer path needs extra services and would bypass the HTTP
# resolve/CDN path this module verifies and mirrors serve: keep it off, and
# never send telemetry. Set before huggingface_hub reads its constants.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

HUB_IMPORT_ERROR = None
try:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub import errors as hub_errors
except ImportError:
    HfApi = hf_hub_download = hub_errors = None
    HUB_IMPORT_ERROR = traceback.format_exc()

MANIFEST_NAME = ".hf_model_manifest.json"
VERSIONS_DIR = ".versions"
STAGING_DIR = ".staging"
MANIFEST_FORMAT = 1
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
VERSION_RE = re.compile(r"^[0-9a-f]{40}-[0-9a-f]{8}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CHUNK = 1024 * 1024


class SyncError(Exception):
    """A failure to report as is: the message is meant for the operator."""


# --- pure helpers ---------------------------------------------------------

def _normalize_patterns(patterns):
    # Same convention as huggingface_hub: a pattern ending in "/" means the whole folder.
    return [p + "*" if p.endswith("/") else p for p in (patterns or [])]


def select_files(siblings, allow_patterns=None, ignore_patterns=None):
    """Files of the revision to sync, from model_info siblings given as dicts
    (path, size, sha256 for LFS files, blob_id), sorted by path."""
    allow = _normalize_patterns(allow_patterns)
    ignore = _normalize_patterns(ignore_patterns)
    selected = []
    for sibling in siblings:
        path = sibling["path"]
        if allow and not any(fnmatch.fnmatch(path, p) for p in allow):
            continue
        if any(fnmatch.fnmatch(path, p) for p in ignore):
            continue
        if path.startswith("/") or ".." in path.split("/"):
            raise SyncError("the Hub listed an unsafe file name: %r" % path)
        selected.append(sibling)
    return sorted(selected, key=lambda f: f["path"])


def siblings_as_dicts(model_info):
    files = []
    for sibling in model_info.siblings or []:
        lfs = sibling.lfs
        files.append({
            "path": sibling.rfilename,
            "size": lfs.size if lfs else sibling.size,
            "sha256": lfs.sha256 if lfs else None,
            "blob_id": sibling.blob_id,
            "lfs": bool(lfs),
        })
    return files


def file_hashes(path):
    """(sha256, git blob sha1) of a file, read once."""
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest()


def verify_file(root, entry):
    """Return (problem or None, sha256). Checks size, then sha256 (LFS or
    manifest) or the git blob id (small files listed by the Hub)."""
    path = os.path.join(root, entry["path"])
    if not os.path.isfile(path):
        return "%s is missing" % entry["path"], None
    size = os.path.getsize(path)
    if entry.get("size") is not None and size != entry["size"]:
        return "%s has %d bytes, expected %d" % (entry["path"], size, entry["size"]), None
    sha256, blob_id = file_hashes(path)
    if entry.get("sha256") and sha256 != entry["sha256"]:
        return "%s has sha256 %s, expected %s" % (entry["path"], sha256, entry["sha256"]), sha256
    if not entry.get("sha256") and entry.get("blob_id") and blob_id != entry["blob_id"]:
        return "%s has git blob id %s, expected %s" % (entry["path"], blob_id, entry["blob_id"]), sha256
    return None, sha256


def human_bytes(count):
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return "%.1f %s" % (value, unit) if unit != "B" else "%d B" % count
        value /= 1024
    return "%d B" % count


def free_bytes(path):
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def check_space(path, needed, min_free):
    free = free_bytes(path)
    if free - needed < min_free:
        raise SyncError(
            "not enough disk space in %s: the download needs %s and %s must stay free "
            "(hf_model_min_free_bytes), but only %s is free" % (
                path, human_bytes(needed), human_bytes(min_free), human_bytes(free)))
    return free


def explain_hub_error(exc, repo_id, revision, endpoint):
    """A plain sentence for the operator; never includes the token."""
    where = endpoint or "https://huggingface.co"
    if hub_errors is not None:
        if isinstance(exc, hub_errors.GatedRepoError):
            return ("model %s is gated and this token has no access: accept the license at %s/%s "
                    "with the account that owns the token (hf_model_token), then retry" % (repo_id, where, repo_id))
        if isinstance(exc, hub_errors.RevisionNotFoundError):
            return "revision %r does not exist in model %s at %s" % (revision, repo_id, where)
        if isinstance(exc, hub_errors.RemoteEntryNotFoundError):
            return "a file listed for %s@%s is missing on %s: %s" % (repo_id, revision, where, exc)
        if isinstance(exc, hub_errors.RepositoryNotFoundError):
            return ("model repository %s was not found at %s (or it is private and the token has no "
                    "access to it)" % (repo_id, where))
        if isinstance(exc, hub_errors.HfHubHTTPError):
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 401:
                return ("the Hugging Face token was rejected by %s (invalid or expired): check "
                        "hf_model_token / HF_TOKEN" % where)
            if status == 403:
                return "the token has no permission to read %s at %s" % (repo_id, where)
            return "the Hub at %s answered an error for %s: %s" % (where, repo_id, str(exc).splitlines()[0])
    return "cannot reach the Hub at %s for %s: %s" % (where, repo_id, exc)


def read_manifest(directory):
    try:
        with open(os.path.join(directory, MANIFEST_NAME)) as handle:
            manifest = json.load(handle)
    except (IOError, OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    return manifest


def write_json(path, data, mode=0o644):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def tree_size(root):
    total = 0
    for base, _dirs, names in os.walk(root):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(base, name))
            except OSError:
                pass
    return total


def version_key(commit_sha, paths):
    """Names one copy: the commit plus the file selection (patterns may change on the same commit)."""
    selection = hashlib.sha1("\n".join(sorted(paths)).encode("utf-8")).hexdigest()[:8]
    return "%s-%s" % (commit_sha, selection)


def manifest_version(manifest):
    return version_key(manifest["commit_sha"], [f["path"] for f in manifest.get("files", [])])


def manifest_matches(manifest, commit_sha, paths):
    return manifest is not None and manifest_version(manifest) == version_key(commit_sha, paths)


def quick_check(root, manifest):
    """Cheap check that an installed copy is complete: every file there with its size."""
    for entry in manifest.get("files", []):
        path = os.path.join(root, entry["path"])
        if not os.path.isfile(path) or os.path.getsize(path) != entry["size"]:
            return False
    return True


class _Progress(threading.Thread):
    """Writes <name>.progress.json every few seconds so the role can show progress."""

    def __init__(self, path, staging, name, commit_sha, total, files_total):
        super(_Progress, self).__init__()
        self.daemon = True
        self.path, self.staging = path, staging
        self.state = {"name": name, "commit_sha": commit_sha, "bytes_total": total,
                      "files_total": files_total, "files_done": 0, "bytes_done": 0}
        self.stop_event = threading.Event()

    def write(self):
        self.state["bytes_done"] = min(tree_size(self.staging), self.state["bytes_total"])
        self.state["updated"] = datetime.datetime.utcnow().isoformat() + "Z"
        try:
            write_json(self.path, self.state)
        except (IOError, OSError):
            pass

    def run(self):
        while not self.stop_event.wait(2):
            self.write()

    def stop(self):
        self.stop_event.set()
        self.write()


# --- the sync -----------------------------------------------------------------

# A repository file that names a copy: text small enough to be a config, not weights.
REFERENCE_FILE_MAX_BYTES = 1 << 20


def referenced_copies(roots, copies):
    """Those of ``copies`` (.versions entry names) that a file under ``roots`` (glob patterns)
    names as ``.versions/<copy>`` (host or server paths alike); links are not followed."""
    wanted = {copy: (VERSIONS_DIR + "/" + copy) for copy in copies}
    found = set()
    if not wanted:
        return found
    for root in sorted({path for pattern in roots for path in glob.glob(pattern)}):
        for base, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(base, name)
                if os.path.islink(path) or os.path.getsize(path) > REFERENCE_FILE_MAX_BYTES:
                    continue
                with open(path, "rb") as handle:
                    text = handle.read().decode("utf-8", "replace")
                found.update(copy for copy, needle in wanted.items() if copy not in found and needle in text)
                if len(found) == len(wanted):
                    return found
    return found


class ModelSync(object):
    """One model into models_dir. ``params`` are the module's parameters."""

    def __init__(self, params, check_mode=False, api_factory=None, downloader=None):
        self.p = params
        self.check_mode = check_mode
        self.name = params["name"]
        self.models_dir = params["models_dir"]
        self.link = os.path.join(self.models_dir, self.name)
        self.versions = os.path.join(self.models_dir, VERSIONS_DIR)
        self.staging_root = os.path.join(self.models_dir, STAGING_DIR)
        self.api_factory = api_factory or (lambda endpoint, token: HfApi(endpoint=endpoint, token=token))
        self.downloader = downloader or hf_hub_download
        # Older copies that pruning by age would remove but a kept generation still reads.
        self.kept_referenced = []

    # results and state ------------------------------------------------------
    def validate(self):
        if not NAME_RE.match(self.name or ""):
            raise SyncError("name %r must be a plain directory name (letters, digits, '.', '_', '-')" % self.name)
        if not os.path.isabs(self.models_dir):
            raise SyncError("models_dir %r must be an absolute path" % self.models_dir)
        if self.p.get("commit_sha") and not COMMIT_RE.match(self.p["commit_sha"]):
            raise SyncError("commit_sha %r is not a 40-character commit id" % self.p["commit_sha"])
        if self.p.get("version") and not VERSION_RE.match(self.p["version"]):
            raise SyncError("version %r is not <commit>-<selection> as returned by a download" % self.p["version"])
        if os.path.lexists(self.link) and not os.path.islink(self.link):
            raise SyncError("%s exists and is not managed by hf_model (expected a symlink to %s/); "
                            "move it away first" % (self.link, VERSIONS_DIR))

    def current(self):
        """Manifest of the copy being served now, or None."""
        if not os.path.islink(self.link):
            return None
        return read_manifest(os.path.realpath(self.link))

    def version_dir(self, version):
        return os.path.join(self.versions, "%s@%s" % (self.name, version))

    def staging_dir(self, key):
        """Downloads stage per commit (a changed selection reuses them); receivers per version."""
        return os.path.join(self.staging_root, "%s@%s" % (self.name, key))

    def wanted_version(self):
        """For receivers: the version sent by the controller (older callers pass only the commit)."""
        return self.p.get("version") or None

    def is_current(self, current):
        if current is None or current.get("commit_sha") != self.p["commit_sha"]:
            return False
        if self.wanted_version() and manifest_version(current) != self.wanted_version():
            return False
        return quick_check(os.path.realpath(self.link), current)

    def result(self, manifest, changed, bytes_downloaded=0, msg=""):
        if self.kept_referenced:
            msg += "; kept %s (a kept repository generation serves from it)" % ", ".join(sorted(self.kept_referenced))
        return {
            "changed": changed,
            "name": self.name,
            "path": self.link,
            "version": manifest_version(manifest),
            "version_path": self.version_dir(manifest_version(manifest)),
            "repo_id": manifest.get("repo_id"),
            "revision": manifest.get("revision"),
            "commit_sha": manifest["commit_sha"],
            "files": [f["path"] for f in manifest["files"]],
            "total_bytes": manifest["total_bytes"],
            "bytes_downloaded": bytes_downloaded,
            "msg": msg,
        }

    def ensure_dirs(self):
        for path in (self.models_dir, self.versions, self.staging_root):
            if not os.path.isdir(path):
                os.makedirs(path, 0o755)

    # operations --------------------------------------------------------------
    def run(self):
        self.validate()
        operation = self.p.get("operation") or "download"
        if operation == "plan":
            return self.plan()
        if operation == "install":
            return self.install_received()
        if self.p.get("offline"):
            return self.offline()
        return self.download()

    def offline(self):
        """HF_HUB_OFFLINE hosts: never reach the Hub, only confirm what is installed."""
        current = self.current()
        wanted = self.p.get("revision")
        if current and wanted in (current.get("commit_sha"), current.get("revision")):
            if not quick_check(os.path.realpath(self.link), current):
                raise SyncError("offline: the installed copy of %s at %s is incomplete; distribute it again"
                                % (self.name, self.link))
            return self.result(current, False, msg="offline: installed copy kept")
        raise SyncError("offline: %s (%s@%s) is not installed in %s and the Hub may not be contacted "
                        "(HF_HUB_OFFLINE); distribute it from the controller first"
                        % (self.name, self.p.get("repo_id"), wanted, self.models_dir))

    def plan(self):
        """For receivers: is a transfer of commit_sha needed, and is there room for it."""
        commit_sha = self.p["commit_sha"]
        current = self.current()
        needed = not self.is_current(current)
        staging = self.staging_dir(self.wanted_version() or commit_sha)
        if needed:
            probe = self.models_dir if os.path.isdir(self.models_dir) else os.path.dirname(self.models_dir)
            already = tree_size(staging) if os.path.isdir(staging) else 0
            check_space(probe, max(self.p.get("total_bytes") or 0, 0) - already, self.p["min_free_bytes"])
        return {"changed": False, "needed": needed, "name": self.name, "path": self.link,
                "staging_path": staging, "commit_sha": commit_sha,
                "current_commit_sha": current.get("commit_sha") if current else None}

    def download(self):
        repo_id, revision = self.p["repo_id"], self.p.get("revision") or "main"
        current = self.current()
        link_target = os.path.realpath(self.link)
        if (current and COMMIT_RE.match(revision) and current.get("commit_sha") == revision
                and current.get("allow_patterns") == self.p.get("allow_patterns")
                and current.get("ignore_patterns") == self.p.get("ignore_patterns")
                and quick_check(link_target, current)):
            # Pinned to a commit already installed: no need to ask the Hub.
            return self.result(current, False, msg="pinned commit already installed")

        if HfApi is None:
            raise SyncError("huggingface_hub is required on this host for downloads")
        endpoint, token = self.p.get("endpoint") or None, self.p.get("token") or None
        try:
            info = self.api_factory(endpoint, token).model_info(repo_id, revision=revision, files_metadata=True)
        except Exception as exc:  # pylint: disable=broad-except
            raise SyncError(explain_hub_error(exc, repo_id, revision, endpoint))
        commit_sha = info.sha
        files = select_files(siblings_as_dicts(info), self.p.get("allow_patterns"), self.p.get("ignore_patterns"))
        if not files:
            raise SyncError("no file of %s@%s matches allow_patterns %s / ignore_patterns %s" % (
                repo_id, revision, self.p.get("allow_patterns"), self.p.get("ignore_patterns")))
        total = sum(f["size"] or 0 for f in files)

        if manifest_matches(current, commit_sha, [f["path"] for f in files]) and quick_check(link_target, current):
            return self.result(current, False, msg="%s is at %s already" % (self.name, commit_sha))

        staging = self.staging_dir(commit_sha)
        present = tree_size(staging) if os.path.isdir(staging) else 0
        planned = {"commit_sha": commit_sha, "repo_id": repo_id, "revision": revision,
                   "files": files, "total_bytes": total}
        if self.check_mode:
            result = self.result(planned, True, bytes_downloaded=0, msg="would download %s" % human_bytes(total - present))
            result["would_download"] = [f["path"] for f in files]
            result["bytes_to_download"] = max(total - present, 0)
            return result

        self.ensure_dirs()
        check_space(self.models_dir, total - present, self.p["min_free_bytes"])
        with self.lock():
            self.drop_other_stagings(commit_sha)
            self.fetch(repo_id, commit_sha, files, staging, endpoint, token)
            manifest = self.seal(staging, planned, endpoint)
            self.switch(staging, manifest)
        return self.result(manifest, True, bytes_downloaded=max(total - present, 0),
                           msg="%s synced to %s" % (self.name, commit_sha))

    def install_received(self):
        """For receivers: verify a staged copy (sent by the controller) and switch to it."""
        commit_sha = self.p["commit_sha"]
        current = self.current()
        staging = self.staging_dir(self.wanted_version() or commit_sha)
        if self.is_current(current):
            if not self.check_mode:
                self.remove(staging)
            return self.result(current, False, msg="%s is at %s already" % (self.name, commit_sha))
        manifest = read_manifest(staging)
        if self.check_mode:
            planned = manifest or {"commit_sha": commit_sha, "files": [], "total_bytes": 0}
            return self.result(planned, True, msg="would install %s" % commit_sha)
        if (manifest is None or manifest.get("commit_sha") != commit_sha
                or (self.wanted_version() and manifest_version(manifest) != self.wanted_version())):
            raise SyncError("no staged copy of %s@%s with its manifest in %s; the transfer did not complete"
                            % (self.name, commit_sha, staging))
        self.ensure_dirs()
        with self.lock():
            self.verify_all(staging, manifest["files"])
            self.normalize_modes(staging)
            self.switch(staging, manifest)
        return self.result(manifest, True, bytes_downloaded=0, msg="%s installed at %s" % (self.name, commit_sha))

    # steps ----------------------------------------------------------------------
    def lock(self):
        return _DirLock(os.path.join(self.staging_root, ".lock"))

    def drop_other_stagings(self, commit_sha):
        keep = os.path.basename(self.staging_dir(commit_sha))
        for entry in os.listdir(self.staging_root):
            if entry.startswith(self.name + "@") and entry != keep:
                self.remove(os.path.join(self.staging_root, entry))

    def fetch(self, repo_id, commit_sha, files, staging, endpoint, token):
        progress = _Progress(os.path.join(self.staging_root, self.name + ".progress.json"),
                             staging, self.name, commit_sha, sum(f["size"] or 0 for f in files), len(files))
        progress.start()
        try:
            for entry in files:
                try:
                    self.downloader(repo_id, entry["path"], revision=commit_sha, local_dir=staging,
                                    endpoint=endpoint, token=token)
                except Exception as exc:  # pylint: disable=broad-except
                    raise SyncError(explain_hub_error(exc, repo_id, commit_sha, endpoint))
                progress.state["files_done"] += 1
        finally:
            progress.stop()

    def verify_all(self, root, files):
        """Verify every file; a bad one is deleted so the next run fetches it again."""
        hashes = {}
        for entry in files:
            problem, sha256 = verify_file(root, entry)
            if problem:
                bad = os.path.join(root, entry["path"])
                if os.path.isfile(bad):
                    os.unlink(bad)
                raise SyncError("verification failed, the served copy is unchanged: " + problem)
            hashes[entry["path"]] = sha256
        return hashes

    def seal(self, staging, planned, endpoint):
        hashes = self.verify_all(staging, planned["files"])
        self.remove(os.path.join(staging, ".cache"))  # huggingface_hub's local_dir bookkeeping
        expected = set(f["path"] for f in planned["files"])
        for base, _dirs, names in os.walk(staging):
            for name in names:
                rel = os.path.relpath(os.path.join(base, name), staging)
                if rel not in expected and rel != MANIFEST_NAME:
                    os.unlink(os.path.join(base, name))  # left by an older selection
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "repo_id": planned["repo_id"],
            "revision": planned["revision"],
            "commit_sha": planned["commit_sha"],
            "endpoint": endpoint or "https://huggingface.co",
            "allow_patterns": self.p.get("allow_patterns"),
            "ignore_patterns": self.p.get("ignore_patterns"),
            "total_bytes": planned["total_bytes"],
            "files": [{"path": f["path"], "size": f["size"], "sha256": hashes[f["path"]], "lfs": f["lfs"]}
                      for f in planned["files"]],
            "synced_at": datetime.datetime.utcnow().replace(microsecond=0).isoformat() + "Z",
        }
        self.normalize_modes(staging)
        write_json(os.path.join(staging, MANIFEST_NAME), manifest)
        return manifest

    @staticmethod
    def normalize_modes(root):
        # Triton reads the weights through a read-only bind mount, as another user.
        os.chmod(root, 0o755)
        for base, dirs, names in os.walk(root):
            for name in dirs:
                os.chmod(os.path.join(base, name), 0o755)
            for name in names:
                os.chmod(os.path.join(base, name), 0o644)

    def switch(self, staging, manifest):
        """rename staging -> .versions/<name>@<sha>, then swap the symlink in one rename."""
        target = self.version_dir(manifest_version(manifest))
        if os.path.isdir(target):
            if os.path.realpath(self.link) == os.path.realpath(target):
                raise SyncError("internal: refusing to replace the copy being served")
            self.remove(target)
        os.rename(staging, target)
        tmp_link = os.path.join(self.models_dir, ".%s.link-tmp" % self.name)
        if os.path.lexists(tmp_link):
            os.unlink(tmp_link)
        os.symlink(os.path.join(VERSIONS_DIR, os.path.basename(target)), tmp_link)
        os.rename(tmp_link, self.link)
        _fsync_dir(self.models_dir)
        self.prune(target)

    def prune(self, keep_target):
        """Keep the new copy, keep_versions older ones (a reader still open) and every copy that
        a file under keep_referenced_in names: a kept repository generation (the last good one
        among them) serves from it, and a rollback to that generation needs it back."""
        prefix = self.name + "@"
        old = [os.path.join(self.versions, d) for d in os.listdir(self.versions)
               if d.startswith(prefix) and os.path.join(self.versions, d) != keep_target]
        old.sort(key=os.path.getmtime, reverse=True)
        beyond = old[self.p.get("keep_versions", 1):]
        referenced = referenced_copies(self.p.get("keep_referenced_in") or [],
                                       [os.path.basename(path) for path in beyond])
        for path in beyond:
            if os.path.basename(path) in referenced:
                self.kept_referenced.append(os.path.basename(path))
            else:
                self.remove(path)
        progress = os.path.join(self.staging_root, self.name + ".progress.json")
        if os.path.exists(progress):
            os.unlink(progress)

    @staticmethod
    def remove(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirLock(object):
    """One sync per models_dir at a time (an async job and a re-run may overlap)."""

    def __init__(self, path):
        self.path = path
        self.handle = None

    def __enter__(self):
        self.handle = open(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            self.handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise SyncError("another hf_model sync is running in %s (lock %s)"
                                % (os.path.dirname(os.path.dirname(self.path)), self.path))
            raise
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        return False
