"""Runs a graph of units (each one runner session) as soon as their inputs exist.

Placement rules: a unit that uses a GPU goes to the GPU with the fewest units running, up to
`per_gpu` units on one GPU (they take turns at what they time: orchestrator/run/turns.py); CPU
units run up to `jobs` at a time. An *exclusive* unit runs alone on its GPU, or, on a machine
without GPUs, alone on the machine (profiling there), so nothing competes with what it measures.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from graphlib import CycleError, TopologicalSorter
from typing import Optional


@dataclass
class Unit:
    name: str
    run: Callable[[Optional[str]], None]  # called with the GPU it was given, or None
    needs: list[str] = field(default_factory=list)
    gpu: bool = False
    exclusive: bool = False


def unit_graph(units: list[Unit]) -> TopologicalSorter:
    """The units' dependency graph, prepared: ValueError for a repeated name, an unknown need or a cycle."""
    names = [unit.name for unit in units]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"units named more than once: {repeated}")
    for unit in units:
        missing = [need for need in unit.needs if need not in names]
        if missing:
            raise ValueError(f"unit {unit.name} needs unknown units {missing}")
    graph = TopologicalSorter({unit.name: unit.needs for unit in units})
    try:
        graph.prepare()
    except CycleError as error:
        raise ValueError(f"the job graph has a cycle: {' -> '.join(reversed(error.args[1]))}") from None
    return graph


class Scheduler:
    def __init__(self, gpus: list[str], jobs: int, per_gpu: int = 1):
        self.gpus = gpus
        self.jobs = max(1, jobs)
        self.per_gpu = max(1, per_gpu)

    def run(self, units: list[Unit], on_abort: Callable[[], None] = lambda: None) -> None:
        """Run every unit. The first exception of a unit stops scheduling and is raised once
        the running units have returned. On Ctrl-C `on_abort` is called so that running units
        can stop, and the interrupt is raised once they have returned; a unit not begun by then
        never begins."""
        graph = unit_graph(units)  # before anything runs: a bad graph starts no unit
        by_name = {unit.name: unit for unit in units}
        position = {unit.name: i for i, unit in enumerate(units)}
        ready: list[Unit] = []  # inputs exist, not placed yet; in the order given
        running: dict[str, Optional[str]] = {}  # unit name -> GPU
        # Guards graph, running and errors; reentrant, as `finished` may run inside `run`.
        changed = threading.Condition(threading.RLock())
        errors: list[BaseException] = []
        # A Ctrl-C can land inside `pool.submit` while it starts a worker, which the pool then never
        # joins: so the units that began are tracked here, and a stopped run begins no more of them.
        begun: set[str] = set()
        stopping = threading.Event()

        def begin(unit: Unit, gpu: Optional[str]) -> None:
            with changed:
                if stopping.is_set():
                    return
                begun.add(unit.name)
            try:
                unit.run(gpu)
            finally:
                with changed:
                    begun.discard(unit.name)
                    changed.notify_all()

        def finished(unit: Unit, future: Future) -> None:
            with changed:
                running.pop(unit.name)
                error = future.exception()
                if error is None:
                    graph.done(unit.name)  # only success releases what needs it
                else:
                    errors.append(error)
                changed.notify_all()

        workers = self.jobs + len(self.gpus) * self.per_gpu + 1  # CPU and GPU units may all run at once
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                with changed:
                    while graph.is_active() and not errors:
                        ready = sorted([*ready, *(by_name[name] for name in graph.get_ready())],
                                       key=lambda unit: position[unit.name])
                        started = False
                        for unit in list(ready):
                            placed, gpu = self._place(unit, running, by_name)
                            if placed:
                                ready.remove(unit)
                                running[unit.name] = gpu
                                future = pool.submit(begin, unit, gpu)
                                # Runs `finished` at once, in this thread, if the unit is done already.
                                future.add_done_callback(partial(finished, unit))
                                started = True
                        if not started:  # nothing more can start until a unit finishes
                            changed.wait(timeout=1.0)  # the timeout keeps Ctrl-C prompt
                    while running:
                        changed.wait(timeout=1.0)
            except BaseException:
                stopping.set()
                on_abort()
                with changed:
                    while begun:
                        changed.wait(timeout=1.0)
                raise
        if errors:
            raise errors[0]

    def _place(self, unit: Unit, running: dict[str, Optional[str]],
               units: dict[str, Unit]) -> tuple[bool, Optional[str]]:
        """Whether `unit` may start now, and on which GPU."""
        if any(units[name].exclusive and gpu is None for name, gpu in running.items()):
            return False, None  # an exclusive unit has the whole machine
        if unit.gpu and self.gpus:
            load = {gpu: [name for name, placed in running.items() if placed == gpu] for gpu in self.gpus}
            free = [gpu for gpu in self.gpus
                    if len(load[gpu]) < (1 if unit.exclusive else self.per_gpu)
                    and not any(units[name].exclusive for name in load[gpu])]
            return (True, min(free, key=lambda gpu: len(load[gpu]))) if free else (False, None)
        if unit.exclusive:
            return (not running), None
        cpu_units = sum(1 for gpu in running.values() if gpu is None)
        return cpu_units < self.jobs, None
