"""The fleet after site.yml, its no-change re-run, upgrade_model and status."""
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

import openai
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

HUB = "http://127.0.0.1:18610"
REPORTS = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "reports")
HOSTS = {"fleet-vllm-1": 18620, "fleet-vllm-2": 18630, "fleet-trtllm-1": 18640}

testinfra_hosts = ["ansible://" + name for name in HOSTS]


def _next_commit():
    with urllib.request.urlopen(f"{HUB}/api/models/onprem-test/tiny-llm/revision/next", timeout=10) as answer:
        return json.load(answer)["sha"]


def test_every_host_serves_the_upgraded_revision(host):
    copy = host.check_output("readlink -f /opt/models/tiny-llm")
    assert copy.startswith(f"/opt/models/.versions/tiny-llm@{_next_commit()}")
    manifest = json.loads(host.file(copy + "/.hf_model_manifest.json").content_string)
    assert manifest["revision"] == "next"


def test_the_served_generation_points_at_the_upgraded_weights(host):
    copy = host.check_output("readlink -f /opt/models/tiny-llm")
    served = host.check_output("grep -rl -- %s /opt/triton/repository/current/ || true", copy)
    assert served, "the current generation does not point at the upgraded copy " + copy


def test_the_unit_runs_and_listens_on_its_own_loopback_ports(host):
    name = host.backend.get_hostname()
    assert host.service(f"triton-{name}").is_running
    port = HOSTS[name]
    listeners = host.check_output(f"ss -Hltn 'sport = :{port}'").splitlines()
    assert [line.split()[3] for line in listeners] == [f"127.0.0.1:{port}"]


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_status_shows_every_host_ready(name):
    with open(os.path.join(REPORTS, "status.txt"), encoding="utf-8") as handle:
        table = handle.read()
    lines = [line for line in table.splitlines() if line.startswith(name + " ")]
    assert lines, table
    for line in lines:
        assert " READY " in line and "@next (" in line, table
    assert table.rstrip().endswith(f"{len(HOSTS)} of {len(HOSTS)} host(s) serving every model"), table


def _plan_round(name):
    with open(os.path.join(REPORTS, "plan-%s.json" % name), encoding="utf-8") as handle:
        return json.load(handle)


def test_the_first_run_rolls_every_fresh_host():
    """converge's first site.yml: nothing runs yet, so the plan sends every host through the batches."""
    plan = _plan_round("converge-1")
    assert plan["roll"] == sorted(HOSTS) and plan["steady"] == [], plan
    assert all(host["gated"] for host in plan["hosts"].values()), plan


def test_a_run_that_changes_nothing_rolls_no_host_and_gates_every_host():
    """molecule's idempotence run (converge's second site.yml): the plan puts every host in the steady pass."""
    plan = _plan_round("converge-2")
    assert plan["roll"] == [] and plan["steady"] == sorted(HOSTS), plan
    for name, host in plan["hosts"].items():
        # Same server process (a PID, not 0) and same generation.
        assert host["after"] == host["before"] and host["before"][0] != "0", (name, host)
        assert host["gated"], (name, host)


def test_a_run_with_one_host_changed_rolls_only_that_host():
    """side_effect's serve.yml run: fleet-vllm-1's model changed (max_model_len)."""
    plan = _plan_round("one-host-changed")
    assert plan["roll"] == ["fleet-vllm-1"] and plan["steady"] == sorted(set(HOSTS) - {"fleet-vllm-1"}), plan
    changed = plan["hosts"]["fleet-vllm-1"]
    # A new repository generation, served (the gate answered through it).
    assert changed["after"][1] != changed["before"][1] and changed["gated"], changed
    for name, host in plan["hosts"].items():
        if name != "fleet-vllm-1":
            # Same server process, same generation, and still gated in the steady pass.
            assert host["after"] == host["before"] and host["gated"], (name, host)


def test_upgrade_triton_reports_the_newest_release_and_changes_nothing():
    """From the fleet's 25.12 to the newest release of the table (26.08: vLLM image only): the vLLM
    hosts' image, driver and models, the TRT-LLM hosts' backend the release refuses; read-only."""
    before = {name: _served_state(name) + _secret_state(name) for name in HOSTS}
    run = _playbook("upgrade_triton", "-e", "upgrade_triton_release=26.08")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(os.path.join(REPORTS, "upgrade_triton-26.08.txt"), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    expected = []
    for name in ("fleet-vllm-1", "fleet-vllm-2"):
        expected += [f"{name} | image | 25.12-vllm-python-py3 -> 26.08-vllm-python-py3 | the server restarts",
                     # no GPU stack in the sandbox: the running driver is unknown, the need is named
                     f"{name} | driver | running driver unknown (no GPU facts) | needs 615.61 or newer for 26.08-vllm",
                     f"{name} | model | tiny_llm | re-rendered and reloaded: model.json checked against vLLM 0.27.1"
                     " (was 0.11.1)"]
    for name in ("fleet-trtllm-1",):
        expected.append(f"{name} | variable | triton_server_backend=trtllm | refused: trtllm is not offered by Triton"
                        " release 26.08")
    for start in expected:
        assert [line for line in lines if line.startswith(start)], (start, lines)
    assert len(lines) == 1 + len(expected), lines
    recap = _recap(run.stdout, "changed")
    assert recap == {name: "changed=0" for name in HOSTS}, run.stdout[-1500:]
    # Same generation, weights, unit, env file and server processes (systemd's and the container's).
    assert before == {name: _served_state(name) + _secret_state(name) for name in HOSTS}


def test_drift_lists_what_upgrade_model_moved_away_from_the_inventory():
    # The inventory still says v1.0 (upgrade_model rolled `next` through).
    before = {name: _served_state(name) for name in HOSTS}
    run = _playbook("drift")
    assert run.returncode == 0, run.stdout[-3000:]
    with open(os.path.join(REPORTS, "drift.txt"), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for name in HOSTS:
        weights = [line for line in lines if line.startswith(f"{name} | hf_model | tiny-llm | onprem-test/tiny-llm@v1.0 | ")]
        assert weights and "onprem-test/tiny-llm@next" in weights[0], lines
    # The TRT-LLM engines were built from `next`: the inventory's revision would rebuild them.
    for name in ("fleet-trtllm-1",):
        assert [line for line in lines if line.startswith(f"{name} | model_repository | tiny_llm | ")], lines
    # Nothing else drifted: the image each server runs is the inventory's.
    assert len(lines) == 1 + len(HOSTS) + 1, lines
    # Check mode reports what it would change: only the engine rebuild on the TRT-LLM hosts ...
    # (the report itself is written on the controller, whatever the mode: localhost is left out).
    would_change = {host: tasks for host, tasks in _changed_tasks(run.stdout).items() if host in HOSTS}
    assert set(would_change) <= {"fleet-trtllm-1"}, would_change
    for name, tasks in would_change.items():
        assert tasks and all(task.startswith("onprem.triton.model_repository : ") for task in tasks), (name, tasks)
    # ... and changes nothing: same generation, weights, unit and server process on every host.
    assert before == {name: _served_state(name) for name in HOSTS}


# --- the gateway (fleet-gateway: HAProxy, TLS, an API key, HTTP, gRPC and OpenAI) ----------
GATEWAY_HTTP = "https://127.0.0.1:18690"
GATEWAY_GRPC = "127.0.0.1:18691"
GATEWAY_OPENAI = "https://127.0.0.1:18692/v1"
GATEWAY_KEY = "fleet-test-key-0123456789abcdef0123456789abcdef"
GATEWAY_CA = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "gateway-cert.pem")
# The vLLM hosts run Triton's OpenAI frontend (group_vars/triton_vllm.yml: their own key, which
# the gateway sends on in place of its clients' key); the TensorRT-LLM hosts cannot.
OPENAI_HOSTS = {"fleet-vllm-1": 18623, "fleet-vllm-2": 18633}
SERVERS_OPENAI_KEY = "fleet-servers-openai-key-0123456789abcdef"
CHAT = [{"role": "user", "content": "Reply with one short sentence about the sea."}]
# Both backends' generate endpoint takes this: max_tokens is an input of the TensorRT-LLM
# ensemble and a request parameter (ignored) for vLLM, which then generates its default 16.
GENERATE = {"text_input": "Reply with one short sentence about the sea.", "max_tokens": 4}


def _gateway_generate(key=GATEWAY_KEY):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return requests.post(f"{GATEWAY_HTTP}/v2/models/tiny_llm/generate", json=GENERATE, headers=headers,
                         verify=GATEWAY_CA, timeout=60)


def _gateway_stat_rows():
    """The gateway's own view, {(backend, server): show stat fields}, from its admin socket."""
    stat = subprocess.run(["docker", "exec", "fleet-gateway", "sh", "-c",
                           'echo "show stat" | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock'],
                          capture_output=True, text=True, check=True).stdout
    rows = [line.split(",") for line in stat.splitlines() if line and not line.startswith("#")]
    return {(f[0], f[1]): f for f in rows if f[1] not in ("FRONTEND", "BACKEND")}


def _gateway_servers():
    """{(backend, server): (status, last check)}: show stat fields 17 and 36."""
    return {key: (f[17], f[36]) for key, f in _gateway_stat_rows().items()}


def _openai(base_url=GATEWAY_OPENAI, key=GATEWAY_KEY):
    """The real openai client, through the gateway (TLS, the fleet's test CA) unless told otherwise."""
    client = openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=GATEWAY_CA), timeout=120)
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, http_client=client)


def _openai_served():
    """{server: sessions taken (stot, show stat field 7)} of the gateway's OpenAI backend."""
    return {server: int(f[7]) for (backend, server), f in _gateway_stat_rows().items() if backend == "triton_openai"}


def _streamed_chat(client):
    """One streamed chat completion; its text (the deltas joined) and finish reason."""
    chunks = list(client.chat.completions.create(model="tiny_llm", messages=CHAT, max_tokens=4, stream=True))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), \
        [c.choices[0].finish_reason for c in chunks if c.choices][-1]


def test_the_gateway_answers_over_tls_with_the_key_on_http_and_grpc():
    answer = _gateway_generate()
    assert answer.status_code == 200, answer.text
    assert answer.json()["text_output"]
    client = grpcclient.InferenceServerClient(GATEWAY_GRPC, ssl=True, root_certificates=GATEWAY_CA)
    assert client.is_model_ready("tiny_llm", headers={"authorization": f"Bearer {GATEWAY_KEY}"})


def test_a_missing_or_wrong_key_is_refused_at_the_gateway():
    for key in (None, "fleet-test-key-0123456789abcdef0123456789abcdeX"):
        answer = _gateway_generate(key)
        assert answer.status_code == 401, answer.text
        assert "API key" in answer.json()["error"]
    client = grpcclient.InferenceServerClient(GATEWAY_GRPC, ssl=True, root_certificates=GATEWAY_CA)
    with pytest.raises(InferenceServerException, match="401|Unauthenticated|UNAUTHENTICATED"):
        client.is_model_ready("tiny_llm", headers={"authorization": "Bearer wrong"})


def test_the_openai_api_answers_through_the_gateway_streamed_and_not():
    """The front door users get: the real openai client, TLS and the gateway's key; every call of
    the API is balanced over the two vLLM hosts' frontends (and only them)."""
    before = _openai_served()
    assert sorted(before) == sorted(OPENAI_HOSTS), before
    client = _openai()
    assert [model.id for model in client.models.list().data] == ["tiny_llm"]
    answer = client.chat.completions.create(model="tiny_llm", messages=CHAT, max_tokens=4)
    assert answer.choices[0].message.content and answer.choices[0].finish_reason == "length", answer
    assert answer.usage.completion_tokens == 4, answer.usage
    text, finish = _streamed_chat(client)
    assert text and finish == "length", (text, finish)
    completion = client.completions.create(model="tiny_llm", prompt="The sea is", max_tokens=3)
    assert completion.choices[0].text, completion
    for attempt in range(3):
        assert _streamed_chat(client)[0], attempt
    after = _openai_served()
    assert all(after[name] > before[name] for name in OPENAI_HOSTS), (before, after)


def test_a_wrong_key_is_refused_at_the_gateway_and_at_the_server():
    """The gateway refuses a key it does not hold before any server sees the request; a server
    refuses anything but its own key (the gateway's clients' key included: only the gateway swaps it)."""
    before = _openai_served()
    for key in ("fleet-test-key-0123456789abcdef0123456789abcdeX", SERVERS_OPENAI_KEY):
        with pytest.raises(openai.AuthenticationError) as refused:
            _openai(key=key).chat.completions.create(model="tiny_llm", messages=CHAT, max_tokens=2)
        assert refused.value.status_code == 401 and "missing or wrong API key" in str(refused.value.body), refused.value
    assert _openai_served() == before  # no server saw them
    for name, port in OPENAI_HOSTS.items():
        server = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(openai.AuthenticationError) as refused:
            _openai(server, key=GATEWAY_KEY).chat.completions.create(model="tiny_llm", messages=CHAT, max_tokens=2)
        assert refused.value.status_code == 401, (name, refused.value)
        missing = requests.get(f"{server}/models", timeout=10)
        assert missing.status_code == 401, (name, missing.text)
        assert [m.id for m in _openai(server, key=SERVERS_OPENAI_KEY).models.list().data] == ["tiny_llm"], name


def test_status_shows_the_gateway_view_of_every_host():
    with open(os.path.join(REPORTS, "gateway.txt"), encoding="utf-8") as handle:
        table = handle.read()
    for backend, port_of in (("triton_http", HOSTS), ("triton_grpc", {name: port + 1 for name, port in HOSTS.items()}),
                             ("triton_openai", OPENAI_HOSTS)):
        for name, port in port_of.items():
            assert f"fleet-gateway | {backend} | {name} | 127.0.0.1:{port} | UP | L7OK | " in table, table


def test_drift_lists_gateway_backends_the_inventory_does_not_ask_for():
    # Asked to front only the vLLM hosts, the running gateway (all of them) drifts by the TensorRT-LLM ones.
    run = _playbook("drift", "--limit", "fleet-gateway,localhost", "-e", "gateway_servers_group=triton_vllm")
    assert run.returncode == 0, run.stdout[-3000:]
    with open(os.path.join(REPORTS, "drift.txt"), encoding="utf-8") as handle:
        rows = sorted(line for line in handle.read().splitlines() if line.startswith("fleet-gateway | gateway | "))
    assert rows == [f"fleet-gateway | gateway | {backend}/{name} | not a backend (not in triton_vllm) | 127.0.0.1:{port}"
                    for backend, offset in (("triton_grpc", 1), ("triton_http", 0))
                    for name, port in sorted(HOSTS.items()) if "trtllm" in name
                    for port in [port + offset]], rows


def test_a_killed_server_leaves_the_gateway_and_no_request_fails():
    """fleet-vllm-1's container killed: once the health check notices, the KServe requests go to
    the other hosts and the OpenAI ones to fleet-vllm-2, none fails; systemd brings it back."""
    subprocess.run(["docker", "exec", "fleet-vllm-1", "docker", "kill", "triton-fleet-vllm-1"], check=True)
    killed = [("triton_http", "fleet-vllm-1"), ("triton_openai", "fleet-vllm-1")]
    deadline = time.monotonic() + 30
    while any(_gateway_servers()[key][0] != "DOWN" for key in killed):
        assert time.monotonic() < deadline, _gateway_servers()
        time.sleep(0.5)
    served_before = [_gateway_stat_rows()[key][7] for key in killed]
    answers = []
    while len(answers) < 20:
        answers.append(_gateway_generate().status_code)
    assert answers == [200] * 20, answers
    client = _openai()
    texts = [_streamed_chat(client)[0] for attempt in range(10)]
    texts += [client.chat.completions.create(model="tiny_llm", messages=CHAT, max_tokens=2).choices[0].message.content
              for attempt in range(10)]
    assert all(texts), texts
    # all of them went to the others (stot, field 7: sessions the server has taken)
    assert [_gateway_stat_rows()[key][7] for key in killed] == served_before
    # systemd restarts it (Restart=always); the gateway puts it back once the model is ready again
    deadline = time.monotonic() + 300
    while any(_gateway_servers()[key][0] != "UP" for key in killed):
        assert time.monotonic() < deadline, _gateway_servers()
        time.sleep(2)


def _gateway_state():
    """What a refused run must leave as it was: HAProxy's master PID and its files."""
    return subprocess.run(["docker", "exec", "fleet-gateway", "sh", "-c",
                           "systemctl show -p MainPID haproxy; md5sum /etc/haproxy/haproxy.cfg /etc/haproxy/gateway-api-keys.lst"
                           " /etc/haproxy/certs/gateway.pem"], capture_output=True, text=True, check=True).stdout


# Bad gateway inputs, each refused in preflight naming its variable, with the running gateway untouched.
# All but one in one run: each on an alias of the gateway host (the same container, its own
# inventory name and one bad value), so each meets the preflight alone.
GATEWAY_BAD = [
    ({"gateway_servers_group": "triton_nowhere"}, "gateway_servers_group ('triton_nowhere') has no hosts"),
    ({"gateway_tls_certificate": "/nonexistent/cert.pem"}, "gateway_tls_certificate ('/nonexistent/cert.pem')"),
    ({"gateway_tls_key": "OTHER_KEY"}, "is not the private key of gateway_tls_certificate"),
    ({"gateway_http_port": 18620}, "gateway_http_port (18620) already taken by another process"),
    ({"gateway_api_keys": ["fleet-test-key-0123456789abcdef0123456789abcdef", "short-key"]},
     "the key(s) at position(s) 1 (counting from 0) are not"),
    ({"gateway_servers_group": "triton_trtllm"},
     "no host of gateway_servers_group ('triton_trtllm') has triton_server_openai_enabled"),
]


@pytest.fixture(scope="module")
def gateway_bad_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("gateway_bad")
    other = tmp_path / "other-key.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-out", str(other)], check=True, capture_output=True)
    aliases = {}
    for index, (bad, _named) in enumerate(GATEWAY_BAD):
        bad = {"gateway_tls_key": str(other)} if bad.get("gateway_tls_key") == "OTHER_KEY" else bad
        aliases[f"gateway-bad{index}"] = dict(bad, ansible_host="fleet-gateway", ansible_connection="community.docker.docker")
    inventory = tmp_path / "gateway-aliases.json"
    inventory.write_text(json.dumps({"all": {"children": {
        "triton_gateway": {"hosts": aliases}, "gateway_bad": {"hosts": {name: {} for name in aliases}}}}}))
    before = _gateway_state()
    run = _playbook("gateway", "-i", str(inventory), "--limit", "gateway_bad")
    return before, run


def _failure_messages(output, host):
    """The msg of each failed result of host (one JSON line each: _playbook asks for that format),
    delegated ones ('fatal: [host -> localhost]') too."""
    return [json.loads(line.split(" => ", 1)[1]).get("msg", "") for line in output.splitlines()
            if re.match(rf"(fatal|failed): \[{re.escape(host)}(\]| -> )", line) and " => {" in line]


@pytest.mark.parametrize("index", range(len(GATEWAY_BAD)), ids=[f"bad{index}" for index in range(len(GATEWAY_BAD))])
def test_bad_gateway_input_is_refused_before_the_gateway_changes(gateway_bad_run, index):
    before, run = gateway_bad_run
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    messages = " ".join(" ".join(_failure_messages(output, f"gateway-bad{index}")).split())
    assert GATEWAY_BAD[index][1] in messages, (messages, output[-3000:])
    assert "short-key" not in output  # a key is never printed
    assert _gateway_state() == before


def test_a_backend_port_outside_the_inventory_is_refused_before_the_gateway_changes():
    """An extra var (it must reach the servers' ports the gateway reads, not only the gateway host)."""
    before = _gateway_state()
    run = _playbook("gateway", "-e", json.dumps({"triton_server_http_port": 70000}))
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "triton_server_http_port 70000" in " ".join(output.split()), output[-3000:]
    assert _gateway_state() == before


def _openai_stream_request():
    """One request of the OpenAI loop: a streamed chat completion through the gateway (the real
    openai client); None when it answered, else what went wrong."""
    text, finish = _streamed_chat(_openai())
    return None if text and finish == "length" else f"unfinished answer ({text!r}, {finish!r})"


def _kserve_stream_request():
    """One request of the KServe loop: generate_stream (SSE) through the gateway."""
    with requests.post(f"{GATEWAY_HTTP}/v2/models/tiny_llm/generate_stream", json=GENERATE,
                       headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, verify=GATEWAY_CA,
                       stream=True, timeout=120) as answer:
        events = [line for line in answer.iter_lines() if line.startswith(b"data:")]
        if answer.status_code != 200 or not events or b'"error"' in events[-1]:
            return (answer.status_code, events[-1:] or answer.text[:200])
    return None


def _client_loop(request, stop, started):
    """Sends one request after another until stop is set: {sent, failures, finished}."""
    loop = {"sent": 0, "failures": [], "finished": []}
    while not stop.is_set():
        loop["sent"] += 1
        try:
            problem = request()
        except Exception as error:  # noqa: BLE001 -- every failure a client would see is counted
            problem = repr(error)
        if problem:
            loop["failures"].append((round(time.monotonic() - started, 2), problem))
        else:
            loop["finished"].append(time.monotonic())
    return loop


def test_a_rolling_update_of_every_host_fails_no_request_through_the_gateway():
    """Zero downtime: two client loops stream through the gateway the whole time, OpenAI chat
    completions (the real openai client, to the two vLLM hosts' frontends) and KServe
    generate_stream (SSE, to all three hosts), while serve.yml rolls a model config change
    through every host one at a time (model_config_change.yml): each host is drained on the
    gateway before its server restarts (a vLLM host's OpenAI frontend reads the repository only
    at start) or its model reloads (the TensorRT-LLM host), put back after its gate, and the next
    one drained only once the gateway sees it up again. Counts requests sent and failed (0), and
    the longest gap between two answers of a loop. The hosts keep the change (only undeploy
    tests follow)."""
    before = {name: _served_state(name) for name in HOSTS}
    stop, started, loops = threading.Event(), time.monotonic(), {}

    def run(name, request):
        loops[name] = _client_loop(request, stop, started)

    threads = [threading.Thread(target=run, args=("openai", _openai_stream_request), daemon=True),
               threading.Thread(target=run, args=("kserve", _kserve_stream_request), daemon=True)]
    for thread in threads:
        thread.start()
    scenario = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rollout = _playbook(os.path.join(scenario, "model_config_change"))
    stop.set()
    for thread in threads:
        thread.join(timeout=150)
    print(f"rolling update of all {len(HOSTS)} hosts through the gateway, {time.monotonic() - started:.0f} s:")
    for name, loop in sorted(loops.items()):
        stamps = [started] + loop["finished"]
        gap = max(later - earlier for earlier, later in zip(stamps, stamps[1:]))
        print(f"  {name}: {loop['sent']} streamed requests sent, {len(loop['failures'])} failed, "
              f"longest gap between two answers {gap:.2f} s")
    assert rollout.returncode == 0, rollout.stdout[-3000:]
    for task in ("Stop sending new requests to this host", "Wait until every gateway sees the host up"):
        assert rollout.stdout.count(f"TASK [onprem.triton.gateway : {task}]") == len(HOSTS), rollout.stdout[-3000:]
    assert sorted(loops) == ["kserve", "openai"], loops
    for name, loop in sorted(loops.items()):
        assert loop["failures"] == [], (name, loop["failures"][:5], _rollout_timeline(rollout.stdout, started))
        assert loop["finished"], name
    assert all(state == ("UP", "L7OK") for state in _gateway_servers().values()), _gateway_servers()
    # Every host serves a new generation with the change.
    for name in HOSTS:
        shares = [_memory_share(name, before[name].splitlines()[0]), _memory_share(name, _served_state(name).splitlines()[0])]
        assert shares[0] != shares[1] and shares[1], (name, shares)
        assert "vllm" not in name or '"gpu_memory_utilization": 0.85' in shares[1], (name, shares)


def _memory_share(name, generation):
    """The memory share lines of a generation's model config (vLLM's model.json, TensorRT-LLM's config.pbtxt)."""
    return subprocess.run(["docker", "exec", name, "grep", "-rh", "-A2", "-E", "gpu_memory_utilization|kv_cache_free_gpu_mem_fraction",
                           generation], capture_output=True, text=True, check=False).stdout


def _rollout_timeline(output, started):
    """The task lines of a run with profile_tasks' clock, to place failures in the rollout."""
    return [line for line in output.splitlines() if line.startswith(("TASK [", "RUNNING HANDLER [")) or " +0000 (" in line][-400:]


def _served_state(name):
    script = ("readlink -f /opt/triton/repository/current; readlink -f /opt/models/tiny-llm; "
              f"sha256sum /etc/systemd/system/triton-{name}.service; systemctl show -p MainPID --value triton-{name}.service")
    return subprocess.run(["docker", "exec", name, "sh", "-c", script], capture_output=True, text=True, check=True).stdout


def _changed_tasks(output):
    """{host: [task names]} of the tasks the default callback reported changed."""
    changed, task = {}, None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK ["):line.rindex("]")]
        elif line.startswith("changed: [") and task:
            host = line[len("changed: ["):].split("]")[0].split(" ")[0]
            changed.setdefault(host, []).append(task)
    return changed


def _playbook(name, *args):
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", os.environ["MOLECULE_INVENTORY_FILE"],
               os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks", name + ".yml"), *args]
    # Plain text to parse: molecule's verifier environment forces colour (ANSIBLE_FORCE_COLOR),
    # and one JSON line per result.
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    # No terminal: a playbook that asks (undeploy) must answer from its variables, never wait.
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=900, env=env,
                          stdin=subprocess.DEVNULL)


def test_rotate_token_refuses_a_token_without_access_before_any_change():
    before = {name: _secret_state(name) for name in HOSTS}
    assert all(_serving_with_a_private_env_file(state) for state in before.values()), before
    hub = _hub_stats()
    run = _playbook("rotate_token", "-e", "hf_model_token=hf_revoked_token_value")
    assert run.returncode == 2, run.stdout[-3000:]
    # The proof play failed on every host, for the one reason a rejected token gives: the
    # Hub double answers 401 "Invalid credentials in Authorization header" (tests/fixtures/hf_hub)
    # and hf_model_sync turns exactly that status into this sentence.
    refusal = ("tiny-llm: the Hugging Face token was rejected by http://127.0.0.1:18610 (invalid or expired): "
               "check hf_model_token / HF_TOKEN")
    task = "TASK [Resolve each model's revision with the new token (check mode, nothing is downloaded)]"
    assert task in run.stdout, run.stdout[-3000:]
    # (failed results go to stderr: molecule's ansible.cfg sets display_failed_stderr)
    failures = _failed_results(run.stdout + "\n" + run.stderr)
    assert sorted(failures) == sorted(HOSTS), run.stdout[-3000:] + run.stderr[-3000:]
    for name, messages in failures.items():
        assert messages == [refusal], (name, messages)
    assert _recap(run.stdout) == {name: "failed=1" for name in HOSTS}, run.stdout[-1500:]
    # It asked the Hub (one API call per host at least) and stopped there: the Hub sent no
    # file and the serving play never started.
    hub_after = _hub_stats()
    assert hub_after["api"] >= hub["api"] + len(HOSTS), (hub, hub_after)
    assert (hub_after["get"], hub_after["bytes_sent"]) == (hub["get"], hub["bytes_sent"]), (hub, hub_after)
    assert "PLAY [Model repository, Triton server and the generation gate]" not in run.stdout, "it went on to the hosts"
    assert "hf_revoked_token_value" not in run.stdout + run.stderr, "the token reached the output"
    # Nothing changed on the hosts: env files (content, mode, owner) and the server processes.
    assert before == {name: _secret_state(name) for name in HOSTS}


def _secret_state(name):
    """The server's env file (content digest, mode, owner) and the process serving, as one text."""
    script = (f"sha256sum /etc/triton-server/{name}.env; stat -c '%a %U:%G' /etc/triton-server/{name}.env; "
              f"systemctl show -p MainPID --value triton-{name}.service; "
              f"docker inspect -f '{{{{.State.Pid}}}} {{{{.State.StartedAt}}}}' triton-{name}")
    result = subprocess.run(["docker", "exec", name, "sh", "-c", script], capture_output=True, text=True, check=False)
    return result.stdout + result.stderr


def _serving_with_a_private_env_file(state):
    lines = state.splitlines()
    return (len(lines) == 4 and lines[1] == "600 root:root" and lines[2].isdigit() and lines[2] != "0"
            and lines[3].split()[0].isdigit() and lines[3].split()[0] != "0")


def _failed_results(output):
    """{host: [msg of each failed result]} from the default callback's failed/fatal lines."""
    failures = {}
    for line in output.splitlines():
        if line.startswith(("failed: [", "fatal: [")) and " => {" in line:
            host = line.split("[", 1)[1].split("]")[0].split(" ")[0]
            failures.setdefault(host, []).append(json.loads(line[line.index(" => {") + 4:]).get("msg"))
    return failures


def _recap(output, counter="failed"):
    """{host: '<counter>=N'} of the run's PLAY RECAP."""
    recap = output[output.rindex("PLAY RECAP"):].splitlines()[1:]
    return {line.split()[0]: next(word for word in line.split() if word.startswith(counter + "="))
            for line in recap if line.split() and line.split()[0] in HOSTS}


def _hub_stats():
    with urllib.request.urlopen(f"{HUB}/_stats", timeout=10) as answer:
        return json.load(answer)


def test_diagnose_collects_on_the_failing_host_only():
    subprocess.run(["docker", "exec", "fleet-vllm-2", "systemctl", "stop", "triton-fleet-vllm-2.service"], check=True)
    run = _playbook("diagnose")
    assert run.returncode == 0, run.stdout[-3000:]
    folder = os.path.join(REPORTS, "diagnose", "fleet-vllm-2")
    for collected in ("unit-status.txt", "journal.txt", "container.log", "mounts.txt", "disk.txt", "gpu.txt", "summary.txt"):
        assert os.path.isfile(os.path.join(folder, collected)), collected
    # the stopped unit, as systemd says it: inactive (docker stop's window is the frontend's own
    # 30 s exit timeout + 5: the frontend shuts its server down inside it, so systemd kills nothing)
    with open(os.path.join(folder, "unit-status.txt"), encoding="utf-8") as handle:
        status = handle.read()
    assert "Active: inactive" in status, status[:500]
    with open(os.path.join(folder, "mounts.txt"), encoding="utf-8") as handle:
        assert "ok       /opt/models" in handle.read()
    assert "fleet-vllm-2:" in run.stdout and f"1 of {len(HOSTS)} host(s) do not serve every model" in run.stdout
    for name in set(HOSTS) - {"fleet-vllm-2"}:
        assert not os.path.exists(os.path.join(REPORTS, "diagnose", name))


def test_undeploy_without_confirmation_removes_nothing():
    before = _served_state("fleet-vllm-2")
    run = _playbook("undeploy", "--limit", "fleet-vllm-2")
    output = run.stdout + run.stderr  # the failure's message is on stderr
    assert run.returncode != 0 and "undeploy not confirmed, nothing removed" in output, output[-3000:]
    assert _served_state("fleet-vllm-2") == before


def test_undeploy_removes_the_service_and_keeps_the_models_unless_asked():
    run = _playbook("undeploy", "--limit", "fleet-vllm-2", "-e", "undeploy_confirm=yes")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "fleet-vllm-1" not in run.stdout
    unit = subprocess.run(["docker", "exec", "fleet-vllm-2", "systemctl", "cat", "triton-fleet-vllm-2.service"],
                          capture_output=True, text=True, check=False)
    assert unit.returncode != 0
    exists = subprocess.run(["docker", "exec", "fleet-vllm-2", "test", "-e", "/opt/triton/repository"], check=False)
    assert exists.returncode != 0
    models = subprocess.run(["docker", "exec", "fleet-vllm-2", "test", "-e", "/opt/models/tiny-llm/config.json"], check=False)
    assert models.returncode == 0
    # The rest of the fleet still serves.
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:18620/v2/health/ready", timeout=5) as answer:
                assert answer.status == 200
                break
        except OSError:
            assert time.time() < deadline
            time.sleep(1)
