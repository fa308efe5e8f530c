"""`nav-orch serve --server pytriton` on a GPU, end to end, with the local executor (for a GPU host
without Docker, where the NGC images cannot run):

1. optimizes the bundled MLP on one GPU (`--formats torchscript-trace --precisions fp32`);
2. serves its best variant with `nav-orch serve --server pytriton --executor local --python PY
   --gpus device=N` (PY: a Python with torch, nvidia-pytriton and numpy<2);
3. sends the request serve printed over HTTP and compares the answer with the reference output of
   the first sample;
4. while it serves, the GPU the server says torch computes on must be GPU N (and where nvidia-smi
   lists compute processes, the server's are on GPU N only);
5. stops it with SIGTERM: exit 0, nothing left running.

    python scripts/check_pytriton_gpu.py --python PY --gpu 1 --workspace /tmp/pt-ws --out check.json

Prints one JSON record (also written to --out) and exits 1 when a check failed.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a checkout

from runners.contract.protocol import REFERENCE_OUTPUTS  # noqa: E402
from runners.serving.pytriton_server import GPU_LINE  # noqa: E402


def nav_orch(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", *args]


def compute_apps() -> list[dict[str, str]]:
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
    return [dict(zip(("pid", "gpu_uuid", "used_mib"), (p.strip() for p in line.split(","))))
            for line in out.splitlines() if line.strip()]


def gpu_uuid(index: str) -> str:
    return subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader", "-i", index],
                          capture_output=True, text=True, check=True).stdout.strip()


def memory_used() -> dict[str, int]:
    """MiB in use per GPU index (recorded: some hosts report none)."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    return {index.strip(): int(used) for index, used in (line.split(",") for line in out.splitlines() if line)}


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (tritonserver and the Python backend's stub)."""
    found, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        for child in map(int, children):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="the Python with torch, nvidia-pytriton and numpy<2")
    parser.add_argument("--gpu", default="0", help="the GPU to serve on (nvidia-smi's index); none: a dry run on "
                        "the CPU, without the GPU checks")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/nav-pytriton-gpu"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    record: dict[str, Any] = {"gpu": args.gpu, "checks": {}}
    checks = record["checks"]
    gpus = "none" if args.gpu == "none" else f"device={args.gpu}"

    optimize = subprocess.run(nav_orch(
        "optimize", "examples/mlp.py:make_mlp", "--input", "input:8,64:float32", "--formats", "torchscript-trace",
        "--precisions", "fp32", "--memory-formats", "contiguous", "--gpus", gpus, "--executor",
        "local", "--python", args.python, "--workspace", str(args.workspace), "--batch-sizes", "1,8", "--json",
        "--force"), cwd=ROOT, capture_output=True, text=True)
    checks["optimize exit 0"] = optimize.returncode == 0
    if optimize.returncode != 0:
        record["optimize_stderr"] = optimize.stderr[-3000:]
        return finish(record, args.out)
    results = json.loads(optimize.stdout)
    record["best"] = results["best"]

    before = memory_used() if args.gpu != "none" else {}
    serve = subprocess.Popen(nav_orch("serve", str(args.workspace), "--server", "pytriton", "--executor", "local",
                                      "--python", args.python, "--gpus", gpus),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed: dict[str, str] = {}
    ours: set[int] = set()
    deadline = time.monotonic() + 240
    while "curl" not in printed and time.monotonic() < deadline:
        line = serve.stdout.readline() if serve.stdout else ""
        if not line:
            break
        key, _, value = line.strip().partition(" ")
        printed[key] = value.strip()
    record["printed"] = printed
    checks["serve printed a request"] = "curl" in printed
    if "curl" in printed:
        body = Path(printed["curl"].rsplit("@", 1)[1]).read_bytes()
        request = urllib.request.Request(f"{printed['http']}/v2/models/{record['best']}/infer", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)["outputs"][0]
        got = np.array(answer["data"], np.float32).reshape(answer["shape"])
        with np.load(args.workspace / "reference" / REFERENCE_OUTPUTS) as reference:
            expected = reference[reference.files[0]][:1]
        record["max_abs_err"] = float(np.abs(got - expected).max())
        checks["answer matches the reference"] = bool(np.allclose(got, expected, rtol=1e-3, atol=1e-4))
        ours = descendants(serve.pid)
        record["processes"] = len(ours)
        if args.gpu != "none":
            apps = compute_apps()
            record["compute_apps"] = apps
            used = {app["gpu_uuid"] for app in apps if int(app["pid"]) in ours}
            record["served_on"] = sorted(used)
            during = memory_used()
            grown = {index: during[index] - before.get(index, 0) for index in during}
            record["memory_grown_mib"] = grown
            # The server's own word (torch's device, runners/serving/pytriton_server.py serving_gpu).
            log = (args.workspace / "triton" / "pytriton-serve.live.log").read_text()
            said = [line.partition(GPU_LINE)[2].split()[0] for line in log.splitlines() if GPU_LINE in line]
            record["server_says"] = said
            checks[f"the server computes on GPU {args.gpu}"] = said == [gpu_uuid(args.gpu)]
            if apps:  # where processes are visible, theirs are on that GPU only
                checks[f"its processes are on GPU {args.gpu} only"] = used == {gpu_uuid(args.gpu)}
    serve.send_signal(signal.SIGTERM)
    try:
        _, stderr = serve.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        serve.kill()
        _, stderr = serve.communicate()
    record["serve_stderr_tail"] = stderr[-1500:]
    checks["SIGTERM stops it with exit 0"] = serve.returncode == 0
    time.sleep(2)
    alive = [pid for pid in ours if Path(f"/proc/{pid}").exists()]
    record["left_running"] = alive
    checks["no server process left"] = not alive
    return finish(record, args.out)


def finish(record: dict[str, Any], out: Path | None) -> int:
    record["passed"] = all(record["checks"].values())
    text = json.dumps(record, indent=2)
    print(text)
    if out:
        out.write_text(text)
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
