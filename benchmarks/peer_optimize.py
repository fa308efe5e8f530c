"""Times the peer, Triton Model Navigator 0.14, optimizing the bundled MLP on CPU.

Run with the peer's own interpreter (see setup_peer.sh):
    .venv-peer/bin/python benchmarks/peer_optimize.py --samples S.npz --workspace DIR
Prints one JSON line on stdout: wall time of the optimize call, the chosen runtime
(`{"none": why}` when the peer finished without one) and the per-format statuses from the
workspace's status.yaml. Exits 1 only when optimize itself raised. DIR is deleted and
recreated by the peer itself.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_mlp():
    spec = importlib.util.spec_from_file_location("nav_orch_example_mlp", REPO_ROOT / "examples" / "mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_mlp()


def load_dataloader(path: Path) -> list:
    """The npz is one batch (batch on axis 0), so the dataloader holds that single batch,
    the same data nav-orch is fed."""
    import numpy as np
    import torch

    with np.load(path) as npz:
        tensors = {name: torch.from_numpy(npz[name]) for name in npz.files}
    # One input goes in positionally; several by name, matching forward()'s parameters.
    sample = next(iter(tensors.values())) if len(tensors) == 1 else tensors
    return [sample]


@contextlib.contextmanager
def stdout_to_stderr():
    """Keeps stdout for our one JSON line: the peer and the workers it spawns inherit fd 1,
    so redirecting sys.stdout alone would not do."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield os.fdopen(saved, "w")
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)


def format_statuses(workspace: Path) -> dict:
    """{model key: {runner: {command: status}}} from status.yaml, or {} if it cannot be read."""
    import yaml

    try:
        status = yaml.safe_load((workspace / "status.yaml").read_text())
        return {
            key: {runner: dict(r.get("status") or {}) for runner, r in (model.get("runners_status") or {}).items()}
            for key, model in (status.get("models_status") or {}).items()
        }
    except (OSError, AttributeError, yaml.YAMLError):
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    args = parser.parse_args()

    with stdout_to_stderr() as real_stdout:
        import model_navigator as nav

        model = load_mlp()
        dataloader = load_dataloader(args.samples)
        start = time.perf_counter()
        error = None
        try:
            package = nav.torch.optimize(model=model, dataloader=dataloader,
                                         target_device=nav.DeviceKind.CPU, workspace=args.workspace)
        except Exception as exc:  # a failed run is a result to report, not a crash
            package, error = None, f"{type(exc).__name__}: {exc}"
        wall_s = time.perf_counter() - start

        best = None
        if package is not None:
            try:
                runtime = package.get_best_runtime()
                best = {"format": runtime.model_status.model_config.format.value,
                        "model": runtime.model_status.model_config.key,
                        "runner": runtime.runner_status.runner_name,
                        "latency_ms": runtime.latency, "throughput": runtime.throughput}
            except Exception as exc:  # noqa: BLE001 - the run finished; it just chose nothing
                best = {"none": f"{type(exc).__name__}: {exc}"}

        record = {"tool": "triton-model-navigator", "version": nav.__version__, "wall_s": round(wall_s, 3),
                  "best": best, "error": error, "statuses": format_statuses(args.workspace)}
        real_stdout.write(json.dumps(record) + "\n")
        real_stdout.flush()
    return 0 if error is None else 1


if __name__ == "__main__":  # the peer spawns worker processes that re-import this file
    sys.exit(main())
