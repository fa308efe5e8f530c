"""Two profiling settings side by side on the bundled MLP (CPU images), alternated A B B A ...

    python benchmarks/profiling_ab.py --set window_ms=50 [--pairs 4] [--out DIR]

A is the default `ProfileSettings`; B the same with each `--set FIELD=VALUE` (runners/contract/
protocol.py). Each run is a whole `nav-orch run-config` without Triton, timed from outside; the table
gives each pair's wall times, the seconds its profile jobs took (from the timeline) and the chosen
variant, then the median ratio B/A with its range. Stdlib only, as optimize_vs_peer.py.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from optimize_vs_peer import REPO_ROOT, write_samples  # the same MLP samples as the peer benchmark


def setting(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: give FIELD=VALUE, e.g. window_ms=50")
    return name, float(value)


def run(nav_orch: str, config: dict, folder: Path) -> dict:
    """One run-config: its wall time, its profile jobs' seconds and its choice."""
    shutil.rmtree(config["workspace"], ignore_errors=True)
    path = folder / f"{Path(config['workspace']).name}.json"
    path.write_text(json.dumps(config))
    start = time.perf_counter()
    done = subprocess.run([nav_orch, "run-config", str(path), "--progress", "quiet"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"run failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    results = json.loads((Path(config["workspace"]) / "results.json").read_text())
    profiles = sum(t["end_s"] - t["start_s"] for t in results["timeline"] if t["kind"] == "profile")
    return {"wall_s": wall, "profiles_s": profiles, "best": results["best"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="changes", type=setting, action="append", required=True,
                        help="a ProfileSettings field for B, FIELD=VALUE (repeatable)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--nav-orch", default=str(REPO_ROOT / ".venv" / "bin" / "nav-orch"))
    parser.add_argument("--out", type=Path, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args()

    out = (args.out or Path(tempfile.mkdtemp(prefix="nav-orch-profiling-ab-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    samples = write_samples(out)
    profiling = {"A": {}, "B": dict(args.changes)}
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for i in range(args.pairs):
        for side in ("A", "B") if i % 2 == 0 else ("B", "A"):  # who goes first alternates
            config = {"model": {"path": str(REPO_ROOT / "examples" / "mlp.py"), "form": "factory",
                                "factory": "make_mlp"},
                      "samples": str(samples), "images": "cpu", "gpus": "none", "jobs": 2,
                      "workspace": str(out / f"ws-{side}"), "triton": {"enabled": False},
                      "profiling": profiling[side]}
            runs[side].append(run(args.nav_orch, config, out))
            print(f"pair {i + 1}/{args.pairs} {side}: {runs[side][-1]['wall_s']:.2f} s", file=sys.stderr, flush=True)

    print(f"B: {', '.join(f'{k}={v:g}' for k, v in profiling['B'].items())}")
    print(f"{'pair':>4} {'A s':>7} {'A prof s':>9} {'B s':>7} {'B prof s':>9} {'B/A':>6}  A best / B best")
    ratios = []
    for i, (a, b) in enumerate(zip(runs["A"], runs["B"]), 1):
        ratios.append(b["wall_s"] / a["wall_s"])
        print(f"{i:>4} {a['wall_s']:>7.2f} {a['profiles_s']:>9.2f} {b['wall_s']:>7.2f} {b['profiles_s']:>9.2f} "
              f"{ratios[-1]:>6.3f}  {a['best']} / {b['best']}")
    print(f"median B/A {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
