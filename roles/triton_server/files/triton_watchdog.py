# Copyright: onprem.triton contributors
# SPDX-License-Identifier: Apache-2.0
"""Watchdog of one Triton instance (onprem.triton.triton_server), run by a systemd timer.

Catches an engine that stops generating while the server still looks healthy: each
run asks every prompt model for one short real generation through Triton's HTTP
generate endpoint (KServe v2 generate extension). A failure counts only while
/v2/health/ready says ready and the model says ready (a loading or unloaded model is
Triton's and the alerts' business, not something a restart fixes). After
`failures_before_restart` consecutive failing runs the unit is restarted, at most
`max_restarts_per_hour` times in any hour; past that it restarts nothing, logs that it
gave up and leaves the alert to people.

Python standard library only (it runs with the host's python3). Usage:
    triton_watchdog.py CONFIG.json
CONFIG (written by the role, no secrets: the endpoints it calls are not restricted):
    unit, instance, url, models (prompt models), prompt, max_tokens, timeout_s,
    failures_before_restart, max_restarts_per_hour, state_file, textfile (.prom path).
Logs one line per run (and per event) on stdout, which systemd sends to the journal;
"<N>" prefixes are syslog priorities. Exits 0 unless its configuration is unusable.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HOUR = 3600
# Triton is reached directly, never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(priority, message):
    """One journal line: <priority> is read by systemd (3 error, 4 warning, 6 info)."""
    sys.stdout.write("<%d>%s\n" % (priority, message))
    sys.stdout.flush()


def http(url, body=None, timeout=5.0):
    """(status, parsed JSON or text) of a GET, or a POST of `body` as JSON; status 0 when
    nothing answered (refused, timed out)."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        return 0, str(getattr(error, "reason", error))
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def generation_body(model_config, prompt, max_tokens):
    """The generate request for the inputs the model declares: the vLLM backend's
    sampling_parameters (JSON) / exclude_input_in_output / stream, the TensorRT-LLM
    ensemble's max_tokens tensor (as the triton_check module builds it)."""
    declared = set(spec.get("name") for spec in model_config.get("input", []))
    if "text_input" not in declared:
        raise ValueError("declares no text_input input")
    body = {"text_input": prompt}
    if "stream" in declared:
        body["stream"] = False
    if "streaming" in declared:
        body["streaming"] = False
    if "sampling_parameters" in declared:
        body["sampling_parameters"] = json.dumps({"max_tokens": max_tokens, "temperature": 0})
    if "exclude_input_in_output" in declared:
        body["exclude_input_in_output"] = True
    for name in ("max_tokens", "sampling_param_max_tokens"):
        if name in declared:
            body[name] = max_tokens
    return body


def probe_model(config, model):
    """{'ready', 'ok', 'seconds', 'error'} of one prompt model."""
    base = config["url"].rstrip("/")
    result = {"ready": False, "ok": False, "seconds": 0.0, "error": ""}
    status = http("%s/v2/models/%s/ready" % (base, model), timeout=5)[0]
    if status != 200:
        result["error"] = "not ready (HTTP %s)" % status
        return result
    result["ready"] = True
    status, model_config = http("%s/v2/models/%s/config" % (base, model), timeout=5)
    if status != 200 or not isinstance(model_config, dict):
        result["error"] = "config: HTTP %s %s" % (status, str(model_config)[:200])
        return result
    try:
        body = generation_body(model_config, config["prompt"], int(config["max_tokens"]))
    except ValueError as error:
        result["error"] = str(error)
        return result
    started = time.monotonic()
    status, answer = http("%s/v2/models/%s/generate" % (base, model), body, timeout=float(config["timeout_s"]))
    result["seconds"] = round(time.monotonic() - started, 3)
    if status == 0:
        result["error"] = "no answer within %ss (%s)" % (config["timeout_s"], answer)
    elif status != 200 or not isinstance(answer, dict) or "error" in answer:
        result["error"] = "HTTP %s %s" % (status, str(answer)[:200])
    elif not str(answer.get("text_output", "")).strip():
        result["error"] = "empty text_output"
    else:
        result["ok"] = True
    return result


def load_state(path):
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        state = {}
    return {"failures": int(state.get("failures", 0)), "restarts": [float(t) for t in state.get("restarts", [])],
            "restarts_total": int(state.get("restarts_total", 0))}


def write_atomic(path, text, mode=0o644):
    """Write through a temporary file in the same folder, then rename: node exporter never
    reads half a file."""
    folder = os.path.dirname(path) or "."
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def unit_properties(unit):
    """NRestarts (restarts systemd itself made) and the start time of the unit, in seconds."""
    try:
        out = subprocess.run(["systemctl", "show", unit, "--property=NRestarts,ExecMainStartTimestampMonotonic,"
                              "ActiveEnterTimestamp", "--timestamp=unix"],
                             capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    result = {}
    if props.get("NRestarts", "").isdigit():
        result["nrestarts"] = int(props["NRestarts"])
    since = props.get("ActiveEnterTimestamp", "").lstrip("@")
    if since.isdigit():
        result["active_since"] = int(since)
    return result


def escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(config, server_ready, results, state, gave_up, restarted, unit):
    """The node exporter textfile: what this run saw, for the alert rules."""
    base = 'triton_instance="%s",unit="%s"' % (escape(config["instance"]), escape(config["unit"]))
    lines = []

    def metric(name, kind, help_text, samples):
        lines.append("# HELP %s %s" % (name, help_text))
        lines.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            lines.append("%s{%s} %s" % (name, labels, value))

    per_model = [(model, '%s,model="%s"' % (base, escape(model))) for model in sorted(results)]
    metric("triton_watchdog_last_run_timestamp_seconds", "gauge", "When the watchdog last ran.",
           [(base, int(time.time()))])
    metric("triton_watchdog_server_ready", "gauge", "1 when /v2/health/ready answered 200.",
           [(base, int(server_ready))])
    metric("triton_watchdog_model_ready", "gauge", "1 when /v2/models/<model>/ready answered 200.",
           [(labels, int(results[model]["ready"])) for model, labels in per_model])
    metric("triton_watchdog_generation_ok", "gauge",
           "1 when the model answered a short generation; 0 when it failed or was not asked (not ready).",
           [(labels, int(results[model]["ok"])) for model, labels in per_model])
    metric("triton_watchdog_generation_seconds", "gauge", "Time the last generation took.",
           [(labels, results[model]["seconds"]) for model, labels in per_model])
    metric("triton_watchdog_consecutive_failures", "gauge",
           "Consecutive runs with a failed generation while the server and the model said ready.",
           [(base, state["failures"])])
    metric("triton_watchdog_restarts_last_hour", "gauge", "Restarts the watchdog made in the last hour.",
           [(base, len(state["restarts"]))])
    metric("triton_watchdog_restarts_total", "counter", "Restarts the watchdog made since it was installed.",
           [(base, state["restarts_total"])])
    metric("triton_watchdog_restarted", "gauge", "1 when this run restarted the unit.", [(base, int(restarted))])
    metric("triton_watchdog_gave_up", "gauge",
           "1 when the generation keeps failing and the hourly restart budget is spent: people must act.",
           [(base, int(gave_up))])
    if "nrestarts" in unit:
        metric("triton_watchdog_unit_restarts", "counter", "NRestarts of the unit: restarts systemd made after exits.",
               [(base, unit["nrestarts"])])
    if "active_since" in unit:
        metric("triton_watchdog_unit_active_since_seconds", "gauge", "When the unit last became active.",
               [(base, unit["active_since"])])
    return "\n".join(lines) + "\n"


def run(config):
    now = time.time()
    state = load_state(config["state_file"])
    state["restarts"] = [t for t in state["restarts"] if now - t < HOUR]
    status = http(config["url"].rstrip("/") + "/v2/health/ready", timeout=5)[0]
    server_ready = status == 200
    results = {model: probe_model(config, model) for model in config["models"]} if server_ready else {
        model: {"ready": False, "ok": False, "seconds": 0.0, "error": "server not ready"} for model in config["models"]}
    failed = sorted(model for model, result in results.items() if result["ready"] and not result["ok"])
    restarted = gave_up = False
    if not server_ready:
        # Starting, loading or down: systemd and the not-ready alert deal with that.
        log(4, "%s: server not ready (HTTP %s): nothing probed, %d failure(s) still counted"
            % (config["unit"], status, state["failures"]))
    elif failed:
        state["failures"] += 1
        log(3, "%s: generation failed while the server is ready (%d/%d): %s" % (
            config["unit"], state["failures"], int(config["failures_before_restart"]),
            "; ".join("%s: %s" % (model, results[model]["error"]) for model in failed)))
    else:
        if state["failures"]:
            log(6, "%s: generation works again after %d failure(s)" % (config["unit"], state["failures"]))
        state["failures"] = 0
    if state["failures"] >= int(config["failures_before_restart"]):
        if len(state["restarts"]) < int(config["max_restarts_per_hour"]):
            log(3, "%s: restarting after %d consecutive failed generations (restart %d of at most %d an hour)" % (
                config["unit"], state["failures"], len(state["restarts"]) + 1, int(config["max_restarts_per_hour"])))
            done = subprocess.run(["systemctl", "restart", config["unit"]], capture_output=True, text=True,
                                  timeout=600, check=False)
            if done.returncode != 0:
                log(3, "%s: systemctl restart failed: %s" % (config["unit"], done.stderr.strip()))
            state["restarts"].append(now)
            state["restarts_total"] += 1
            state["failures"] = 0
            restarted = True
        else:
            gave_up = True
            log(2, "%s: GAVE UP: %d restarts in the last hour already (triton_server_watchdog_max_restarts_per_hour); "
                "generation still fails, not restarting again: leaving it to the alert" % (
                    config["unit"], len(state["restarts"])))
    if server_ready:
        not_ready = sorted(model for model, result in results.items() if not result["ready"])
        if not_ready:
            log(4, "%s: not counted (a restart does not load a model; left to the alerts): %s" % (
                config["unit"], "; ".join("%s %s" % (model, results[model]["error"]) for model in not_ready)))
        if not failed:
            log(6, "%s: ok: %s" % (config["unit"], ", ".join(
                "%s %.3fs" % (model, result["seconds"]) for model, result in sorted(results.items()) if result["ok"])
                or "no prompt model ready"))
    write_atomic(config["state_file"], json.dumps(state, sort_keys=True) + "\n", 0o600)
    if config.get("textfile"):
        write_atomic(config["textfile"], metrics_text(config, server_ready, results, state, gave_up, restarted,
                                                      unit_properties(config["unit"])))
    return {"server_ready": server_ready, "results": results, "state": state, "restarted": restarted,
            "gave_up": gave_up}


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: triton_watchdog.py CONFIG.json\n")
        return 2
    try:
        with open(argv[1], encoding="utf-8") as handle:
            config = json.load(handle)
        missing = [key for key in ("unit", "instance", "url", "models", "prompt", "max_tokens", "timeout_s",
                                   "failures_before_restart", "max_restarts_per_hour", "state_file") if key not in config]
        if missing:
            raise ValueError("missing keys: %s" % ", ".join(missing))
    except (OSError, ValueError) as error:
        log(3, "unusable configuration %s: %s" % (argv[1], error))
        return 2
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
