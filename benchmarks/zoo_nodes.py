"""The zoo's wall time on a Ray cluster of one worker node against two, in one run (CPU images).

    python benchmarks/zoo_nodes.py --workspace /tmp/zoo-bench [--repeats 1] [--out zoo-nodes.json]

The clusters are real Ray clusters on this machine (ray.cluster_utils.Cluster): a head without
CPUs, which takes no model, and one or two worker nodes of `--cpus-per-node` CPUs each; every
model's task asks for that many CPUs, so a node runs one model at a time. The zoo is
tests/test_e2e_zoo.py's: a PyTorch, a Keras and a JAX MLP, each optimized in the CPU images
without the Triton stage, run as `nav-orch zoo --ray ADDRESS`. The shapes alternate (1, 2, 1, 2,
...) for `--repeats`. The nodes share this machine's cores and its one Docker daemon, so two nodes
are not two machines: the figure says what spreading buys on one host, no more.

Prints one line per run and the medians; `--out` gets one JSON record.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_e2e_zoo import ZOO  # noqa: E402 - the tests' zoo, so the benchmark runs what CI checks


def run_zoo(workers: int, cpus: int, folder: Path) -> dict:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "zoo.toml").write_text(ZOO)
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "orchestrator.cli", "zoo", str(folder / "zoo.toml"),
                              "--workspace", str(folder / "out"), "--ray", cluster.address, "--cpus-per-model",
                              str(cpus)], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
    finally:
        cluster.shutdown()
    zoo = json.loads((folder / "out" / "zoo.json").read_text()) if (folder / "out" / "zoo.json").is_file() else {}
    return {"workers": workers, "cpus_per_node": cpus, "wall_s": wall, "exit_code": run.returncode,
            "models": [{k: m[k] for k in ("name", "status", "node", "wall_s")} for m in zoo.get("models", [])],
            "error": run.stderr.strip().splitlines()[-1] if run.returncode else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/zoo-bench"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = []
    for repeat in range(args.repeats):
        for workers in (1, 2):
            run = run_zoo(workers, args.cpus_per_node, args.workspace / f"r{repeat}-w{workers}")
            runs.append(run)
            print(f"{workers} worker node(s): {run['wall_s']:.1f} s (exit {run['exit_code']})"
                  + "".join(f"\n  {m['name']:10} {m['status']:6} {m['node']:24} {m['wall_s']:.1f} s"
                            for m in run["models"]), flush=True)
    medians = {w: statistics.median(r["wall_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
    print(f"\nmedian wall time: 1 node {medians[1]:.1f} s, 2 nodes {medians[2]:.1f} s "
          f"({medians[1] / medians[2]:.2f}x); host: {os.cpu_count()} cores")
    if args.out:
        args.out.write_text(json.dumps({
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([sys.executable, *sys.argv]), "host_cores": os.cpu_count(),
            "runs": runs, "median_wall_s": medians}, indent=2))


if __name__ == "__main__":
    main()
