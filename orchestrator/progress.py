"""What people see: a live view of each variant's stage, and the final table."""
from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Literal, Optional, Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.results import RunResults, VariantResult
from runners.contract.protocol import ProfileEntry

ProgressMode = Literal["auto", "plain", "quiet"]
STAGE_STYLE = {"failed": "red", "skipped": "yellow", "done": "green", "verified": "cyan"}


class Reporter(Protocol):
    """What a run tells about its progress: a variant entering a stage, and notes."""

    def stage(self, variant: str, stage: str, detail: str = "") -> None: ...
    def note(self, text: str) -> None: ...


class PlainReporter:
    """One line per event on stderr: for logs and CI."""

    def __init__(self, console: Console):
        self.console = console
        self.start = time.monotonic()

    def _print(self, text: str) -> None:
        say(self.console, f"[{time.monotonic() - self.start:6.1f}s] {text}")

    def stage(self, variant: str, stage: str, detail: str = "") -> None:
        self._print(f"{variant}: {stage}" + (f" ({detail})" if detail else ""))

    def note(self, text: str) -> None:
        self._print(text)


class LiveReporter:
    """A table redrawn in place while the run goes on (terminals only)."""

    def __init__(self, console: Console):
        self.stages: dict[str, tuple[str, str]] = {}
        self.status = ""
        self.lock = threading.Lock()
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=True)

    def _render(self) -> Table:
        table = Table(title=self.status or None, title_justify="left", box=None)
        table.add_column("variant")
        table.add_column("stage")
        table.add_column("detail", overflow="ellipsis", max_width=80)
        for name, (stage, detail) in self.stages.items():
            style = STAGE_STYLE.get(stage, "")
            table.add_row(name, f"[{style}]{stage}[/]" if style else stage, detail)
        return table

    def stage(self, variant: str, stage: str, detail: str = "") -> None:
        with self.lock:
            self.stages[variant] = (stage, detail)
            self.live.update(self._render())

    def note(self, text: str) -> None:
        with self.lock:
            self.status = text
            self.live.update(self._render())

    def __enter__(self) -> LiveReporter:
        self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        self.live.stop()


class QuietReporter:
    """Tells nothing (--progress quiet, and the API's default)."""

    def stage(self, variant: str, stage: str, detail: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        pass


def make_reporter(mode: ProgressMode, console: Console) -> Reporter:
    if mode == "quiet":
        return QuietReporter()
    if mode == "auto" and console.is_terminal:
        return LiveReporter(console)
    return PlainReporter(console)


def _max_error(variant: VariantResult) -> str:
    if variant.verification is None or not variant.verification.outputs:
        return "-"
    outputs = variant.verification.outputs.values()
    text = f"{max(o.max_abs_err for o in outputs):.2e}"
    cosines = [o.cosine for o in outputs if o.cosine is not None]
    if cosines:  # a quantized variant, judged by its accuracy budget
        text += f" cos {min(cosines):.5f}"
        top1 = [o.top1 for o in outputs if o.top1 is not None]
        text += f" top1 {min(top1):.3f}" if top1 else ""
    return text


def _cut(entry: ProfileEntry) -> str:
    return "~" if entry.beaten_by else ""  # timed for one window only: a verified rival beat it


def _p50_smallest(variant: VariantResult) -> str:
    if not variant.profile:
        return "-"
    entry = min(variant.profile, key=lambda e: e.batch_size)
    return f"{_cut(entry)}{entry.latency_ms.p50:.3f} (bs{entry.batch_size})"


def _throughput_largest(variant: VariantResult) -> str:
    if not variant.profile:
        return "-"
    entry = max(variant.profile, key=lambda e: e.batch_size)
    return f"{_cut(entry)}{entry.throughput:,.0f} (bs{entry.batch_size})"


def _served(results: RunResults, variant: VariantResult) -> tuple[str, str]:
    """Triton's best throughput for the variant, and the p99 at that point."""
    runs = [r for r in results.triton.runs if r.variant == variant.name] if results.triton else []
    if not runs:
        return "-", "-"
    top = max(runs, key=lambda r: r.throughput)
    mark = "" if top.stable else "~"  # perf_analyzer could not stabilize it (see docs/serving.md)
    return f"{mark}{top.throughput:,.0f} (bs{top.batch_size} c{top.concurrency})", f"{mark}{top.latency_ms.p99:.3f}"


def results_table(results: RunResults) -> Table:
    table = Table(box=None, header_style="bold")
    columns = ["", "variant", "status", "max abs err", "p50 ms", "throughput/s"]
    served = bool(results.triton and results.triton.runs)
    if served:  # next to the in-runner figures: what Triton served, measured by perf_analyzer
        columns += ["served/s", "served p99 ms"]
    for column in columns:
        table.add_column(column)
    for variant in results.variants:
        style = {"ok": "green", "failed": "red", "skipped": "yellow"}.get(variant.status, "")
        row = ["*" if variant.name == results.best else "", variant.name,
               f"[{style}]{variant.status}[/]" if style else variant.status,
               _max_error(variant), _p50_smallest(variant), _throughput_largest(variant)]
        table.add_row(*row, *(_served(results, variant) if served else ()))
    return table


def say(console: Console, text: str) -> None:
    """One line as it is: no markup, and unwrapped where it goes to a file or pipe (logs, CI),
    so every message stays one line there."""
    console.print(text, markup=False, highlight=False, soft_wrap=not console.is_terminal)


def widen(console: Console) -> Console:
    """Outside a terminal rich assumes 80 columns, which would cut a table's names: give it 140."""
    if not console.is_terminal and console.width < 140:
        console.width = 140
    return console


def print_summary(results: RunResults, console: Console, workspace: str) -> None:
    widen(console).print(results_table(results))
    for variant in results.variants:
        if variant.error:
            say(console, f"{variant.name}: {variant.status}: {variant.error}")
    cut = sum(1 for variant in results.variants for entry in variant.profile if entry.beaten_by)
    if cut:
        say(console, f"~: {cut} profile point(s) timed for one window only, as a verified variant beat them by "
                     "the margin there (--exhaustive times every point in full)")
    if results.best and results.selection:  # a selection comes with every best
        say(console, f"best: {results.best} ({results.selection.reason})")
    elif results.selection:
        say(console, f"no best variant: {results.selection.reason}")
    if results.triton and results.triton.error:
        say(console, f"triton: {results.triton.error}")
    if results.jobs.reused:
        say(console, f"jobs: ran {results.jobs.run}, reused {results.jobs.reused} finished earlier "
                     "(--force redoes them)")
    say(console, f"results: {workspace}/results.json")


def stderr_console(no_color: Optional[bool] = None) -> Console:
    return Console(file=sys.stderr, no_color=no_color)


class BuildOutput:
    """What `images build` and `images bootstrap` show on `screen`. nav-orch's own lines appear as
    they are; a tool's own output (the builder's steps, debootstrap's lines) goes to `log` only and,
    on a terminal (`live`), shows as one line per source that updates in place ("pytorch-cpu: step
    3/12, 42 s"). `plain`: every line on the screen, as the tools print them. `log` keeps all."""

    STEP = re.compile(r"^Step (\d+)/(\d+) : ")

    def __init__(self, log: TextIO, screen: TextIO, live: bool, plain: bool,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.screen, self.live, self.plain, self.clock = log, screen, live, plain, clock
        self.source: Optional[str] = None
        self.started = 0.0
        self.showing = False  # a live line is on the screen

    def note(self, line: str) -> None:
        self.log.write(line + "\n")
        self._show(line + "\n")

    def output(self, source: str, line: str) -> None:
        self.log.write(f"{source}: {line}\n")
        if self.plain:
            self._show(line + "\n")
            return
        if source != self.source:
            self.source, self.started = source, self.clock()
        if self.live:
            step = self.STEP.match(line)
            phase = f"step {step.group(1)}/{step.group(2)}" if step else "working"
            self._show(f"{source}: {phase}, {self.clock() - self.started:.0f} s", live=True)

    def _show(self, text: str, live: bool = False) -> None:
        if self.showing:  # the live line gives way: cleared, then overwritten
            self.screen.write("\r\x1b[2K")
        self.screen.write(text)
        self.screen.flush()
        self.showing = live
