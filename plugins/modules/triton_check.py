#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: triton_check
short_description: Check that a Triton Inference Server really serves its models, and how fast
version_added: "0.1.0"
description:
  - Reads the state of a Triton Inference Server over HTTP (its KServe v2 REST API, with the
    Python standard library) or gRPC (with C(tritonclient)) - server live and ready, each model
    ready, its config, the repository index with the reason of every C(UNAVAILABLE) model - then
    asks each model to generate and checks the answer.
  - Decoupled models (the vLLM backend, TensorRT-LLM in decoupled mode) are streamed over gRPC
    (C(start_stream), final response flag) or HTTP C(generate_stream) (server-sent events); other
    models are asked over gRPC C(infer) or HTTP C(generate).
  - Waits with exponential backoff until the server and the models are ready, up to O(wait_timeout).
    A model that is still loading is waited for; a model that failed to load, is not loaded, or
    is unknown stops the wait at once, with the reason from the repository index.
  - Times every generation (time to first token, total latency, output tokens per second) and
    fails when a threshold is crossed. An optional concurrency probe sends O(concurrency)
    requests at once and reports p50 and p95 latency and throughput.
  - It only reads and generates, so it never reports a change and runs the same in check mode.
  - The module runs on the target host. With O(protocol=http) (the default) it needs nothing beyond
    the Python that Ansible already uses there; with O(protocol=grpc) that Python needs
    C(tritonclient[grpc]) and numpy.
author:
  - onprem.triton maintainers (@onprem-triton)
requirements:
  - For O(protocol=grpc) only, on the host that runs the module, C(tritonclient[grpc]) (2.40 or later) and
    C(numpy). O(protocol=http) needs only the Python standard library.
extends_documentation_fragment:
  - onprem.triton.read_only
options:
  url:
    description:
      - Address of the server, C(host:port). A C(https://) or C(grpcs://) prefix turns on O(tls).
      - Defaults to C(127.0.0.1:8000) for HTTP and C(127.0.0.1:8001) for gRPC.
    type: str
  protocol:
    description:
      - Protocol for every request.
      - V(http) uses only the Python standard library (urllib), so any host with the Python that Ansible
        uses can run it.
      - V(grpc) needs C(tritonclient[grpc]) and C(numpy) on the host that runs the module.
    type: str
    choices: [http, grpc]
    default: http
  tls:
    description: Use TLS (HTTPS or gRPC over TLS).
    type: bool
    default: false
  ca_cert:
    description: CA bundle that signs the server certificate (PEM file on the target).
    type: path
  client_cert:
    description: Client certificate for mutual TLS (PEM file on the target).
    type: path
  client_key:
    description: Private key of O(client_cert) (PEM file on the target).
    type: path
  validate_certs:
    description:
      - Verify the server certificate over HTTPS (the system CA store, or O(ca_cert)). gRPC over TLS always
        verifies it (give O(ca_cert)).
    type: bool
    default: true
  headers:
    description:
      - HTTP headers or gRPC metadata sent with every request (for example an authorization
        header of a gateway, or Triton's restricted-API header). Values are kept out of the logs.
      - Triton expects the header of C(--grpc-restricted-protocol=<apis>:<key>=<value>) as
        C(triton-grpc-protocol-<key>), the one of C(--http-restricted-api) as C(<key>).
    type: dict
    default: {}
  models:
    description:
      - The models to check. Each one must be ready; its config is read and, unless its C(generate)
        is false, it is asked to generate.
      - Each item is a model name, or a dict with C(name) (required, the model's name in the
        repository), C(version) (empty - the version Triton serves by its policy), C(generate) (bool,
        default true; false for models without a C(text_input) input), C(prompt) (instead of
        O(prompt)), C(expected_substring) and C(expected_regex) (instead of O(expected_substring) and
        O(expected_regex)). An unknown key or a wrong type fails naming C(models[N].key).
      - An empty list checks only the server.
    type: list
    elements: raw
    default: []
  generate:
    description: Ask each model to generate. False makes this a readiness-only check.
    type: bool
    default: true
  prompt:
    description: Prompt sent to every model.
    type: str
    default: "Reply with one short sentence about the sea."
  sampling_parameters:
    description:
      - Sampling parameters. Sent as the JSON C(sampling_parameters) input when the model declares it
        (vLLM backend); keys that match an input name of the model (C(max_tokens), C(temperature), ...
        of the TensorRT-LLM ensemble, or C(sampling_param_*) of the LLM API) are sent as those inputs.
    type: dict
    default: {max_tokens: 32, temperature: 0}
  stream:
    description:
      - Ask decoupled models to stream tokens (sets their C(stream) input), which is what makes time to
        first token meaningful. False asks for a single response.
    type: bool
    default: true
  extra_inputs:
    description:
      - More inputs sent as given, by name (for example C(exclude_input_in_output), C(lora_name) of a model
        taking it as an input). Triton refuses names the model does not declare, with a 400.
    type: dict
    default: {}
  expected_substring:
    description: Substring every answer must contain.
    type: str
  expected_regex:
    description: Regular expression (Python C(re.search)) every answer must match.
    type: str
  min_length:
    description: Minimum number of characters of every answer (1 means non-empty).
    type: int
    default: 1
  max_ttft_ms:
    description: Fail when the time to first token exceeds this many milliseconds.
    type: float
  max_latency_ms:
    description: Fail when a generation takes longer than this many milliseconds in total.
    type: float
  min_tokens_per_second:
    description: Fail when a generation produces fewer output tokens per second than this.
    type: float
  concurrency:
    description:
      - Also send this many requests at once to each model and report p50 and p95 latency and
        throughput. 0 skips the probe.
    type: int
    default: 0
  max_p95_ms:
    description: Fail when the p95 latency of the concurrency probe exceeds this many milliseconds.
    type: float
  openai:
    description:
      - Also probe the OpenAI-compatible API (Triton's OpenAI frontend, or a gateway in front of it), after
        the KServe checks passed. C(GET /v1/models) must list the model, a streamed chat completion must answer
        (its time to first token and output tokens per second are reported), and, with O(openai.check_refusal),
        a request with a wrong key and one with no key must both be refused (HTTP 401 or 403).
      - A refusal of O(openai.api_key) itself fails with RV(error_kind=forbidden) and says so.
    type: dict
    suboptions:
      url:
        description: Address of the OpenAI API, C(host:port) or C(http(s)://host:port) (a trailing C(/v1) is dropped).
        type: str
        required: true
      api_key:
        description: "The key, sent as C(Authorization: Bearer KEY). Empty sends none."
        type: str
        default: ""
      model:
        description: The model to list and ask. Default, the first of O(models).
        type: str
      prompt:
        description: The user message of the chat completion. Default, O(prompt).
        type: str
      max_tokens:
        description: C(max_tokens) of the chat completion.
        type: int
        default: 16
      check_refusal:
        description: Also check that a wrong key and a missing key are refused.
        type: bool
        default: true
      max_ttft_ms:
        description: Fail when the chat completion's time to first token exceeds this many milliseconds.
        type: float
      min_tokens_per_second:
        description: Fail when the chat completion produces fewer output tokens per second than this.
        type: float
  require_server_ready:
    description:
      - Wait for the server's own readiness too. Triton's strict readiness is false while any loaded
        model is not ready, so this also catches models that were not named in O(models).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the server and the models to become ready, retrying with exponential
        backoff (0.5 s doubling up to 10 s). 0 checks once.
    type: float
    default: 300
  request_timeout:
    description: Seconds each request may take, generation included.
    type: float
    default: 60
notes:
  - Triton's HTTP endpoints C(/v2/models/<m>/infer) refuse decoupled models; this module never uses
    them for generation. HTTP generation goes through Triton's generate extension.
  - Output tokens are the C(num_output_tokens) the model returns when it declares the
    C(return_num_output_tokens) input (vLLM backend), otherwise the number of streamed responses,
    otherwise the number of words of the answer (RV(models[].generation.output_tokens_source) says which).
seealso:
  - name: Triton generate extension
    description: The HTTP generate and generate_stream endpoints.
    link: https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_generate.md
"""

EXAMPLES = r"""
- name: Gate the rollout on a real generation from the vLLM model
  onprem.triton.triton_check:
    url: 127.0.0.1:8001
    protocol: grpc
    models:
      - name: llama3
    sampling_parameters:
      max_tokens: 32
      temperature: 0
    max_ttft_ms: 2000
    wait_timeout: 900
  register: triton_gate

- name: Readiness only, over HTTPS through a gateway that wants a token
  onprem.triton.triton_check:
    url: https://triton.example.internal:8443
    ca_cert: /etc/ssl/certs/internal-ca.pem
    headers:
      Authorization: "Bearer {{ triton_gateway_token }}"
    generate: false
    models:
      - name: llama3
      - name: mistral
        version: "2"

- name: Check the answer and measure throughput under 8 parallel requests
  onprem.triton.triton_check:
    models:
      - name: llama3
        prompt: "What is the capital of France? Answer in one word."
        expected_regex: "(?i)paris"
    concurrency: 8
    max_p95_ms: 5000
  register: triton_load

- name: Probe the OpenAI API of the server (models, a streamed chat, a wrong and a missing key refused)
  onprem.triton.triton_check:
    url: 127.0.0.1:8000
    models: [llama3]
    openai:
      url: 127.0.0.1:9000
      api_key: "{{ triton_server_openai_api_key }}"
      max_ttft_ms: 2000
  register: triton_openai

- name: Show the figures
  ansible.builtin.debug:
    msg: "TTFT {{ triton_load.models[0].generation.ttft_ms }} ms, p95 {{ triton_load.models[0].concurrency.p95_ms }} ms"
"""

RETURN = r"""
msg:
  description: One-line verdict.
  returned: always
  type: str
  sample: "1 model(s) ready and generating on 127.0.0.1:8001 (grpc)"
url:
  description: The address checked (without scheme).
  returned: always
  type: str
  sample: 127.0.0.1:8001
protocol:
  description: The protocol used.
  returned: always
  type: str
  sample: grpc
server:
  description: Server state.
  returned: always
  type: dict
  contains:
    live:
      description: Server live (C(/v2/health/live)); null when unreachable.
      type: bool
      sample: true
    ready:
      description: Server ready (C(/v2/health/ready)); null when unreachable.
      type: bool
      sample: true
    version:
      description: Triton version from the server metadata.
      type: str
      sample: "2.51.0"
    extensions:
      description: Protocol extensions the server announces.
      type: list
      elements: str
      sample: [classification, sequence, model_repository, generate]
repository_index:
  description: The repository index (name, version, state, reason) as last read.
  returned: when the server answered
  type: list
  elements: dict
  sample:
    - {name: llama3, version: "1", state: READY, reason: ""}
    - {name: broken, version: "1", state: UNAVAILABLE, reason: "AsyncEngineArgs.__init__() got an unexpected keyword argument 'x'"}
models:
  description: One entry per model of O(models).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Model name.
      type: str
      sample: llama3
    version:
      description: Version asked for (empty for the policy's choice).
      type: str
      sample: ""
    ready:
      description: Whether the model is ready.
      type: bool
      sample: true
    state:
      description: State in the repository index (READY, LOADING, UNAVAILABLE, ...); null when not listed or not loaded.
      type: str
      sample: READY
    reason:
      description: Reason the repository index gives for the state (why it failed to load).
      type: str
      sample: ""
    backend:
      description: Backend or platform from the model config.
      type: str
      sample: vllm
    decoupled:
      description: Whether the model uses the decoupled transaction policy.
      type: bool
      sample: true
    config:
      description: The model config as Triton completed it.
      type: dict
      sample: {name: llama3, backend: vllm, max_batch_size: 0}
    generation:
      description: The generation made, when asked.
      type: dict
      contains:
        endpoint:
          description: How it was asked (grpc_stream, grpc_infer, generate_stream, generate).
          type: str
          sample: grpc_stream
        text:
          description: The answer (streamed text_output accumulated).
          type: str
          sample: " The sea is vast."
        length:
          description: Characters in the answer.
          type: int
          sample: 17
        responses:
          description: Responses received (one per token when streaming).
          type: int
          sample: 6
        output_tokens:
          description: Output tokens counted.
          type: int
          sample: 5
        output_tokens_source:
          description: Where the count comes from (num_output_tokens, stream_responses, words).
          type: str
          sample: num_output_tokens
        ttft_ms:
          description: Time to first token in milliseconds (the whole latency when not streamed).
          type: float
          sample: 41.2
        latency_ms:
          description: Total latency in milliseconds.
          type: float
          sample: 180.5
        output_tokens_per_second:
          description: Output tokens divided by the total latency.
          type: float
          sample: 27.7
    concurrency:
      description: The concurrency probe, when O(concurrency) > 0.
      type: dict
      contains:
        requests:
          description: Requests sent at once.
          type: int
          sample: 8
        succeeded:
          description: Requests that answered.
          type: int
          sample: 8
        errors:
          description: Error messages of the requests that failed.
          type: list
          elements: str
          sample: []
        p50_ms:
          description: Median latency in milliseconds.
          type: float
          sample: 210.0
        p95_ms:
          description: 95th percentile latency in milliseconds.
          type: float
          sample: 320.4
        wall_ms:
          description: Time from the first request sent to the last answer.
          type: float
          sample: 330.9
        requests_per_second:
          description: Answered requests per second of wall time.
          type: float
          sample: 24.2
        output_tokens_per_second:
          description: Output tokens of all answers per second of wall time.
          type: float
          sample: 690.1
    checks:
      description: Every check made on this model, passed or not.
      type: list
      elements: dict
      sample: [{name: min_length, passed: true, detail: "17 >= 1 characters"}]
    failures:
      description: What failed for this model.
      type: list
      elements: str
      sample: []
openai:
  description: The OpenAI API probe, when O(openai) is set.
  returned: when O(openai) is set and the KServe checks passed
  type: dict
  contains:
    url:
      description: The base URL probed.
      type: str
      sample: http://127.0.0.1:9000
    models:
      description: The ids C(GET /v1/models) listed.
      type: list
      elements: str
      sample: [llama3]
    generation:
      description: The streamed chat completion (text, chunks, output_tokens, output_tokens_source, ttft_ms, latency_ms,
        output_tokens_per_second).
      type: dict
      sample: {text: " The sea is vast.", chunks: 5, output_tokens: 5, output_tokens_source: usage, ttft_ms: 38.1,
               latency_ms: 160.2, output_tokens_per_second: 31.2}
    refusals:
      description: The HTTP status of C(GET /v1/models) with a wrong key and with none (401 or 403 when refused).
      type: dict
      sample: {wrong_key: 401, missing_key: 401}
    checks:
      description: Every check made on the OpenAI API, passed or not.
      type: list
      elements: dict
      sample: [{name: openai_refuses_wrong_key, passed: true, detail: "a wrong key is refused (HTTP 401)"}]
failures:
  description: Everything that failed; empty when the check passed.
  returned: always
  type: list
  elements: str
  sample: ["model broken failed to load: RuntimeError: engine crashed"]
error_kind:
  description: Class of the first failure talking to the server
    (connection_refused, tls, timeout, forbidden, unknown_model, bad_request, server_error, not_loaded,
    load_failed, loading, not_live, server_not_ready, check).
  returned: on failure
  type: str
  sample: connection_refused
waited_s:
  description: Seconds spent waiting for readiness.
  returned: always
  type: float
  sample: 12.5
attempts:
  description: Readiness probes made.
  returned: always
  type: int
  sample: 4
"""

import re
import threading
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.onprem.triton.plugins.module_utils.openai_probe import (
    WRONG_KEY,
    OpenAIError,
    OpenAIProbe,
)
from ansible_collections.onprem.triton.plugins.module_utils.triton_probe import (
    ProbeError,
    TritonProbe,
    grpc_import_error,
    percentile,
)

_INITIAL_DELAY_S = 0.5
_MAX_DELAY_S = 10.0
# Failures that waiting cannot fix: stop at once.
_TERMINAL_KINDS = ("tls", "forbidden", "unknown_model", "load_failed", "not_loaded")


class TritonCheck:
    """The check: wait for readiness, read configs, generate, compare to thresholds."""

    def __init__(self, params, probe=None, sleep=time.sleep, clock=time.monotonic, openai_probe=None):
        self.params = params
        self.openai_probe = openai_probe
        self.openai = None
        self.probe = probe or TritonProbe(
            url=params["url"], protocol=params["protocol"], headers=params["headers"], tls=params["tls"],
            ca_cert=params["ca_cert"], client_cert=params["client_cert"], client_key=params["client_key"],
            validate_certs=params["validate_certs"], request_timeout=params["request_timeout"])
        self.sleep = sleep
        self.clock = clock
        self.server = {"live": None, "ready": None, "version": None, "extensions": []}
        self.index = None
        self.models = [self._model_entry(m) for m in params["models"]]
        self.failures = []
        self.error_kind = None
        self.attempts = 0
        self.waited_s = 0.0

    @staticmethod
    def _model_entry(spec):
        return {"name": spec["name"], "version": spec.get("version") or "", "ready": False, "state": None,
                "reason": "", "backend": None, "decoupled": None, "config": None, "checks": [], "failures": []}

    def fail(self, kind, message, model=None):
        if self.error_kind is None:
            self.error_kind = kind
        self.failures.append(message)
        if model is not None:
            model["failures"].append(message)

    # -- readiness ---------------------------------------------------------
    def _index_entry(self, model):
        for entry in self.index or []:
            if entry.get("name") == model["name"] and (not model["version"] or
                                                       str(entry.get("version", "")) == model["version"]):
                return entry
        return None

    def _model_blocker(self, model):
        """None when ready, else (kind, message); kinds in _TERMINAL_KINDS stop the wait."""
        model["ready"] = self.probe.model_ready(model["name"], model["version"])
        entry = self._index_entry(model)
        if entry is None and self.index is not None and not model["ready"]:
            return "unknown_model", "model %s is not in the repository (unknown model)" % model["name"]
        if entry is not None:
            model["state"] = entry.get("state")
            model["reason"] = entry.get("reason", "")
        if model["ready"]:
            return None
        state, reason = model["state"], model["reason"]
        if state == "UNAVAILABLE" and reason and reason.strip().lower() != "unloaded":
            return "load_failed", "model %s failed to load: %s" % (model["name"], reason.strip())
        if state in (None, "", "UNAVAILABLE", "UNLOADING"):
            return "not_loaded", ("model %s is in the repository but not loaded (%s); with explicit model "
                                  "control load it with --load-model or the repository API"
                                  % (model["name"], (reason or state or "never loaded").strip()))
        return "loading", "model %s is %s" % (model["name"], state)

    def _probe_once(self):
        """None when everything is ready, else (kind, message) of what is not."""
        self.server["live"] = self.probe.server_live()
        if not self.server["live"]:
            return "not_live", "server is not live"
        self.index = self.probe.repository_index()
        blockers = [b for b in (self._model_blocker(m) for m in self.models) if b]
        terminal = [b for b in blockers if b[0] in _TERMINAL_KINDS]
        if terminal:
            return terminal[0]
        if blockers:
            return blockers[0]
        self.server["ready"] = self.probe.server_ready()
        if self.params["require_server_ready"] and not self.server["ready"]:
            broken = [e for e in self.index if e.get("state") == "UNAVAILABLE" and
                      (e.get("reason") or "").strip().lower() not in ("", "unloaded")]
            if broken:
                return "load_failed", "server is not ready: model %s failed to load: %s" % (
                    broken[0]["name"], broken[0]["reason"].strip())
            return "server_not_ready", "server is not ready"
        return None

    def wait_until_ready(self):
        started = self.clock()
        deadline = started + self.params["wait_timeout"]
        delay = _INITIAL_DELAY_S
        while True:
            self.attempts += 1
            try:
                blocker = self._probe_once()
            except ProbeError as error:
                blocker = (error.kind, error.message)
                if error.kind in ("connection_refused", "timeout"):
                    self.server["live"] = None
            self.waited_s = round(self.clock() - started, 3)
            if blocker is None:
                return True
            kind, message = blocker
            if kind in _TERMINAL_KINDS or self.clock() + delay > deadline:
                if kind not in _TERMINAL_KINDS and self.params["wait_timeout"] > 0:
                    message = "not ready after %ss: %s" % (self.params["wait_timeout"], message)
                for model in self.models:
                    if not model["ready"] and model["name"] in message:
                        self.fail(kind, message, model)
                        break
                else:
                    self.fail(kind, message)
                return False
            self.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY_S)

    # -- per model -----------------------------------------------------------
    def read_server_metadata(self):
        try:
            metadata = self.probe.server_metadata()
            self.server["version"] = metadata.get("version")
            self.server["extensions"] = list(metadata.get("extensions", []))
        except ProbeError:
            pass  # the metadata only informs; readiness decides

    def read_config(self, model):
        config = self.probe.model_config(model["name"], model["version"])
        model["config"] = config
        model["backend"] = config.get("backend") or config.get("platform")
        model["decoupled"] = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
        return config

    def _model_option(self, spec, key):
        value = spec.get(key)
        return self.params[key] if value is None else value

    def _generate(self, spec, config):
        return self.probe.generate(
            spec["name"], spec.get("version") or "", config, self._model_option(spec, "prompt"),
            self.params["sampling_parameters"], stream=self.params["stream"],
            extra_inputs=self.params["extra_inputs"])

    def _check(self, model, name, passed, detail):
        model["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        if not passed:
            self.fail("check", "model %s: %s check failed: %s" % (model["name"], name, detail), model)

    def check_answer(self, model, spec, generation):
        text = generation["text"]
        minimum = self.params["min_length"]
        self._check(model, "min_length", len(text) >= minimum, "%d >= %d characters" % (len(text), minimum)
                    if len(text) >= minimum else "%d < %d characters: %r" % (len(text), minimum, text[:200]))
        substring = self._model_option(spec, "expected_substring")
        if substring is not None:
            verdict = "found" if substring in text else "not found"
            self._check(model, "expected_substring", substring in text,
                        "%r %s in the answer %r" % (substring, verdict, text[:200]))
        pattern = self._model_option(spec, "expected_regex")
        if pattern is not None:
            found = re.search(pattern, text) is not None
            self._check(model, "expected_regex", found, "/%s/ %s the answer %r" % (
                pattern, "matches" if found else "does not match", text[:200]))
        limits = (("max_ttft_ms", "ttft_ms", lambda v, t: v <= t, "<="),
                  ("max_latency_ms", "latency_ms", lambda v, t: v <= t, "<="),
                  ("min_tokens_per_second", "output_tokens_per_second", lambda v, t: v >= t, ">="))
        for option, key, within, sign in limits:
            threshold = self.params[option]
            if threshold is None:
                continue
            value = generation[key] or 0.0
            self._check(model, option, within(value, threshold), "%s %s %s %s" % (
                key, value, sign if within(value, threshold) else "not " + sign, threshold))

    def probe_concurrency(self, model, spec, config):
        count = self.params["concurrency"]
        results, errors = [], []
        lock = threading.Lock()

        def one():
            try:
                generation = self._generate(spec, config).as_dict()
                with lock:
                    results.append(generation)
            except ProbeError as error:
                with lock:
                    errors.append(error.message)

        threads = [threading.Thread(target=one) for dummy in range(count)]
        started = self.clock()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = max(self.clock() - started, 1e-9)
        latencies = [r["latency_ms"] for r in results]
        summary = {
            "requests": count, "succeeded": len(results), "errors": errors,
            "p50_ms": percentile(latencies, 0.5) if latencies else None,
            "p95_ms": percentile(latencies, 0.95) if latencies else None,
            "wall_ms": round(wall * 1000.0, 3),
            "requests_per_second": round(len(results) / wall, 3),
            "output_tokens_per_second": round(sum(r["output_tokens"] for r in results) / wall, 3),
        }
        model["concurrency"] = summary
        self._check(model, "concurrency", not errors, "%d/%d requests answered%s" % (
            len(results), count, (": " + errors[0]) if errors else ""))
        if self.params["max_p95_ms"] is not None and latencies:
            passed = summary["p95_ms"] <= self.params["max_p95_ms"]
            self._check(model, "max_p95_ms", passed, "p95_ms %s %s %s" % (
                summary["p95_ms"], "<=" if passed else "not <=", self.params["max_p95_ms"]))

    def check_model(self, model, spec):
        try:
            config = self.read_config(model)
            if not (self.params["generate"] and spec.get("generate", True)):
                return
            generation = self._generate(spec, config).as_dict()
            model["generation"] = generation
            self.check_answer(model, spec, generation)
            if self.params["concurrency"] > 0:
                self.probe_concurrency(model, spec, config)
        except ProbeError as error:
            self.fail(error.kind, "model %s: %s" % (model["name"], error.message), model)

    # -- the OpenAI API -------------------------------------------------------
    def _openai_check(self, name, passed, detail, kind="check"):
        self.openai["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        if not passed:
            self.fail(kind, "OpenAI API: %s" % detail)

    def check_openai(self, options):
        probe = self.openai_probe or OpenAIProbe(
            options["url"], options.get("api_key") or "", tls=self.params["tls"], ca_cert=self.params["ca_cert"],
            validate_certs=self.params["validate_certs"], request_timeout=self.params["request_timeout"])
        model = options.get("model") or (self.params["models"][0]["name"] if self.params["models"] else None)
        self.openai = {"url": probe.url, "models": None, "generation": None, "refusals": {}, "checks": []}
        try:
            self.openai["models"] = probe.list_models()
            self._openai_check("openai_models", model in self.openai["models"], "GET /v1/models %s %s (listed: %s)" % (
                "lists" if model in self.openai["models"] else "does not list", model,
                ", ".join(self.openai["models"]) or "none"), "unknown_model")
            generation = probe.chat_stream(model, options.get("prompt") or self.params["prompt"],
                                           options.get("max_tokens") or 16)
            self.openai["generation"] = generation
            self._openai_check("openai_chat_stream", generation["chunks"] > 0,
                               "a streamed chat completion of %s answered %d chunk(s)" % (model, generation["chunks"]))
            for option, key, within, sign in (("max_ttft_ms", "ttft_ms", lambda v, t: v <= t, "<="),
                                              ("min_tokens_per_second", "output_tokens_per_second",
                                               lambda v, t: v >= t, ">=")):
                threshold = options.get(option)
                if threshold is not None:
                    value = generation[key]
                    self._openai_check("openai_" + option, within(value, threshold), "%s %s %s %s" % (
                        key, value, sign if within(value, threshold) else "not " + sign, threshold))
        except OpenAIError as error:
            if error.kind == "forbidden":
                self.fail("forbidden", "OpenAI API: the key given was refused (%s); check openai.api_key" % error.message)
            else:
                self.fail(error.kind, "OpenAI API: %s" % error.message)
            return
        if options.get("check_refusal", True):
            for name, key in (("wrong_key", WRONG_KEY), ("missing_key", "")):
                try:
                    status = probe.refusal(key)
                except OpenAIError as error:
                    self.fail(error.kind, "OpenAI API: %s" % error.message)
                    return
                self.openai["refusals"][name] = status
                what = "a wrong key" if name == "wrong_key" else "a request without a key"
                refused = status in (401, 403)
                self._openai_check("openai_refuses_" + name, refused, "%s is refused (HTTP %d)" % (what, status)
                                   if refused else "%s is NOT refused (HTTP %d): the API is not protected" % (what, status))

    def run(self):
        try:
            if self.wait_until_ready():
                self.read_server_metadata()
                for model, spec in zip(self.models, self.params["models"]):
                    self.check_model(model, spec)
                if self.params.get("openai"):
                    self.check_openai(self.params["openai"])
        finally:
            self.probe.close()
        return self.result()

    def result(self):
        where = "%s (%s)" % (self.probe.url, self.params["protocol"])
        if self.failures:
            msg = "Triton check failed on %s: %s" % (where, "; ".join(self.failures))
        elif self.models:
            msg = "%d model(s) ready%s on %s" % (len(self.models), " and generating" if self.params["generate"]
                                                 else "", where)
        else:
            msg = "server live and ready on %s" % where
        result = {"changed": False, "msg": msg, "url": self.probe.url, "protocol": self.params["protocol"],
                  "server": self.server, "models": self.models, "failures": self.failures,
                  "waited_s": self.waited_s, "attempts": self.attempts}
        if self.index is not None:
            result["repository_index"] = self.index
        if self.openai is not None:
            result["openai"] = self.openai
        if self.failures:
            result["error_kind"] = self.error_kind
        return result


def argument_spec():
    return dict(
        url=dict(type="str"),
        protocol=dict(type="str", choices=["http", "grpc"], default="http"),
        tls=dict(type="bool", default=False),
        ca_cert=dict(type="path"),
        client_cert=dict(type="path"),
        client_key=dict(type="path", no_log=False),
        validate_certs=dict(type="bool", default=True),
        headers=dict(type="dict", default={}, no_log=True),
        # Names or dicts (MODEL_OPTIONS), normalised by normalize_models so errors name models[N].
        models=dict(type="list", elements="raw", default=[]),
        generate=dict(type="bool", default=True),
        prompt=dict(type="str", default="Reply with one short sentence about the sea."),
        sampling_parameters=dict(type="dict", default={"max_tokens": 32, "temperature": 0}),
        stream=dict(type="bool", default=True),
        extra_inputs=dict(type="dict", default={}),
        expected_substring=dict(type="str"),
        expected_regex=dict(type="str"),
        min_length=dict(type="int", default=1),
        max_ttft_ms=dict(type="float"),
        max_latency_ms=dict(type="float"),
        min_tokens_per_second=dict(type="float", no_log=False),
        concurrency=dict(type="int", default=0),
        max_p95_ms=dict(type="float"),
        openai=dict(type="dict", options=dict(
            url=dict(type="str", required=True),
            api_key=dict(type="str", default="", no_log=True),
            model=dict(type="str"),
            prompt=dict(type="str"),
            max_tokens=dict(type="int", default=16, no_log=False),
            check_refusal=dict(type="bool", default=True),
            max_ttft_ms=dict(type="float"),
            min_tokens_per_second=dict(type="float", no_log=False),
        )),
        require_server_ready=dict(type="bool", default=True),
        wait_timeout=dict(type="float", default=300),
        request_timeout=dict(type="float", default=60),
    )


# The keys of a models item: type and default.
MODEL_OPTIONS = {"name": ("str", None), "version": ("str", ""), "generate": ("bool", True), "prompt": ("str", None),
                 "expected_substring": ("str", None), "expected_regex": ("str", None)}


def normalize_models(items):
    """Model names or dicts -> (dicts with every key of MODEL_OPTIONS, error messages naming models[N].key)."""
    models, errors = [], []
    for index, item in enumerate(items):
        where = "models[%d]" % index
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            errors.append("%s must be a model name or a dict with a name, got %s %r" % (where, type(item).__name__, item))
            continue
        unknown = sorted(set(item) - set(MODEL_OPTIONS))
        if unknown:
            errors.append("%s.%s is not an option (known: %s)" % (where, unknown[0], ", ".join(sorted(MODEL_OPTIONS))))
            continue
        model = {}
        for key, (kind, default) in MODEL_OPTIONS.items():
            value = item.get(key, default)
            if value is None:
                model[key] = None
            elif kind == "bool":
                try:
                    model[key] = boolean(value, strict=True)
                except TypeError:
                    errors.append("%s.%s must be a boolean, got %r" % (where, key, value))
            elif isinstance(value, (dict, list)):
                errors.append("%s.%s must be a string, got %s" % (where, key, type(value).__name__))
            else:
                model[key] = str(value)
        if not model.get("name"):
            errors.append("%s.name is required and must be a non-empty string" % where)
        models.append(model)
    return models, errors


def validate(params):
    """Messages for arguments the spec cannot check, each naming the option."""
    errors = []
    for key in ("wait_timeout", "request_timeout", "min_length", "concurrency"):
        if params[key] < 0 or (key == "request_timeout" and params[key] == 0):
            bound = "positive" if key == "request_timeout" else ">= 0"
            errors.append("%s must be %s, got %s" % (key, bound, params[key]))
    patterns = [("expected_regex", params["expected_regex"])]
    patterns += [("models[%d].expected_regex" % i, m.get("expected_regex")) for i, m in enumerate(params["models"])]
    for name, pattern in patterns:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                errors.append("%s is not a valid regular expression: %s" % (name, error))
    names = [(m["name"], m.get("version") or "") for m in params["models"]]
    if len(set(names)) != len(names):
        errors.append("models lists the same name and version twice")
    if params["client_key"] and not params["client_cert"]:
        errors.append("client_key needs client_cert")
    openai = params.get("openai")
    if openai:
        if not (openai.get("model") or params["models"]):
            errors.append("openai.model is required when models is empty")
        if openai["max_tokens"] < 1:
            errors.append("openai.max_tokens must be >= 1, got %s" % openai["max_tokens"])
    return errors


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if module.params["protocol"] == "grpc":
        import_error = grpc_import_error()
        if import_error is not None:
            module.fail_json(msg=missing_required_lib("tritonclient[grpc]", reason="by protocol: grpc (with numpy)")
                             + ". Or set protocol: http, which needs nothing beyond this Python's standard library.",
                             exception=import_error)
    module.params["models"], errors = normalize_models(module.params["models"])
    if not errors:
        errors = validate(module.params)
    if errors:
        module.fail_json(msg="; ".join(errors))
    result = TritonCheck(module.params).run()
    if result["failures"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
