"""What a zoo leaves: DIR/zoo.json with one entry per model, the summary table, and DIR/index.html
linking each model's report."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, ValidationError
from rich.table import Table

from orchestrator.config import Strict
from orchestrator.errors import ExitCode
from orchestrator.results import RunResults
from runners.contract.protocol import write_text_atomic

ZOO_FILE = "zoo.json"
INDEX_FILE = "index.html"


class ZooEntry(Strict):
    name: str
    status: Literal["ok", "failed"]
    best: Optional[str] = None
    workspace: str  # relative to the zoo's folder
    node: Optional[str] = None  # where it ran (the Ray node's address; "local")
    attempts: int = 1  # more than one: its node was lost and the cluster ran it again
    error: Optional[str] = None
    wall_s: Optional[float] = None
    exit_code: Optional[int] = None  # its optimize's (docs/concepts.md, "Exit codes"); None in an older zoo.json


class ZooResults(Strict):
    backend: str  # "local", or "ray ADDRESS"
    state: Literal["running", "complete", "interrupted", "failed"] = "running"
    error: Optional[str] = None
    models: list[ZooEntry] = Field(default_factory=list)
    wall_s: Optional[float] = None


def entry_for(name: str, folder: Path, code: int, log_line: str, node: str, attempts: int,
              wall_s: float) -> ZooEntry:
    """A model's entry from its run's exit code and results.json (read as data: it may come from
    another node's archive)."""
    best, error = None, None
    try:
        results = RunResults.model_validate_json((folder / "results.json").read_text())
        best = results.best
        if best is None and results.state == "complete":  # it ran to the end: say why nothing won
            reasons = [f"{v.name}: {v.error}" for v in results.variants if v.error]
            error = "no variant verified" + (f" ({reasons[0]})" if reasons else "")
    except (OSError, ValidationError, ValueError):
        pass
    if error is None and (code != 0 or best is None):  # it stopped: optimize's one line says why
        error = log_line.removeprefix("nav-orch: ") or f"optimize exited with {code}, leaving no readable results.json"
    return ZooEntry(name=name, status="ok" if best and code == 0 else "failed", best=best, workspace=folder.name,
                    node=node, attempts=attempts, error=error, wall_s=wall_s, exit_code=code)


def exit_code(results: ZooResults) -> int:
    """The zoo's: 0 when every model has a best variant; the environment's when every model failed
    for it (no Docker daemon, no image, on every node), which no model of the zoo can fix; else 1."""
    if all(entry.status == "ok" for entry in results.models):
        return ExitCode.OK
    if results.models and all(entry.exit_code == ExitCode.ENVIRONMENT for entry in results.models):
        return ExitCode.ENVIRONMENT
    return ExitCode.NO_VARIANT


def save(results: ZooResults, folder: Path) -> None:
    write_text_atomic(folder / ZOO_FILE, results.model_dump_json(indent=2))
    write_index(results, folder)


def write_index(results: ZooResults, folder: Path) -> None:
    """One page linking each model's report.html (where its run wrote one)."""
    rows = []
    for entry in results.models:
        report = folder / entry.workspace / "report.html"
        link = (f'<a href="{html.escape(entry.workspace)}/report.html">report</a>' if report.is_file() else "-")
        rows.append(f"<tr><td>{html.escape(entry.name)}</td><td>{entry.status}</td><td>{html.escape(entry.best or '-')}"
                    f"</td><td>{html.escape(entry.node or '-')}</td><td>{entry.attempts}</td><td>{link}</td>"
                    f"<td>{html.escape(entry.error or '')}</td></tr>")
    (folder / INDEX_FILE).write_text(
        "<!doctype html><meta charset=utf-8><title>nav-orch zoo</title>"
        "<style>body{font-family:sans-serif;margin:2em} td,th{padding:.3em .8em;text-align:left}</style>"
        f"<h1>nav-orch zoo ({html.escape(results.backend)}, {results.state})</h1><table>"
        "<tr><th>model</th><th>status</th><th>best</th><th>node</th><th>attempts</th><th>report</th><th>error</th></tr>"
        + "".join(rows) + "</table>\n")


def summary_table(results: ZooResults) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("model", "status", "best", "node", "attempts", "wall s", "error"):
        table.add_column(column)
    for entry in results.models:
        style = "green" if entry.status == "ok" else "red"
        table.add_row(entry.name, f"[{style}]{entry.status}[/]", entry.best or "-", entry.node or "-",
                      str(entry.attempts), f"{entry.wall_s:.1f}" if entry.wall_s is not None else "-",
                      entry.error or "")
    return table
