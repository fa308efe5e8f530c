"""What the benchmarks that optimize one model after another share: the models asked for, one
timed `nav-orch optimize`, and the JSON record, saved after each model so that a run cut short (a
device's time limit) keeps the models before it. Imported by the scripts next to it, which run as
`python benchmarks/NAME.py`."""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent


def chosen_models(parser: argparse.ArgumentParser, text: str, models: Mapping[str, Any]) -> list[str]:
    """The comma-separated `--models`; a name not among `models`, or none at all, is the parser's error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(name not in models for name in names):
        parser.error(f"--models {text!r}: expected some of {', '.join(models)}")
    return names


def new_record(**fields: Any) -> dict[str, Any]:
    """A run's record: when, the command line, `fields`, and the models' entries to come."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([sys.executable, *sys.argv]), **fields, "models": {}}


def save(record: dict[str, Any], out: Optional[Path]) -> None:
    if out:
        out.write_text(json.dumps(record, indent=2))


def run_models(names: list[str], run_model: Callable[[str], None], record: dict[str, Any],
               out: Optional[Path]) -> None:
    """Each model in turn, the record saved after each."""
    for name in names:
        run_model(name)
        save(record, out)


def exit_if_any_failed(record: dict[str, Any]) -> None:
    if any("error" in entry for entry in record["models"].values()):
        sys.exit(1)


def model_failed(record: dict[str, Any], name: str, factory: str, error: Exception) -> None:
    record["models"][name] = {"factory": factory, "error": str(error)}
    print(f"\n== {name}: {error}", file=sys.stderr)


def timed_optimize(command: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """`command` (a `nav-orch optimize ... --json`) run from the checkout: its wall time and its process,
    whose stdout holds results.json."""
    start = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return time.perf_counter() - start, run
