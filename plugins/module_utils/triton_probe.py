# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""Talking to a Triton Inference Server for onprem.triton.triton_check.

TritonProbe hides which protocol is used and turns every failure into a
ProbeError whose `kind` says what went wrong (connection_refused, tls,
timeout, forbidden, unknown_model, bad_request, server_error).

HTTP needs only the Python standard library and ansible's module_utils: the
KServe v2 REST endpoints of Triton (health, server metadata, model ready and
config, repository index) and its generate / generate_stream extension, with
urllib (open_url for TLS). It is what runs on a host whose python3 has
nothing installed. gRPC needs tritonclient[grpc] and numpy, imported on first
use (grpc_import_error() says whether they are there).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import queue
import socket
import ssl
import sys
import time
import traceback

from ansible.module_utils.six.moves.urllib import request as urllib_request
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote
from ansible.module_utils.urls import open_url

DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
# Triton is reached directly (like tritonclient does), never through a proxy.
_PLAIN_OPENER = urllib_request.build_opener(urllib_request.ProxyHandler({}))

# Triton config data types -> (tritonclient datatype, numpy dtype name).
_DATATYPES = {
    "TYPE_STRING": ("BYTES", "object"),
    "TYPE_BOOL": ("BOOL", "bool"),
    "TYPE_INT32": ("INT32", "int32"),
    "TYPE_INT64": ("INT64", "int64"),
    "TYPE_UINT32": ("UINT32", "uint32"),
    "TYPE_UINT64": ("UINT64", "uint64"),
    "TYPE_FP16": ("FP16", "float16"),
    "TYPE_FP32": ("FP32", "float32"),
    "TYPE_FP64": ("FP64", "float64"),
}


def _grpc_modules():
    """(tritonclient.grpc, numpy), imported on first use: only protocol grpc needs them."""
    import tritonclient.grpc  # pylint: disable=import-outside-toplevel
    import numpy  # pylint: disable=import-outside-toplevel
    return tritonclient.grpc, numpy


def grpc_import_error():
    """None when protocol grpc can be used, else the traceback of the failed
    import of tritonclient[grpc] or numpy (for missing_required_lib)."""
    try:
        _grpc_modules()
    except ImportError:
        return traceback.format_exc()
    return None


def _is_tritonclient_error(error):
    """Whether `error` is tritonclient's InferenceServerException (which can
    only exist when tritonclient was imported)."""
    utils = sys.modules.get("tritonclient.utils")
    exception = getattr(utils, "InferenceServerException", None)
    return exception is not None and isinstance(error, exception)


class ProbeError(Exception):
    """A failure talking to Triton, classified by `kind`."""

    def __init__(self, kind, message):
        super(ProbeError, self).__init__(message)
        self.kind = kind
        self.message = message


def _first_line(text):
    return str(text).strip().splitlines()[0] if str(text).strip() else str(text)


def classify(error, where=""):
    """A ProbeError for any exception raised by tritonclient (gRPC), urllib (HTTP) or sockets."""
    if isinstance(error, ProbeError):
        return error
    prefix = where + ": " if where else ""
    text = str(error)
    if _is_tritonclient_error(error):
        status = str(error.status() or "")
        text = error.message() or text
        lowered = text.lower()
        if "ssl" in lowered or "handshake" in lowered or "certificate" in lowered or "tls" in lowered:
            return ProbeError("tls", prefix + "TLS failure: " + _first_line(text))
        if "restricted" in lowered or "PERMISSION_DENIED" in status or "UNAUTHENTICATED" in status:
            return ProbeError("forbidden", prefix + "refused by the server: " + _first_line(text))
        if "DEADLINE_EXCEEDED" in status or "deadline exceeded" in lowered or "timed out" in lowered:
            return ProbeError("timeout", prefix + "timed out: " + _first_line(text))
        if "connection refused" in lowered or "failed to connect" in lowered or "UNAVAILABLE" in status:
            return ProbeError("connection_refused", prefix + "connection refused: " + _first_line(text))
        if "unknown model" in lowered or "not found" in lowered:
            return ProbeError("unknown_model", prefix + _first_line(text))
        if status in ("400", "StatusCode.INVALID_ARGUMENT"):
            return ProbeError("bad_request", prefix + "request refused (400): " + _first_line(text))
        return ProbeError("server_error", prefix + _first_line(text))
    if isinstance(error, HTTPError):
        body = ""
        try:
            # generate_stream sends its error as an event: `data: {"error": ...}`
            raw = error.read().decode("utf-8").strip()
            body = json.loads(raw[len("data:"):] if raw.startswith("data:") else raw).get("error", "")
        except Exception:  # pylint: disable=broad-except
            body = str(error.reason)
        if "unknown model" in body.lower():
            return ProbeError("unknown_model", prefix + body)
        # Triton answers inputs it cannot parse with a 500 ("Unable to parse ..."), a request the
        # model refuses with a 400: both are wrong inputs, not a broken server.
        if error.code in (401, 403) or "restricted" in body.lower():
            return ProbeError("forbidden", prefix + "refused by the server (%s): %s" % (error.code, _first_line(body)))
        if error.code == 400 or body.startswith("Unable to parse"):
            return ProbeError("bad_request", prefix + "request refused (%s): %s" % (error.code, _first_line(body)))
        return ProbeError("server_error", prefix + "HTTP %s: %s" % (error.code, _first_line(body)))
    reason = getattr(error, "reason", error) if isinstance(error, URLError) else error
    if isinstance(reason, ssl.SSLError) or "ssl" in text.lower() or "certificate" in text.lower():
        return ProbeError("tls", prefix + "TLS failure: " + _first_line(str(reason)))
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in text.lower():
        return ProbeError("timeout", prefix + "timed out: " + _first_line(str(reason)))
    if isinstance(reason, ConnectionRefusedError) or "refused" in text.lower():
        return ProbeError("connection_refused", prefix + "connection refused: " + _first_line(str(reason)))
    if isinstance(reason, (OSError, EOFError)):
        return ProbeError("connection_refused", prefix + "connection failed: " + _first_line(str(reason)))
    return ProbeError("server_error", prefix + _first_line(text))


def percentile(values, fraction):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def build_request_values(config, prompt, sampling_parameters, stream, extra_inputs):
    """The input values a generation request sends, chosen from the inputs the
    model declares: the vLLM backend's text_input / stream /
    sampling_parameters (JSON) / exclude_input_in_output /
    return_num_output_tokens, the TensorRT-LLM ensemble's separate sampling
    tensors (max_tokens, temperature, ...) and the LLM API's `streaming` /
    `sampling_param_*`. `extra_inputs` is sent as given."""
    declared = set(spec["name"] for spec in config.get("input", []))
    if "text_input" not in declared:
        raise ProbeError("bad_request", "model '%s' declares no text_input input, so it cannot be asked to "
                         "generate (set generate: false for it)" % config.get("name"))
    values = {"text_input": prompt}
    if "stream" in declared:
        values["stream"] = bool(stream)
    if "streaming" in declared:
        values["streaming"] = bool(stream)
    if "sampling_parameters" in declared:
        values["sampling_parameters"] = json.dumps(sampling_parameters, sort_keys=True)
    if "exclude_input_in_output" in declared:
        values["exclude_input_in_output"] = True
    if "return_num_output_tokens" in declared:
        values["return_num_output_tokens"] = True
    for key, value in sampling_parameters.items():
        for name in (key, "sampling_param_" + key):
            if name in declared and name not in values:
                values[name] = value
    values.update(extra_inputs or {})
    return values


def _tensor_spec(config, name, value):
    """(datatype, numpy dtype, shape) of one input, from the model config."""
    spec = dict((s["name"], s) for s in config.get("input", [])).get(name)
    if spec is None:  # not declared: let Triton refuse it with its own message
        datatype = "BYTES" if isinstance(value, str) else "BOOL" if isinstance(value, bool) else \
            "INT64" if isinstance(value, int) else "FP32"
        return datatype, _DATATYPES["TYPE_" + {"BYTES": "STRING"}.get(datatype, datatype)][1], [1]
    datatype, dtype = _DATATYPES.get(spec.get("data_type", "TYPE_STRING"), ("BYTES", "object"))
    dims = [1 if int(d) < 0 else int(d) for d in spec.get("dims", [1])] or [1]
    if int(config.get("max_batch_size", 0) or 0) > 0:
        dims = [1] + dims
    return datatype, dtype, dims


class Generation:
    """What one generation request produced, and how long it took."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.chunks = []
        self.responses = 0
        self.reported_tokens = None
        self.ttft_s = None
        self.latency_s = None

    @property
    def text(self):
        return "".join(self.chunks)

    def add(self, text, num_output_tokens, started):
        self.responses += 1
        if text:
            if self.ttft_s is None:
                self.ttft_s = time.monotonic() - started
            self.chunks.append(text)
        if num_output_tokens is not None:
            self.reported_tokens = (self.reported_tokens or 0) + int(num_output_tokens)

    def output_tokens(self):
        """(count, source): the server's num_output_tokens when the model
        returns it, else one token per streamed response, else words."""
        if self.reported_tokens is not None:
            return self.reported_tokens, "num_output_tokens"
        if self.endpoint in ("grpc_stream", "generate_stream") and len([c for c in self.chunks if c]) > 1:
            return len([c for c in self.chunks if c]), "stream_responses"
        return len(self.text.split()), "words"

    def as_dict(self):
        tokens, source = self.output_tokens()
        latency = self.latency_s or 0.0
        return {
            "endpoint": self.endpoint,
            "text": self.text,
            "length": len(self.text),
            "responses": self.responses,
            "output_tokens": tokens,
            "output_tokens_source": source,
            "ttft_ms": round(1000.0 * (self.ttft_s if self.ttft_s is not None else latency), 3),
            "latency_ms": round(1000.0 * latency, 3),
            "output_tokens_per_second": round(tokens / latency, 3) if latency > 0 else None,
        }


def _decode_text(array):
    if array is None:
        return ""
    items = array.reshape(-1).tolist()
    return "".join(i.decode("utf-8", "replace") if isinstance(i, bytes) else str(i) for i in items)


def _model_path(name, version, endpoint):
    """/v2/models/<name>[/versions/<version>]/<endpoint>, the name and version URL-quoted."""
    return "/v2/models/%s%s/%s" % (quote(name, safe=""), "/versions/%s" % quote(str(version), safe="")
                                   if version else "", endpoint)


class TritonProbe:
    """One Triton server, over HTTP or gRPC, with optional TLS and headers.
    HTTP: the standard library only; gRPC: tritonclient[grpc] and numpy."""

    def __init__(self, url=None, protocol="http", headers=None, tls=False, ca_cert=None, client_cert=None,
                 client_key=None, validate_certs=True, request_timeout=60.0):
        self.protocol = protocol
        self.url = (url or "127.0.0.1:%d" % DEFAULT_PORTS[protocol])
        for scheme in ("https://", "http://", "grpcs://", "grpc://"):
            if self.url.startswith(scheme):
                tls = tls or scheme in ("https://", "grpcs://")
                self.url = self.url[len(scheme):]
        self.url = self.url.rstrip("/")
        self.headers = dict(headers or {})
        self.tls = tls
        self.ca_cert, self.client_cert, self.client_key = ca_cert, client_cert, client_key
        self.validate_certs = validate_certs
        self.request_timeout = float(request_timeout)
        self._client = None

    # -- gRPC: tritonclient ------------------------------------------------
    def client(self):
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self):
        grpcclient = _grpc_modules()[0]
        return grpcclient.InferenceServerClient(
            self.url, ssl=self.tls, root_certificates=self.ca_cert, private_key=self.client_key,
            certificate_chain=self.client_cert)

    def close(self):
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # pylint: disable=broad-except
                pass
            self._client = None

    def _call(self, what, method, *args, **kwargs):
        try:
            return getattr(self.client(), method)(*args, headers=self.headers, client_timeout=self.request_timeout,
                                                  **kwargs)
        except Exception as error:  # pylint: disable=broad-except
            # A broken connection can leave the client unusable: start afresh next time.
            self.close()
            raise classify(error, what)

    # -- HTTP: the KServe v2 REST endpoints, standard library only ----------
    def _open(self, method, path, data=None, headers=None):
        """The response to one request; raises HTTPError for a status other than 2xx."""
        url = "%s://%s%s" % ("https" if self.tls else "http", self.url, path)
        all_headers = dict(self.headers)
        all_headers.update(headers or {})
        if self.tls:
            return open_url(url, data=data, headers=all_headers, method=method, validate_certs=self.validate_certs,
                            ca_path=self.ca_cert, client_cert=self.client_cert, client_key=self.client_key,
                            timeout=self.request_timeout, use_proxy=False)
        # Plain HTTP: open_url would load the system CA store for nothing (~80 ms a request).
        request = urllib_request.Request(url, data=data, headers=all_headers, method=method)
        return _PLAIN_OPENER.open(request, timeout=self.request_timeout)

    def _http_json(self, what, method, path, body=None):
        """The JSON answer of a REST call; Triton's {"error": ...} of a failed
        one ends up in the ProbeError's message (classify reads it)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {} if body is None else {"Content-Type": "application/json"}
        try:
            response = self._open(method, path, data, headers)
            try:
                return json.loads(response.read().decode("utf-8"))
            finally:
                response.close()
        except Exception as error:  # pylint: disable=broad-except
            raise classify(error, what)

    def _http_health(self, what, path):
        """A health endpoint: True on 200. Triton answers "not live / not
        ready" (and a model it does not know) with 400 and no body; like
        tritonclient's is_*_ready, every status but 200 is False - except 401
        and 403, a missing header of a restricted API or a gateway's refusal,
        which no wait cures: those raise (forbidden)."""
        try:
            response = self._open("GET", path)
        except HTTPError as error:
            if error.code in (401, 403):
                raise classify(error, what)
            error.close()
            return False
        except Exception as error:  # pylint: disable=broad-except
            raise classify(error, what)
        response.close()
        return response.getcode() == 200

    # -- health, metadata, model and repository APIs ---------------------------
    def server_live(self):
        if self.protocol == "grpc":
            return bool(self._call("server live", "is_server_live"))
        return self._http_health("server live", "/v2/health/live")

    def server_ready(self):
        if self.protocol == "grpc":
            return bool(self._call("server ready", "is_server_ready"))
        return self._http_health("server ready", "/v2/health/ready")

    def server_metadata(self):
        if self.protocol == "grpc":
            return self._call("server metadata", "get_server_metadata", as_json=True)
        return self._http_json("server metadata", "GET", "/v2")

    def model_ready(self, name, version=""):
        if self.protocol == "grpc":
            return bool(self._call("model %s ready" % name, "is_model_ready", name, version))
        return self._http_health("model %s ready" % name, _model_path(name, version, "ready"))

    def model_config(self, name, version=""):
        if self.protocol == "grpc":
            return self._call("model %s config" % name, "get_model_config", name, version, as_json=True)["config"]
        return self._http_json("model %s config" % name, "GET", _model_path(name, version, "config"))

    def repository_index(self):
        """[{name, version, state, reason}] of every model in the repository."""
        if self.protocol == "grpc":
            return self._call("repository index", "get_model_repository_index", as_json=True).get("models", [])
        return self._http_json("repository index", "POST", "/v2/repository/index", body={})

    # -- generation --------------------------------------------------------
    def generate(self, name, version, config, prompt, sampling_parameters, stream=True, extra_inputs=None):
        """Generation a decoupled model answers over gRPC streaming or HTTP
        generate_stream; any other over gRPC infer or HTTP generate."""
        decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
        values = build_request_values(config, prompt, sampling_parameters, stream and decoupled, extra_inputs)
        if self.protocol == "grpc":
            if decoupled:
                return self._grpc_stream(name, version, config, values)
            return self._grpc_infer(name, version, config, values)
        return self._http_generate(name, version, values, stream=decoupled and stream)

    @staticmethod
    def _grpc_inputs(config, values):
        grpcclient, np = _grpc_modules()
        inputs = []
        for name, value in values.items():
            datatype, dtype, shape = _tensor_spec(config, name, value)
            tensor = grpcclient.InferInput(name, shape, datatype)
            if datatype == "BYTES":
                value = value if isinstance(value, (str, bytes)) else json.dumps(value)
            tensor.set_data_from_numpy(np.full(shape, value, dtype=dtype))
            inputs.append(tensor)
        return inputs

    @staticmethod
    def _grpc_outputs(result, generation, started):
        tokens = result.as_numpy("num_output_tokens")
        generation.add(_decode_text(result.as_numpy("text_output")),
                       int(tokens.reshape(-1).sum()) if tokens is not None else None, started)

    def _grpc_infer(self, name, version, config, values):
        generation = Generation("grpc_infer")
        client = self.new_client()
        started = time.monotonic()
        try:
            result = client.infer(name, self._grpc_inputs(config, values), model_version=version,
                                  headers=self.headers, client_timeout=self.request_timeout)
            self._grpc_outputs(result, generation, started)
        except Exception as error:  # pylint: disable=broad-except
            raise classify(error, "generate on %s" % name)
        finally:
            client.close()
        generation.latency_s = time.monotonic() - started
        return generation

    def _grpc_stream(self, name, version, config, values):
        generation = Generation("grpc_stream")
        answers = queue.Queue()
        # A client per request: a gRPC client holds a single stream.
        client = self.new_client()
        try:
            client.start_stream(callback=lambda result, error: answers.put((result, error)),
                                stream_timeout=self.request_timeout, headers=self.headers)
            started = time.monotonic()
            client.async_stream_infer(name, self._grpc_inputs(config, values), model_version=version,
                                      enable_empty_final_response=True)
            deadline = started + self.request_timeout
            while True:
                try:
                    result, error = answers.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise ProbeError("timeout", "generate on %s: timed out after %ss waiting for the final "
                                     "response" % (name, self.request_timeout))
                if error is not None:
                    raise classify(error, "generate on %s" % name)
                self._grpc_outputs(result, generation, started)
                final = result.get_response().parameters.get("triton_final_response")
                if final is not None and final.bool_param:
                    break
            generation.latency_s = time.monotonic() - started
        except ProbeError:
            raise
        except Exception as error:  # pylint: disable=broad-except
            raise classify(error, "generate on %s" % name)
        finally:
            self._close_stream(client, cancel=generation.latency_s is None)
        return generation

    @staticmethod
    def _close_stream(client, cancel):
        """Ends the stream; cancels the request only when it did not finish
        (a timeout or an error), so the server stops generating for nobody."""
        try:
            if cancel:
                try:
                    client.stop_stream(cancel_requests=True)
                except TypeError:  # tritonclient older than 2.45 cannot cancel
                    client.stop_stream()
            else:
                client.stop_stream()
        except Exception:  # pylint: disable=broad-except
            pass
        client.close()

    def _http_generate(self, name, version, values, stream):
        endpoint = "generate_stream" if stream else "generate"
        generation = Generation(endpoint)
        started = time.monotonic()
        try:
            response = self._open("POST", _model_path(name, version, endpoint), json.dumps(values).encode("utf-8"),
                                  {"Content-Type": "application/json"})
            try:
                if stream:
                    self._read_events(response, generation, started, name)
                else:
                    self._add_http_answer(json.loads(response.read().decode("utf-8")), generation, started, name)
            finally:
                response.close()
        except ProbeError:
            raise
        except Exception as error:  # pylint: disable=broad-except
            raise classify(error, "generate on %s" % name)
        generation.latency_s = time.monotonic() - started
        return generation

    @staticmethod
    def _add_http_answer(answer, generation, started, name):
        if "error" in answer:  # Triton reports a failure inside a 200 stream this way
            raise ProbeError("server_error", "generate on %s: %s" % (name, _first_line(answer["error"])))
        text = answer.get("text_output", "")
        if isinstance(text, list):
            text = "".join(str(t) for t in text)
        tokens = answer.get("num_output_tokens")
        if isinstance(tokens, list):
            tokens = sum(int(t) for t in tokens)
        generation.add(text, tokens, started)

    def _read_events(self, response, generation, started, name):
        """Server-sent events: `data: {json}` lines; the stream ends when the
        server closes it after the final response."""
        while True:
            line = response.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[len(b"data:"):].strip()
            if payload == b"[DONE]":
                break
            self._add_http_answer(json.loads(payload.decode("utf-8")), generation, started, name)
