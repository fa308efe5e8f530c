"""A zoo on this host: each model's optimize placed by the run scheduler (orchestrator/run/
scheduler.py), a model that asks for GPUs on one free GPU of its own, the others `parallel` at a
time (default 1: each optimize already spreads over every core and profiles alone on them, so
models side by side would skew each other's figures)."""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Optional

from orchestrator.run.scheduler import Scheduler, Unit
from orchestrator.zoo.outcome import ZooEntry, ZooResults, entry_for
from orchestrator.zoo.spec import ZooModel
from orchestrator.zoo.task import last_line, run_optimize

# (model, GPU index or None, log, where to hand the child process) -> exit code
RunModel = Callable[[ZooModel, Optional[str], Path, Callable[[subprocess.Popen], None]], int]


def run_local(models: list[ZooModel], folder: Path, results: ZooResults, gpus: list[str], parallel: int,
              on_done: Callable[[ZooEntry], None], run_model: Optional[RunModel] = None) -> None:
    """Run every model; each entry goes into `results` (and to `on_done`) as its run ends. A model's
    failure is its entry, never the others' end."""
    run = run_model or run_one
    lock = threading.Lock()
    children: list[subprocess.Popen] = []  # the runs going on, for an interrupt to stop

    def started(child: subprocess.Popen) -> None:
        with lock:
            children.append(child)

    def stop_all() -> None:
        # Each run has a session of its own (task.py): the terminal's Ctrl-C does not reach it.
        with lock:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

    def one(model: ZooModel, gpu: Optional[str]) -> None:
        start = time.monotonic()
        log = folder / f"{model.name}.log"
        code = run(model, gpu, log, started)
        entry = entry_for(model.name, folder / model.name, code, last_line(log), "local", 1, time.monotonic() - start)
        with lock:
            results.models.append(entry)
        on_done(entry)

    units = [Unit(model.name, partial(one, model), gpu=model.gpus > 0) for model in models]
    Scheduler(gpus, parallel).run(units, on_abort=stop_all)


def run_one(model: ZooModel, gpu: Optional[str], log: Path, started: Callable[[subprocess.Popen], None]) -> int:
    config = model.config if gpu is None else model.config.model_copy(update={"gpus": f"device={gpu}"})
    return run_optimize(config, log, on_start=started)
