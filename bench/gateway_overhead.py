# SPDX-License-Identifier: Apache-2.0
"""What the gateway costs on the way to a server, over the OpenAI API.

One server as the triton_server role starts it with its OpenAI frontend on (the rendered unit's
command: the role's launcher, the frontend's contract double tests/fixtures/openai_frontend in
place of the image's main.py, over the real tritonserver of the Triton fixture with its stand-in
vLLM engine; OpenAI API on 127.0.0.1:18480, KServe HTTP 18481) and HAProxy with the configuration
the gateway role renders for it (tests/unit/roles/gateway/render.yml: OpenAI endpoint on
127.0.0.1:18486, health check on, the gateway's API key checked and swapped for the server's, as
in production; run as a process). The same load - C concurrent clients (the real `openai`
client), each sending streamed chat completions for S seconds - goes straight to the server,
then through the gateway, in alternating rounds. Prints, for each path, requests/s, tokens/s
(content chunks), time to first token median and p95, failed requests, and the ratios
gateway / direct (the issue's target: the gateway's overhead within 5%).

The stand-in engine waits --token-delay-ms between tokens (its FIXTURE_TOKEN_DELAY_MS knob):
20 ms by default, about what one GPU's 8B model takes a token, so that the time a stream takes
is the model's, as in production, and the ratio says what HAProxy adds to it. With
--token-delay-ms 0 the engine answers in microseconds and the processes on the machine (clients,
frontend, server, HAProxy) fight for the CPU: that ratio is an upper bound, a small machine's.

Not run by CI; the figures depend on the machine and its load.

    source .venv/bin/activate
    python bench/gateway_overhead.py [--concurrency 4] [--seconds 15] [--rounds 2] [--max-tokens 32] [--token-delay-ms 20]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "unit" / "roles")]
# pylint: disable=wrong-import-position,import-error
from tests.integration.test_openai_frontend import Frontend, lay_out, run_env, unit_command  # noqa: E402
from role_render import gateway_config_here  # noqa: E402

SERVER_PORTS = {"triton_server_openai_port": 18480, "triton_server_http_port": 18481, "triton_server_grpc_port": 18482,
                "triton_server_metrics_port": 18483}
GATEWAY_OPENAI_PORT = 18486
GATEWAY_KEY = "bench-gateway-key-0123456789abcdef0123456789"
SERVER_KEY = "bench-server-key-0123456789abcdef012345678"
CHAT = [{"role": "user", "content": "Tell me about the sea, the wind and the long grey waves of the north."}]


def gateway_config(scratch):
    """The role's haproxy.cfg for this one server, its files and sockets moved to scratch."""
    inventory = scratch / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"children": {
        "triton_gateway": {"hosts": {"gw": {}}},
        "triton_servers": {"hosts": {"server": {
            "ansible_host": "127.0.0.1", "triton_server_openai_enabled": True, "triton_server_openai_api_key": SERVER_KEY,
            "triton_server_http_port": SERVER_PORTS["triton_server_http_port"],
            "triton_server_openai_port": SERVER_PORTS["triton_server_openai_port"]}}}}}}))
    out = scratch / "haproxy.cfg"
    settings = {"gateway_listen_address": "127.0.0.1", "gateway_http_port": GATEWAY_OPENAI_PORT + 1,
                "gateway_openai_enabled": True, "gateway_openai_port": GATEWAY_OPENAI_PORT, "gateway_api_keys": [GATEWAY_KEY],
                "gateway_health_model": "demo", "gateway_health_interval": "1s"}
    subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                    str(ROOT / "tests" / "unit" / "roles" / "gateway" / "render.yml"), "-e", f"out={out}",
                    "-e", json.dumps(settings)],
                   check=True, capture_output=True, cwd=ROOT,
                   env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".ansible" / "collections")))
    # the files the role writes beside the configuration (configure.yml), here in scratch
    (scratch / "gateway-api-keys.lst").write_text(f"Bearer {GATEWAY_KEY}\n")
    (scratch / "gateway-openai-server-key.map").write_text(f"servers {SERVER_KEY}\n")
    out.write_text(gateway_config_here(out.read_text(), scratch))
    return out


def one_request(client, max_tokens):
    """(time to the first content chunk in s, content chunks) of one streamed chat completion."""
    start = time.perf_counter()
    first, chunks = None, 0
    for chunk in client.chat.completions.create(model="demo", messages=CHAT, max_tokens=max_tokens, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            if first is None:
                first = time.perf_counter() - start
    if not chunks:
        raise RuntimeError("an answer without content")
    return first, chunks


def load(base_url, key, args):
    """Figures of C clients sending streamed chat completions to base_url for S seconds."""
    results, errors = [], []
    stop = time.perf_counter() + args.seconds

    def client_loop():
        client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=60)
        while time.perf_counter() < stop:
            try:
                results.append(one_request(client, args.max_tokens))
            except (openai.OpenAIError, RuntimeError) as error:
                errors.append(repr(error))

    threads = [threading.Thread(target=client_loop) for client_number in range(args.concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    firsts = sorted(r[0] for r in results)
    return {"requests_s": len(results) / elapsed, "tokens_s": sum(r[1] for r in results) / elapsed,
            "ttft_ms_p50": 1000 * statistics.median(firsts), "ttft_ms_p95": 1000 * firsts[int(0.95 * (len(firsts) - 1))],
            "failed": len(errors), "first_error": errors[0] if errors else ""}


def wait_up(url, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer 200 in {timeout} s")


def measure(args, scratch):
    lay_out(scratch)
    argv, env_file = unit_command(scratch, **SERVER_PORTS, triton_server_openai_api_key=SERVER_KEY)
    environment = dict(run_env(scratch, env_file), FIXTURE_TOKEN_DELAY_MS=str(args.token_delay_ms))
    frontend = Frontend(argv, environment, SERVER_PORTS["triton_server_openai_port"])
    haproxy = None
    try:
        frontend.wait_ready()
        haproxy = subprocess.Popen([shutil.which("haproxy") or "haproxy", "-db", "-f", str(gateway_config(scratch))],  # noqa: S603
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        paths = {"direct": (f"http://127.0.0.1:{SERVER_PORTS['triton_server_openai_port']}/v1", SERVER_KEY),
                 "gateway": (f"http://127.0.0.1:{GATEWAY_OPENAI_PORT}/v1", GATEWAY_KEY)}
        # the gateway's OpenAI backend is UP once its health check passed (rise 2)
        wait_up(f"{paths['gateway'][0]}/models")
        totals = {name: [] for name in paths}
        for _round in range(args.rounds):
            for name, (base_url, key) in paths.items():
                totals[name].append(load(base_url, key, args))
        return totals
    finally:
        if haproxy:
            haproxy.terminate()
            haproxy.wait()
        frontend.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4, help="clients at once")
    parser.add_argument("--seconds", type=float, default=15, help="length of each round on each path")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating direct and through the gateway")
    parser.add_argument("--max-tokens", type=int, default=32, help="max_tokens of each chat completion")
    parser.add_argument("--token-delay-ms", type=float, default=20,
                        help="the stand-in engine's time per token (0: as fast as the CPU lets it)")
    args = parser.parse_args()
    if shutil.which("haproxy") is None:
        raise SystemExit("haproxy missing: apt-get install haproxy")
    with tempfile.TemporaryDirectory() as scratch:
        totals = measure(args, Path(scratch))
    print(f"OpenAI API, streamed chat completions, max_tokens {args.max_tokens}, concurrency {args.concurrency}, "
          f"{args.token_delay_ms:g} ms a token, {args.rounds} round(s) of {args.seconds:.0f} s per path")
    print(f"{'path':8} {'req/s':>8} {'tokens/s':>9} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} {'failed':>7}")
    means = {}
    for name, rounds in totals.items():
        means[name] = {key: statistics.mean(r[key] for r in rounds) for key in ("requests_s", "tokens_s", "ttft_ms_p50",
                                                                                "ttft_ms_p95", "failed")}
        m = means[name]
        print(f"{name:8} {m['requests_s']:8.2f} {m['tokens_s']:9.1f} {m['ttft_ms_p50']:12.1f} {m['ttft_ms_p95']:12.1f} "
              f"{m['failed']:7.0f}")
        for r in rounds:
            if r["first_error"]:
                print(f"  {name}: first failure: {r['first_error'][:200]}")
    print(f"gateway / direct: throughput (tokens/s) {means['gateway']['tokens_s'] / means['direct']['tokens_s']:.3f}, "
          f"requests/s {means['gateway']['requests_s'] / means['direct']['requests_s']:.3f}, "
          f"TTFT p50 {means['gateway']['ttft_ms_p50'] / means['direct']['ttft_ms_p50']:.3f}, "
          f"TTFT p95 {means['gateway']['ttft_ms_p95'] / means['direct']['ttft_ms_p95']:.3f}")


if __name__ == "__main__":
    main()
