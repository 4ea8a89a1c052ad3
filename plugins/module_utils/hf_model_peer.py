# -*- coding: utf-8 -*-
# SPDX-License-Identifier: Apache-2.0
"""Host-to-host copies of synced weights (hf_model's controller fan-out as a tree).

The controller sends each file to the first host(s) only; a host that holds a verified copy then
serves it, read-only and for the run only, to the next hosts, which pull it into their staging
folder and verify and switch to it exactly as a copy sent by the controller (ModelSync.install_received).

Trust stays with the controller: the puller is given the sha256 of the controller's manifest and
refuses a peer's manifest that differs, and every file is then checked against that manifest (size
and sha256). A pull resumes what an interrupted one left in staging (HTTP Range).

The server answers only GET /<name>@<version>/<file> for the copies it was told to serve and the
files of their manifests, and only with the run's token (Authorization: Bearer)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import hmac
import json
import os
import socket
import threading
import time

from ansible.module_utils.urls import open_url
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote, unquote

from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn

from ansible_collections.onprem.triton.plugins.module_utils.hf_model import (
    CHUNK,
    MANIFEST_NAME,
    SyncError,
    write_json,
)

# Read timeout of one pull request (seconds): a stalled peer fails the pull, the role then
# sends that host's copy from the controller.
PULL_TIMEOUT = 60


def _served_files(versions_dir, copies):
    """{"<name>@<version>": {relative path: absolute path}} for the copies to serve, from their
    manifests; a copy without a manifest is not served."""
    served = {}
    for copy in copies:
        root = os.path.join(versions_dir, copy)
        try:
            with open(os.path.join(root, MANIFEST_NAME)) as handle:
                manifest = json.load(handle)
        except (IOError, OSError, ValueError):
            continue
        files = dict((entry["path"], os.path.join(root, entry["path"])) for entry in manifest.get("files", []))
        files[MANIFEST_NAME] = os.path.join(root, MANIFEST_NAME)
        served[copy] = files
    return served


class _ThreadingServer(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(bind_address, port, versions_dir, copies, token):
    """An HTTP server for the copies (not started). Its .stats counts requests and bytes sent,
    its .served names the copies it serves (those with a manifest)."""
    served = _served_files(versions_dir, copies)
    stats = {"requests": 0, "bytes_sent": 0, "refused": 0}
    lock = threading.Lock()
    expected = ("Bearer " + token).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # no access log on stderr: the module's output is JSON
            return

        def _refuse(self, code, text):
            with lock:
                stats["refused"] += 1
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - the http.server interface
            given = (self.headers.get("Authorization") or "").encode()
            if not hmac.compare_digest(given, expected):
                return self._refuse(401, "token required")
            copy, _sep, path = unquote(self.path).lstrip("/").partition("/")
            target = served.get(copy, {}).get(path)
            if target is None or not os.path.isfile(target):
                return self._refuse(404, "not served here")
            size = os.path.getsize(target)
            start = _range_start(self.headers.get("Range"), size)
            if start is None:
                return self._refuse(416, "bad range")
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size - start))
            if start:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
            self.end_headers()
            sent = 0
            with open(target, "rb") as handle:
                handle.seek(start)
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    self.wfile.write(chunk)
                    sent += len(chunk)
            with lock:
                stats["requests"] += 1
                stats["bytes_sent"] += sent

    server = _ThreadingServer((bind_address, port), Handler)
    server.stats = stats
    server.served = sorted(served)
    return server


def _range_start(header, size):
    """The first byte asked for: 0 without a Range header, None for one this server does not serve
    (only "bytes=N-", what a resumed pull sends)."""
    if not header:
        return 0
    if not header.startswith("bytes=") or not header.endswith("-"):
        return None
    try:
        start = int(header[len("bytes="):-1])
    except ValueError:
        return None
    return start if 0 <= start < size else None


def serve(bind_address, port, versions_dir, copies, token, stop_file, seconds, poll=0.5):
    """Serve until stop_file exists or seconds have passed; returns the server's stats."""
    server = make_server(bind_address, port, versions_dir, copies, token)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.daemon = True
    thread.start()
    deadline = time.time() + seconds
    try:
        while time.time() < deadline and not os.path.exists(stop_file):
            time.sleep(poll)
    finally:
        server.shutdown()
        server.server_close()
    return dict(server.stats, served=server.served,
                stopped_by="stop file" if os.path.exists(stop_file) else "timeout")


def get(url, token, start=0, headers=None):
    """A GET to a peer: straight (never through a proxy of the environment), with the run's token."""
    sent = dict(headers or {}, Authorization="Bearer " + token)
    if start:
        sent["Range"] = "bytes=%d-" % start
    return open_url(url, headers=sent, timeout=PULL_TIMEOUT, use_proxy=False, follow_redirects="none")


def pull(source_url, token, copy, staging, manifest_sha256):
    """Pull a peer's copy (<name>@<version>) into staging; returns bytes received. The caller then
    verifies every file against the manifest and switches (ModelSync.install_received)."""
    base = source_url.rstrip("/") + "/" + quote(copy) + "/"
    try:
        with get(base + MANIFEST_NAME, token) as response:
            raw = response.read()
    except (HTTPError, URLError, socket.error) as exc:
        raise SyncError("peer %s: %s" % (source_url, _reason(exc)))
    if hashlib.sha256(raw).hexdigest() != manifest_sha256:
        raise SyncError("peer %s: its manifest of %s differs from the controller's (sha256 %s, expected %s)"
                        % (source_url, copy, hashlib.sha256(raw).hexdigest(), manifest_sha256))
    manifest = json.loads(raw.decode("utf-8"))
    received = 0
    if not os.path.isdir(staging):
        os.makedirs(staging, 0o755)
    for entry in manifest.get("files", []):
        received += _pull_file(base, token, entry, staging, source_url)
    write_json(os.path.join(staging, MANIFEST_NAME), manifest)
    return received


def _pull_file(base, token, entry, staging, source_url):
    path = os.path.join(staging, entry["path"])
    if os.path.dirname(path) and not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path), 0o755)
    size = entry.get("size")
    have = os.path.getsize(path) if os.path.isfile(path) else 0
    if size is not None and have == size:
        return 0  # complete from an earlier pull; verified with the others before the switch
    if size is not None and have > size:
        os.unlink(path)
        have = 0
    received = 0
    try:
        with get(base + quote(entry["path"]), token, start=have) as response:
            mode = "ab" if have and response.status == 206 else "wb"
            with open(path, mode) as handle:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    handle.write(chunk)
                    received += len(chunk)
    except (HTTPError, URLError, socket.error) as exc:
        raise SyncError("peer %s: %s while pulling %s (%d bytes kept in staging for the next try)"
                        % (source_url, _reason(exc), entry["path"], have + received))
    return received


def _reason(exc):
    if isinstance(exc, HTTPError):
        return "HTTP %d %s" % (exc.code, exc.reason)
    return str(getattr(exc, "reason", exc))
