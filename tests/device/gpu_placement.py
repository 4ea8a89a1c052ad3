# SPDX-License-Identifier: Apache-2.0
"""GPU placement and the memory plan, proven on a real multi-GPU machine (run by hand on such
a machine, never by CI; tests/fixtures/nvidia/placement_h200x2/ is what it recorded, and
tests/unit/plugins/module_utils/test_recorded_gpu_placement.py re-checks that record in CI).

1. The GPU table is read from the machine (nvidia-smi, as the nvidia_gpu_info fact gives it).
2. An OVERCOMMITTED plan (OVERCOMMIT_YAML) goes through the collection's own code
   (plugins/plugin_utils/model_repository.py: load_vllm_contract + build_plan, with the settings
   roles/model_repository/tasks/preflight.yml passes): it must be refused with a
   ModelRepositoryError naming the models and the numbers, before anything is written or
   started; nvidia-smi must then show no process on any GPU.
3. The same code renders INVENTORY_YAML: two vLLM-backend models pinned to GPU 0 and GPU 1 and
   a third sharing GPU 0 with the share the memory plan gives it (what is left of the budget).
   The repository is laid out as the module installs it (tests/fixtures/triton/server.py
   lay_out_repository) and served by the REAL tritonserver 2.51 of the nvidia-pytriton wheel,
   with the vLLM contract double (tests/fixtures/triton/backends/vllm) whose FIXTURE_GPU_ALLOCATE
   knob makes each engine hold gpu_memory_utilization x the total memory of the device it was
   given, with torch, in an engine process that inherits CUDA_VISIBLE_DEVICES as vLLM's does.
4. The CUDA context of a bare torch process is measured (a probe on GPU 0), then, with every
   model ready, nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory (and NVML, when
   pynvml is there) says which process holds how much on which GPU; the processes are mapped to
   models through the placement file the double writes (stub pid, engine pid, device).
5. One real generation per model, over gRPC (tritonclient, streaming) and over HTTP generate.

It passes when every model's engine runs on the GPU the plan gave it (its CUDA_VISIBLE_DEVICES,
the UUID torch reports and the GPU nvidia-smi shows its memory on all agree with the plan), the
memory the models' processes hold on each GPU matches the plan within TOLERANCE (below), the
overcommitted plan is refused with nothing started, and no process is left on any GPU once the
server stops. The generations (step 5) are recorded under `observed`, not judged.

Tolerance, per GPU: |measured - planned| <= 5% of the GPU's memory + (number of the models'
processes on that GPU) x the CUDA context of one process (measured by the probe). vLLM's
gpu_memory_utilization budget is taken after the process has its CUDA context (vLLM's
MemorySnapshot baseline), so each engine process holds its share PLUS its context; 5% of the
GPU covers allocator rounding and what a real engine adds outside the budget (cuBLAS
workspaces, NCCL buffers), without letting a model that took another model's share (>= 5% of
a GPU in every plan here) pass.

Usage (the repository root as working directory; python3 with torch, PyYAML and jinja2):
    python3 tests/device/gpu_placement.py OUT_DIR [--site DIR] [--pylib DIR]
--site: where the nvidia-pytriton wheel is unpacked (pytriton/ and nvidia_pytriton.libs/; else
the installed wheel). --pylib: a folder put first on this script's sys.path only (not the
server's): tritonclient's model_config_pb2 and a protobuf for it, which build_plan needs to
parse config.pbtxt (a machine without tritonclient). --stub-pythonpath: the server's
PYTHONPATH (the stubs and the engine processes inherit it). The generations are recorded, not
judged: on the H200 machine the python backend stub died on every request, its BYTES input
reading 0x13 over and over, over gRPC as over HTTP (tests/fixtures/nvidia/placement_h200x2/README.md).
Ports 18910-18912. Writes to OUT_DIR:
results.json, nvidia_smi_gpus.csv, nvidia_smi_compute_apps.csv (all models ready),
nvidia_smi_compute_apps_overcommit.csv (after the refusal), nvidia_smi_compute_apps_after.csv
(server stopped), placements.jsonl, tritonserver.log. Exit code 0 when it passed.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "model_repository"
PORTS = {"http_port": 18910, "grpc_port": 18911, "metrics_port": 18912}
TOLERANCE_GPU_FRACTION = 0.05
PROMPT = "the quick brown fox"
MAX_TOKENS = 3
EXPECTED_TEXT = "the quick brown fox the quick brown"  # the double's generation (prompt + 3 words)

# group_vars of a two-GPU Triton host, as an operator writes them. The models' folders are
# /opt/models/* on the host; the server sees them under model_repository_server_models_dir
# (set by the test to a temporary folder, as a container mount would).
HOST_VARS = """\
model_repository_triton_release: "25.12"
model_repository_gpu_memory_budget: 0.9
model_repository_models_dir: /opt/models
model_repository_server_models_dir: /opt/models
model_repository_engines_dir: /opt/engines
model_repository_server_engines_dir: /opt/engines
model_repository_vllm_report_custom_metrics: true
"""
INVENTORY_YAML = HOST_VARS + """\
triton_models:
  - name: chat_gpu0            # pinned to GPU 0 with an explicit share
    backend: vllm
    model_path: /opt/models/chat_gpu0
    gpus: [0]
    tensor_parallel_size: 1
    gpu_memory_utilization: 0.5
    engine_args: {max_model_len: 4096}
  - name: chat_gpu1            # pinned to GPU 1, sized in MiB (the plan turns it into a share)
    backend: vllm
    model_path: /opt/models/chat_gpu1
    gpus: [1]
    tensor_parallel_size: 1
    memory_mib: 40000
  - name: embed_gpu0           # shares GPU 0; its share is what the plan leaves (0.9 - 0.5)
    backend: vllm
    model_path: /opt/models/embed_gpu0
    gpus: [0]
    tensor_parallel_size: 1
"""

# The same host with GPU 0 overcommitted: 0.6 + 0.45 = 1.05 of it, over the budget 0.9.
OVERCOMMIT_YAML = HOST_VARS + """\
triton_models:
  - name: chat_gpu0
    backend: vllm
    model_path: /opt/models/chat_gpu0
    gpus: [0]
    tensor_parallel_size: 1
    gpu_memory_utilization: 0.6
  - name: embed_gpu0
    backend: vllm
    model_path: /opt/models/embed_gpu0
    gpus: [0]
    tensor_parallel_size: 1
    gpu_memory_utilization: 0.45
  - name: chat_gpu1
    backend: vllm
    model_path: /opt/models/chat_gpu1
    gpus: [1]
    tensor_parallel_size: 1
    gpu_memory_utilization: 0.3
"""

GPU_FIELDS = "index,uuid,name,memory.total,memory.used"
APPS_FIELDS = "pid,gpu_uuid,used_memory"


def model_repository():
    """plugins/plugin_utils/model_repository.py, imported by path (no ansible needed)."""
    spec = importlib.util.spec_from_file_location(
        "onprem_triton_model_repository", ROOT / "plugins" / "plugin_utils" / "model_repository.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- nvidia-smi, parsed ----------------------------------------------------------------------

def _csv_rows(text):
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if not line.strip() or cells[0] in ("index", "pid") or "No running processes" in line:
            continue  # header (--format=csv,nounits) or nothing
        rows.append(cells)
    return rows


def parse_gpus(text):
    """nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv,nounits ->
    the nvidia_gpu_info fact's form ({"gpus": [{index, uuid, name, memory_total_mib}]})."""
    gpus = [{"index": int(cells[0]), "uuid": cells[1], "name": cells[2], "memory_total_mib": int(cells[3]),
             "memory_used_mib": int(cells[4])} for cells in _csv_rows(text)]
    return {"gpus": gpus, "count": len(gpus), "source": "nvidia-smi"}


def parse_apps(text):
    """nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,nounits ->
    [{pid, gpu_uuid, used_mib}]."""
    return [{"pid": int(cells[0]), "gpu_uuid": cells[1], "used_mib": int(cells[2])} for cells in _csv_rows(text)]


def nvidia_smi(query, fields):
    return subprocess.run(["nvidia-smi", f"--query-{query}={fields}", "--format=csv,nounits"], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def nvml_processes():
    """{gpu uuid: [{pid, used_mib}]} from NVML, or None without pynvml."""
    try:
        import pynvml  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    pynvml.nvmlInit()
    try:
        found = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            found[uuid] = [{"pid": p.pid, "used_mib": (p.usedGpuMemory or 0) // (1024 * 1024)}
                           for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
        return found
    finally:
        pynvml.nvmlShutdown()


# --- the plan, by the collection's code ------------------------------------------------------

def settings_of(inventory, mr, server_models_dir=None):
    """What roles/model_repository/tasks/preflight.yml passes to triton_model_repository_render."""
    return {"models_dir": inventory["model_repository_models_dir"],
            "server_models_dir": server_models_dir or inventory["model_repository_server_models_dir"],
            "engines_dir": inventory["model_repository_engines_dir"],
            "server_engines_dir": inventory["model_repository_server_engines_dir"],
            "gpu_memory_budget": inventory["model_repository_gpu_memory_budget"],
            "vllm_report_custom_metrics": inventory["model_repository_vllm_report_custom_metrics"],
            "vllm_contract": mr.load_vllm_contract(str(ROLE / "files" / "vllm_contract"),
                                                   inventory["model_repository_triton_release"])}


def plan_of(inventory_yaml, gpu_info, mr, server_models_dir=None, parameters=None):
    """build_plan on the inventory (YAML text) and the GPU fact; `parameters` (test knobs) are
    added to every model's config.pbtxt parameters."""
    import yaml  # pylint: disable=import-outside-toplevel
    inventory = yaml.safe_load(inventory_yaml)
    models = inventory["triton_models"]
    if parameters:
        models = [dict(model, parameters=dict(model.get("parameters") or {}, **parameters)) for model in models]
    return mr.build_plan(models, gpu_info, inventory.get("model_repository_gpus"),
                         settings_of(inventory, mr, server_models_dir), str(ROLE / "templates"), "/unused")


def planned_gpus(plan):
    """{model: [GPU indices]} from the plan's gpu_plan."""
    found = {}
    for gpu in plan["gpu_plan"]:
        for name in gpu["models"]:
            found.setdefault(name, []).append(gpu["index"])
    return found


# --- the verdict (also run by tests/unit on the recorded output) -----------------------------

def analyse(gpu_plan, gpu_info, apps, placements, context_mib, server_pid=None):
    """Plan vs measured. gpu_plan: build_plan's gpu_plan; gpu_info: parse_gpus(); apps:
    parse_apps() with every model ready; placements: the double's records; context_mib: one
    bare CUDA context. Returns {"gpus": [...], "models": {...}, "passed": bool, "failures": [...]}."""
    by_uuid = dict((gpu["uuid"], gpu["index"]) for gpu in gpu_info["gpus"])
    owner, engine_pid, model_of = {}, {}, {}
    for record in placements:
        owner[record["pid"]] = (record["model"], "stub")
        engine = record.get("engine") or {}
        for pid in [engine.get("pid")] + list(engine.get("ns_pids") or []):
            if pid is not None:
                owner[pid] = (record["model"], "engine")
        engine_pid[record["model"]] = engine.get("pid")
        model_of[record["model"]] = record
    if server_pid is not None:
        owner[server_pid] = ("tritonserver", "server")
    failures = []
    gpus = []
    for gpu in gpu_plan:
        uuid = next(g["uuid"] for g in gpu_info["gpus"] if g["index"] == gpu["index"])
        here = [app for app in apps if app["gpu_uuid"] == uuid]
        processes = []
        for app in here:
            name, role = owner.get(app["pid"], ("?", "unknown"))
            processes.append({"pid": app["pid"], "model": name, "role": role, "used_mib": app["used_mib"]})
        model_processes = [p for p in processes if p["role"] in ("stub", "engine")]
        planned = int(round(gpu["total_share"] * gpu["memory_total_mib"]))
        measured = sum(p["used_mib"] for p in model_processes)
        tolerance = int(round(TOLERANCE_GPU_FRACTION * gpu["memory_total_mib"] + len(model_processes) * context_mib))
        per_model = {}
        for name, share in sorted(gpu["models"].items()):
            held = sum(p["used_mib"] for p in model_processes if p["model"] == name)
            count = sum(1 for p in model_processes if p["model"] == name)
            per_model[name] = {"share": share, "instances": gpu["instances"][name],
                               "planned_mib": int(round(share * gpu["instances"][name] * gpu["memory_total_mib"])),
                               "measured_mib": held, "processes": count}
        entry = {"index": gpu["index"], "uuid": uuid, "memory_total_mib": gpu["memory_total_mib"],
                 "planned_share": gpu["total_share"], "planned_mib": planned, "measured_models_mib": measured,
                 "difference_mib": measured - planned, "tolerance_mib": tolerance,
                 "model_processes": len(model_processes), "models": per_model,
                 "server_mib": sum(p["used_mib"] for p in processes if p["role"] == "server"),
                 "unknown_processes": [p for p in processes if p["role"] == "unknown"],
                 "processes": processes}
        entry["within_tolerance"] = abs(measured - planned) <= tolerance
        if not entry["within_tolerance"]:
            failures.append(f"GPU {gpu['index']}: models hold {measured} MiB, plan {planned} MiB, "
                            f"tolerance {tolerance} MiB")
        if entry["unknown_processes"]:
            failures.append(f"GPU {gpu['index']}: processes of no model: {entry['unknown_processes']}")
        for name, numbers in per_model.items():
            if abs(numbers["measured_mib"] - numbers["planned_mib"]) > \
                    TOLERANCE_GPU_FRACTION * gpu["memory_total_mib"] + numbers["processes"] * context_mib:
                failures.append(f"GPU {gpu['index']}: {name} holds {numbers['measured_mib']} MiB, "
                                f"plan {numbers['planned_mib']} MiB")
        gpus.append(entry)
    models = {}
    for name, planned in sorted(planned_gpus({"gpu_plan": gpu_plan}).items()):
        record = model_of.get(name)
        if record is None:
            failures.append(f"{name}: no placement record (not loaded?)")
            models[name] = {"planned_gpus": planned, "on_planned_gpu": False}
            continue
        engine = record.get("engine") or {}
        visible = [int(d) for d in record["devices"]]
        torch_gpus = sorted(by_uuid.get(d.get("uuid"), -1) for d in engine.get("devices", []))
        smi_gpus = sorted({by_uuid[a["gpu_uuid"]] for a in apps
                           if a["pid"] == engine_pid.get(name) and a["gpu_uuid"] in by_uuid})
        on_planned = visible == planned and torch_gpus == planned and smi_gpus == planned
        models[name] = {"planned_gpus": planned, "kind": record["kind"], "device_id": record["device_id"],
                        "cuda_visible_devices": record["cuda_visible_devices"], "visible_gpus": visible,
                        "torch_gpus": torch_gpus, "nvidia_smi_gpus": smi_gpus, "stub_pid": record["pid"],
                        "engine_pid": engine.get("pid"), "allocated_mib": engine.get("allocated_bytes", 0) // 2 ** 20,
                        "on_planned_gpu": on_planned}
        if not on_planned:
            failures.append(f"{name}: planned on GPU(s) {planned}, CUDA_VISIBLE_DEVICES gives {visible}, "
                            f"torch {torch_gpus}, nvidia-smi {smi_gpus} ({engine.get('reason', '')})")
    return {"gpus": gpus, "models": models, "context_mib": context_mib,
            "tolerance": f"per GPU: |measured - planned| <= {TOLERANCE_GPU_FRACTION:.0%} of the GPU + "
                         "model processes on it x one CUDA context",
            "passed": not failures, "failures": failures}


# --- on the device -----------------------------------------------------------------------------

def _wait_apps_gone(pids, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        text = nvidia_smi("compute-apps", APPS_FIELDS)
        left = [a for a in parse_apps(text) if pids is None or a["pid"] in pids]
        if not left or time.monotonic() > deadline:
            return text, left
        time.sleep(1)


def measure_context(python):
    """MiB one bare torch CUDA context holds on GPU 0 (a probe process, read by nvidia-smi)."""
    code = ("import os, sys, torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize(); "
            "print(os.getpid(), flush=True); sys.stdin.read()")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0")
    probe = subprocess.Popen([python, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        pid = int(probe.stdout.readline())
        time.sleep(1)
        text = nvidia_smi("compute-apps", APPS_FIELDS)
        used = [a["used_mib"] for a in parse_apps(text) if a["pid"] == pid]
        return {"pid": pid, "context_mib": used[0] if used else None, "nvidia_smi": text}
    finally:
        probe.stdin.close()
        probe.wait(timeout=60)


def post(url, payload, timeout=60):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def generate_grpc(url, name, timeout=60):
    """One generation over gRPC's bidirectional stream (the vLLM models are decoupled)."""
    import queue  # pylint: disable=import-outside-toplevel
    import numpy  # pylint: disable=import-outside-toplevel
    import tritonclient.grpc as grpcclient  # pylint: disable=import-outside-toplevel
    answers = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        values = {"text_input": (numpy.array([PROMPT.encode()], dtype=numpy.object_), "BYTES"),
                  "sampling_parameters": (numpy.array([json.dumps({"max_tokens": MAX_TOKENS}).encode()],
                                                      dtype=numpy.object_), "BYTES"),
                  "stream": (numpy.array([False]), "BOOL")}
        inputs = []
        for input_name, (value, datatype) in values.items():
            tensor = grpcclient.InferInput(input_name, [1], datatype)
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        client.async_stream_infer(name, inputs, outputs=[grpcclient.InferRequestedOutput("text_output")])
        result, error = answers.get(timeout=timeout)
        if error is not None:
            raise RuntimeError(str(error))
        text = result.as_numpy("text_output")[0]
        return text.decode() if isinstance(text, bytes) else str(text)
    finally:
        client.stop_stream()
        client.close()


def wait_ready(server, names, timeout):
    """Until every model is READY; fails at once when one is UNAVAILABLE (a refused load)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            index = dict((e["name"], e) for e in post(f"http://{server.http_url}/v2/repository/index", {}, 10))
        except OSError:
            index = {}
        states = dict((name, index.get(name, {}).get("state")) for name in names)
        if all(state == "READY" for state in states.values()):
            return
        failed = dict((n, index[n].get("reason")) for n, state in states.items() if state == "UNAVAILABLE")
        if failed or time.monotonic() > deadline or server.process.poll() is not None:
            raise RuntimeError(f"models not ready: {states} {failed}\n{server.log()[-4000:]}")
        time.sleep(0.5)


def run_overcommit(mr, gpu_info, out, results):
    apps_before = parse_apps(nvidia_smi("compute-apps", APPS_FIELDS))
    workdir = Path(tempfile.mkdtemp(prefix="overcommit-"))
    repo = workdir / "repository"
    entry = {"inventory_yaml": OVERCOMMIT_YAML, "processes_before": apps_before}
    try:
        plan_of(OVERCOMMIT_YAML, gpu_info, mr, server_models_dir=str(workdir / "models"))
        entry["refused"] = False
    except mr.ModelRepositoryError as error:
        entry.update(refused=True, variable=error.variable, message=str(error))
    text = nvidia_smi("compute-apps", APPS_FIELDS)
    (out / "nvidia_smi_compute_apps_overcommit.csv").write_text(text, encoding="utf-8")
    entry["processes_after"] = parse_apps(text)
    entry["repository_written"] = repo.exists()
    wanted = ["chat_gpu0", "embed_gpu0", "0.60", "0.45", "1.05", "0.90", "GPU 0"]
    entry["message_names"] = {word: word in entry.get("message", "") for word in wanted}
    entry["passed"] = (entry["refused"] and all(entry["message_names"].values()) and not entry["processes_after"]
                       and not entry["repository_written"] and "chat_gpu1" not in entry.get("message", ""))
    shutil.rmtree(workdir, ignore_errors=True)
    results["overcommit"] = entry


def run_placement(mr, gpu_info, out, results, python, server_env=None):
    from tests.fixtures.triton.server import TritonServer, lay_out_repository  # pylint: disable=import-outside-toplevel
    workdir = Path(tempfile.mkdtemp(prefix="gpu-placement-"))
    placements = out / "placements.jsonl"
    placements.unlink(missing_ok=True)
    knobs = {"FIXTURE_GPU_ALLOCATE": "true", "FIXTURE_PLACEMENT_FILE": str(placements), "FIXTURE_GPU_PYTHON": python}
    plan = plan_of(INVENTORY_YAML, gpu_info, mr, server_models_dir=str(workdir / "models"), parameters=knobs)
    for name in planned_gpus(plan):
        (workdir / "models" / name).mkdir(parents=True)
        (workdir / "models" / name / "config.json").write_text("{}", encoding="utf-8")
    repo = lay_out_repository(plan, workdir / "repository")
    results["plan"] = {"inventory_yaml": INVENTORY_YAML, "knobs": sorted(knobs), "gpu_plan": plan["gpu_plan"],
                       "load_models": plan["load_models"],
                       "files": dict((p, t) for p, t in plan["files"].items() if p.endswith(("config.pbtxt", ".json")))}
    server = TritonServer(repo, load_models=plan["load_models"], timeout=300, env=server_env, **PORTS)
    try:
        started = time.monotonic()
        server.start()
        wait_ready(server, plan["load_models"], timeout=300)
        results["load_seconds"] = round(time.monotonic() - started, 1)
        time.sleep(2)
        text = nvidia_smi("compute-apps", APPS_FIELDS)
        (out / "nvidia_smi_compute_apps.csv").write_text(text, encoding="utf-8")
        results["nvml_processes"] = nvml_processes()
        results["tritonserver_pid"] = server.process.pid
        records = [json.loads(line) for line in placements.read_text(encoding="utf-8").splitlines()]
        results["analysis"] = analyse(plan["gpu_plan"], gpu_info, parse_apps(text), records,
                                      results["context_probe"]["context_mib"], server.process.pid)
        # gRPC first (the tensors travel as they are), then HTTP generate (the server turns the
        # JSON into a BYTES tensor): on the device the HTTP path once handed the stub a corrupt
        # input, so the two are recorded apart.
        generations = {}
        for name in plan["load_models"]:
            entry = generations[name] = {}
            try:
                entry["grpc_text_output"] = generate_grpc(server.grpc_url, name)
            except Exception as error:  # noqa: BLE001 -- recorded
                entry["grpc_error"] = repr(error)[:2000]
            entry["passed"] = entry.get("grpc_text_output") == EXPECTED_TEXT
        for name in plan["load_models"]:
            entry = generations[name]
            try:
                answer = post(f"http://{server.http_url}/v2/models/{name}/generate",
                              {"text_input": PROMPT, "sampling_parameters": json.dumps({"max_tokens": MAX_TOKENS})})
                entry["http_text_output"] = answer.get("text_output")
            except Exception as error:  # noqa: BLE001 -- recorded
                entry["http_error"] = repr(error)[:2000]
            entry["http_passed"] = entry.get("http_text_output") == EXPECTED_TEXT
        results["generations"] = generations
    finally:
        server.stop()
        if server._workdir:  # pylint: disable=protected-access
            shutil.copy2(server.log_path, out / "tritonserver.log")
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        text, left = _wait_apps_gone(None)
        (out / "nvidia_smi_compute_apps_after.csv").write_text(text, encoding="utf-8")
        results["processes_after_stop"] = left


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("out")
    parser.add_argument("--site", help="folder holding the unpacked nvidia-pytriton wheel")
    parser.add_argument("--pylib", help="folder put first on this script's sys.path (tritonclient, protobuf)")
    parser.add_argument("--stub-pythonpath", help="PYTHONPATH of the server (its python backend stubs)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.pylib:
        sys.path.insert(0, str(Path(args.pylib).resolve()))
        # The carried protobuf is pure Python: never mix it with the machine's C extension.
        os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    if args.site:
        os.environ["TRITON_FIXTURE_SITE"] = str(Path(args.site).resolve())
    sys.path.insert(0, str(ROOT))
    python = sys.executable
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": sys.version.split()[0]}
    mr = model_repository()
    try:
        gpus_text = nvidia_smi("gpu", GPU_FIELDS)
        (out / "nvidia_smi_gpus.csv").write_text(gpus_text, encoding="utf-8")
        gpu_info = parse_gpus(gpus_text)
        results["gpu_info"] = gpu_info
        results["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, check=False).stdout.split()[:1]
        run_overcommit(mr, gpu_info, out, results)
        results["context_probe"] = measure_context(python)
        server_env = {"PYTHONPATH": str(Path(args.stub_pythonpath).resolve())} if args.stub_pythonpath else None
        results["server_env"] = server_env
        run_placement(mr, gpu_info, out, results, python, server_env)
    except Exception:  # noqa: BLE001 -- recorded, then the verdict is a failure
        results["error"] = traceback.format_exc()
    analysis = results.get("analysis") or {}
    checks = {"overcommit_refused_and_nothing_started": results.get("overcommit", {}).get("passed", False),
              "placement_and_memory_within_tolerance": analysis.get("passed", False),
              "no_process_left_after_stop": "processes_after_stop" in results and not results["processes_after_stop"],
              "no_error": "error" not in results}
    results["checks"] = checks
    results["passed"] = all(checks.values())
    # Recorded, not part of the verdict (placement and memory are what this test proves): on
    # the device the wheel's python backend received every BYTES input corrupt, over gRPC as over
    # HTTP (see tests/fixtures/nvidia/placement_h200x2/README.md).
    results["observed"] = {"generations_answered": bool(results.get("generations"))
                           and all(g["passed"] for g in results["generations"].values())}
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps({"checks": checks, "observed": results["observed"], "failures": analysis.get("failures"),
                      "error": results.get("error")},
                     indent=2))
    for gpu in analysis.get("gpus", []):
        print(f"GPU {gpu['index']}: planned {gpu['planned_mib']} MiB ({gpu['planned_share']}), models hold "
              f"{gpu['measured_models_mib']} MiB in {gpu['model_processes']} processes (diff "
              f"{gpu['difference_mib']:+d}, tolerance {gpu['tolerance_mib']}); tritonserver {gpu['server_mib']} MiB")
    for name, model in analysis.get("models", {}).items():
        print(f"{name}: planned GPU(s) {model['planned_gpus']}, CUDA_VISIBLE_DEVICES {model.get('visible_gpus')}, "
              f"torch {model.get('torch_gpus')}, nvidia-smi {model.get('nvidia_smi_gpus')}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
