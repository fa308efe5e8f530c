"""`nav-orch zoo`: many models' optimize runs, on this host or over a Ray cluster.

spec.py reads the zoo file into one validated OptimizeConfig per model; task.py runs one model's
optimize in a child process; local.py places the runs on this host's GPUs and cores; ray_cluster.py
makes each a Ray task; outcome.py writes zoo.json, the summary and the index page.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from orchestrator.config import ExecutorName
from orchestrator.containers import engine
from orchestrator.zoo.outcome import ZooEntry, ZooResults, save
from orchestrator.zoo.spec import load_zoo


def run_zoo(zoo_file: Path, folder: Path, say: Callable[[str], None], ray_address: Optional[str] = None,
            results_dir: Optional[Path] = None, build_images: bool = False, parallel: int = 1,
            cpus_per_model: float = 1.0, gpus: Optional[list[str]] = None) -> ZooResults:
    """Run every model of `zoo_file`, each into `folder`/NAME; zoo.json and index.html in `folder`
    are kept up to date as models finish, and marked interrupted if the zoo is stopped.
    `gpus`: this host's GPU indices for a local zoo (None: nvidia-smi's)."""
    folder = folder.resolve()
    models = load_zoo(zoo_file, folder)
    if not ray_address and any(model.config.executor is ExecutorName.docker for model in models):
        engine.connect()  # no daemon: one line for the zoo, not one failure per model
    folder.mkdir(parents=True, exist_ok=True)
    results = ZooResults(backend=f"ray {ray_address}" if ray_address else "local")
    save(results, folder)
    start = time.monotonic()

    def done(entry: ZooEntry) -> None:
        say(f"{entry.name}: {entry.status}" + (f", best {entry.best}" if entry.best else "")
            + (f" ({entry.error})" if entry.error else "") + (f" on {entry.node}" if entry.node else ""))
        save(results, folder)

    try:
        if ray_address:
            from orchestrator.zoo.ray_cluster import run_on_ray

            run_on_ray(models, folder, ray_address, results_dir, build_images, cpus_per_model, results, say, done)
        else:
            from orchestrator.containers.gpus import host_gpus
            from orchestrator.zoo.local import run_local

            indices = gpus if gpus is not None else [gpu.index for gpu in host_gpus()]
            run_local(models, folder, results, indices, parallel, done)
        results.state = "complete"
    except KeyboardInterrupt:
        results.state = "interrupted"
        raise
    except Exception as error:
        results.state, results.error = "failed", str(error)
        raise
    finally:
        order = {model.name: i for i, model in enumerate(models)}
        results.models.sort(key=lambda entry: order[entry.name])
        results.wall_s = time.monotonic() - start
        save(results, folder)
    return results
