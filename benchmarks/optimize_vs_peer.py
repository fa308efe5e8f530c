"""Side-by-side wall time of `nav-orch optimize` and the peer (Model Navigator 0.14) on the bundled MLP.

    python benchmarks/optimize_vs_peer.py [--repeats 3] [--peer-python .venv-peer/bin/python]
                                          [--nav-orch nav-orch] [--out DIR]

Targets: nav-orch takes at most 0.4 of the peer's optimize call (issue "Time to result"; half of
it before), and its host process stays under 150 MB resident. Set the peer up first with benchmarks/setup_peer.sh.
Runs on the host interpreter with the stdlib only (numpy in a child for the samples): Linux
counts the parent's peak RSS into a child's ru_maxrss at exec, so this process must stay small
or it inflates the very number being judged.
Exit status: 0 targets met, 1 targets missed, 2 a run failed.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PEER_SCRIPT = REPO_ROOT / "benchmarks" / "peer_optimize.py"
MAX_RATIO = 0.4
MAX_RSS_MB = 150.0


# nn.Sequential's forward parameter is `input`; seeded so both tools see the same batch.
SAMPLES_SNIPPET = """import sys, numpy as np
np.savez(sys.argv[1], input=np.random.default_rng(0).standard_normal((8, 64), dtype=np.float32))"""


def write_samples(out: Path) -> Path:
    path = out / "samples.npz"
    subprocess.run([sys.executable, "-c", SAMPLES_SNIPPET, str(path)], check=True)  # numpy stays out of here
    return path


def rss_floor_mb() -> float:
    """What any child's ru_maxrss reads at least: this process's own peak, inherited at exec."""
    proc = subprocess.Popen([sys.executable, "-S", "-c", ""])
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss / 1024


def run_nav_orch(cmd: list[str], samples: Path, workspace: Path, timeout_s: float) -> dict:
    """Wall time, exit code and peak RSS of one `nav-orch optimize`."""
    shutil.rmtree(workspace, ignore_errors=True)  # a leftover workspace would let it reuse jobs
    argv = cmd + ["optimize", "examples/mlp.py:make_mlp", "--samples", str(samples), "--images", "cpu",
                  "--gpus", "none", "--workspace", str(workspace), "--progress", "quiet", "--json",
                  # The peer serves nothing: compare export, verify and profile only.
                  "--no-triton"]
    with open(f"{workspace}.stdout", "wb") as stdout, open(f"{workspace}.stderr", "wb") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=stdout, stderr=stderr)
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        # wait4, not Popen.wait: its rusage carries the child's peak RSS (with any descendants it
        # reaped; containers are the daemon's children, so they are rightly left out).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it; keep Popen from trying
    problem = None
    if proc.returncode != 0:
        problem = f"exit {proc.returncode} (see {workspace}.stderr)"
    else:
        try:
            if json.loads((workspace / "results.json").read_text()).get("best") is None:
                problem = "results.json has no best"
        except (OSError, ValueError) as error:
            problem = f"results.json unreadable: {error}"
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "problem": problem}  # ru_maxrss: KiB


def run_peer(python: str, samples: Path, workspace: Path, timeout_s: float) -> dict:
    """Wall time of the whole peer process and of its optimize call alone."""
    argv = [python, str(PEER_SCRIPT), "--samples", str(samples), "--workspace", str(workspace)]
    with open(f"{workspace}.stderr", "wb") as stderr:
        start = time.perf_counter()
        try:
            done = subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"wall_s": time.perf_counter() - start, "problem": f"timed out after {timeout_s:.0f} s"}
        except OSError as error:
            return {"wall_s": float("nan"), "problem": f"cannot start {python}: {error} (run benchmarks/setup_peer.sh)"}
        wall = time.perf_counter() - start
    Path(f"{workspace}.stdout").write_bytes(done.stdout)
    try:
        record = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"wall_s": wall, "problem": f"exit {done.returncode}, no JSON line (see {workspace}.stderr)"}
    best = record.get("best") or {}
    return {"wall_s": wall, "optimize_s": record["wall_s"], "problem": record.get("error"),
            "best": best.get("runner", "none") if "none" not in best else "none"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-python", default=str(REPO_ROOT / ".venv-peer" / "bin" / "python"))
    parser.add_argument("--nav-orch", default="nav-orch", help="command to run nav-orch (split like a shell would)")
    parser.add_argument("--out", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per run")
    args = parser.parse_args()

    out = (args.out or Path(tempfile.mkdtemp(prefix="nav-orch-vs-peer-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    samples = write_samples(out)
    nav_cmd = shlex.split(args.nav_orch)
    print(f"scratch: {out}", file=sys.stderr)

    nav, peer = [], []
    for i in range(args.repeats):
        # Alternate who goes first, so caches warmed by the first run favour neither tool.
        order = ("nav", "peer") if i % 2 == 0 else ("peer", "nav")
        for who in order:
            print(f"repetition {i + 1}/{args.repeats}: {who} ...", file=sys.stderr, flush=True)
            if who == "nav":
                nav.append(run_nav_orch(nav_cmd, samples, out / f"nav-{i}", args.timeout))
            else:
                peer.append(run_peer(args.peer_python, samples, out / f"peer-{i}", args.timeout))

    print(f"{'rep':>4} {'nav-orch s':>11} {'RSS MB':>7} {'peer s':>8} {'peer optimize s':>16}  peer best")
    for i, (n, p) in enumerate(zip(nav, peer), 1):
        print(f"{i:>4} {n['wall_s']:>11.2f} {n['rss_mb']:>7.1f} {p['wall_s']:>8.2f} "
              f"{p.get('optimize_s', float('nan')):>16.2f}  {p.get('best', '?')}")
    problems = [f"rep {i} {who}: {r['problem']}" for who, runs in (("nav-orch", nav), ("peer", peer))
                for i, r in enumerate(runs, 1) if r["problem"]]
    for problem in problems:
        print(f"FAILED {problem}")

    nav_median = statistics.median(r["wall_s"] for r in nav)
    peer_median = statistics.median(r["wall_s"] for r in peer)
    # The target is judged against the optimize call alone (the peer's imports excluded),
    # which is the stricter of the two comparisons for nav-orch.
    peer_call_median = statistics.median(r.get("optimize_s", r["wall_s"]) for r in peer)
    ratio = nav_median / peer_call_median
    rss = max(r["rss_mb"] for r in nav)
    print(f"{'median':>4} {nav_median:>11.2f} {'':>7} {peer_median:>8.2f} {peer_call_median:>16.2f}")
    print(f"ratio nav-orch/peer optimize call: {ratio:.3f} (target <= {MAX_RATIO}: "
          f"{'met' if ratio <= MAX_RATIO else 'MISSED'}); vs whole peer process: {nav_median / peer_median:.3f}")
    print(f"nav-orch peak host RSS: {rss:.1f} MB (target < {MAX_RSS_MB:.0f} MB: "
          f"{'met' if rss < MAX_RSS_MB else 'MISSED'}; a bare python reads {rss_floor_mb():.1f} MB here)")
    if problems:
        return 2
    return 0 if ratio <= MAX_RATIO and rss < MAX_RSS_MB else 1


if __name__ == "__main__":
    sys.exit(main())
