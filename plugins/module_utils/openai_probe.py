# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""Probe of an OpenAI-compatible API (Triton's OpenAI frontend, or a gateway in front of it).

Python standard library only (urllib), so it runs with the Python Ansible uses on any host.
Speaks the OpenAI protocol as the `openai` client does: `Authorization: Bearer KEY`, JSON bodies,
server-sent events (`data: {...}` lines, then `data: [DONE]`) for streamed chat completions.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket
import ssl
import time

from ansible.module_utils.six.moves.urllib import request as urllib_request
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

# The API is reached directly, never through a proxy (as triton_probe does).
_PLAIN_OPENER = urllib_request.build_opener(urllib_request.ProxyHandler({}))
# Sent as the key of the refusal probe: no deployment should ever accept it.
WRONG_KEY = "onprem-triton-check-wrong-key-0000000000000000"


class OpenAIError(Exception):
    """A failed call: kind (connection_refused, timeout, tls, forbidden, unknown_model, bad_request,
    server_error, protocol) and a message that says what happened."""

    def __init__(self, kind, message, status=None):
        super(OpenAIError, self).__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


def base_url(url, tls=False):
    """http(s)://host:port of url (host:port, or with a scheme), without a trailing /v1."""
    url = (url or "").strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3]
    if "://" not in url:
        url = ("https://" if tls else "http://") + url
    return url


def _error_detail(body):
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return error["message"]
        if data.get("detail"):
            return data["detail"] if isinstance(data["detail"], str) else json.dumps(data["detail"])[:300]
    return json.dumps(data)[:300]


class OpenAIProbe:
    """Calls of the probe; every failure is an OpenAIError."""

    def __init__(self, url, api_key, tls=False, ca_cert=None, validate_certs=True, request_timeout=60.0,
                 opener=None, clock=time.monotonic):
        self.url = base_url(url, tls)
        self.api_key = api_key or ""
        self.timeout = request_timeout
        self.ca_cert = ca_cert
        self.validate_certs = validate_certs
        self.opener = opener or self._default_opener
        self.clock = clock

    def _default_opener(self, request, timeout=None):
        if self.url.startswith("https://"):
            return open_url(request.full_url, data=request.data, headers=dict(request.header_items()),
                            method=request.get_method(), validate_certs=self.validate_certs, ca_path=self.ca_cert,
                            timeout=timeout, use_proxy=False)
        # Plain HTTP: open_url would load the system CA store for nothing (time counted in the TTFT).
        return _PLAIN_OPENER.open(request, timeout=timeout)

    def _open(self, method, path, body=None, key=None):
        headers = {"Accept": "application/json"}
        key = self.api_key if key is None else key
        if key:
            headers["Authorization"] = "Bearer " + key
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib_request.Request(self.url + path, data=data, headers=headers)
        request.get_method = lambda: method
        try:
            return self.opener(request, timeout=self.timeout)
        except HTTPError as error:
            detail = _error_detail(error.read().decode("utf-8", "replace"))
            kind = {401: "forbidden", 403: "forbidden", 404: "unknown_model"}.get(
                error.code, "bad_request" if 400 <= error.code < 500 else "server_error")
            raise OpenAIError(kind, "%s %s answered HTTP %d: %s" % (method, path, error.code, detail), error.code)
        except ssl.SSLError as error:
            raise OpenAIError("tls", "TLS failed on %s: %s" % (self.url, error))
        except (socket.timeout, TimeoutError):
            raise OpenAIError("timeout", "%s %s timed out after %ss" % (method, path, self.timeout))
        except URLError as error:
            reason = error.reason
            if isinstance(reason, ssl.SSLError):
                raise OpenAIError("tls", "TLS failed on %s: %s" % (self.url, reason))
            if isinstance(reason, ConnectionRefusedError):
                raise OpenAIError("connection_refused", "nothing listens on %s (connection refused)" % self.url)
            if isinstance(reason, socket.timeout):
                raise OpenAIError("timeout", "%s %s timed out after %ss" % (method, path, self.timeout))
            raise OpenAIError("connection_refused", "cannot reach %s: %s" % (self.url, reason))

    def list_models(self):
        """The model ids of GET /v1/models."""
        response = self._open("GET", "/v1/models")
        try:
            data = json.loads(response.read().decode("utf-8"))
            return [entry["id"] for entry in data["data"]]
        except (ValueError, KeyError, TypeError):
            raise OpenAIError("protocol", "GET /v1/models did not answer an OpenAI model list")
        finally:
            response.close()

    def refusal(self, key):
        """The HTTP status GET /v1/models answers with this key ("" sends none)."""
        try:
            self._open("GET", "/v1/models", key=key).close()
            return 200
        except OpenAIError as error:
            if error.status is None:
                raise
            return error.status

    def chat_stream(self, model, prompt, max_tokens):
        """A streamed chat completion: text, chunks, output tokens, TTFT, latency and tokens/s."""
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "stream": True, "stream_options": {"include_usage": True}}
        started = self.clock()
        response = self._open("POST", "/v1/chat/completions", body=body)
        text, chunks, first, usage, done = [], 0, None, None, False
        try:
            for raw in response:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                try:
                    event = json.loads(payload)
                except ValueError:
                    raise OpenAIError("protocol", "the chat stream sent a line that is not JSON: %r" % payload[:200])
                if event.get("error"):
                    raise OpenAIError("server_error", "the chat stream failed: %s" % _error_detail(json.dumps(event)))
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if first is None:
                            first = self.clock()
                        chunks += 1
                        text.append(content)
        finally:
            response.close()
        ended = self.clock()
        if not done:
            raise OpenAIError("protocol", "the chat stream ended without data: [DONE]")
        latency = max(ended - started, 1e-9)
        tokens = int(usage["completion_tokens"]) if usage and usage.get("completion_tokens") is not None else chunks
        return {
            "text": "".join(text),
            "chunks": chunks,
            "output_tokens": tokens,
            "output_tokens_source": "usage" if usage else "chunks",
            "ttft_ms": round(((first if first is not None else ended) - started) * 1000.0, 3),
            "latency_ms": round(latency * 1000.0, 3),
            "output_tokens_per_second": round(tokens / latency, 3),
        }
