"""What the `nav-orch` command line writes besides results: its help's examples and panels, the
version, the lines after optimize's table, and a config's validation error in the options' words."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError
from rich.markup import escape

from orchestrator import __version__
from orchestrator.config import Budget, OptimizeConfig, Tolerances, TritonSettings, default_of
from orchestrator.results import LOCAL_SERVER_PREFIX, RunResults, confidence_text, figure, gain
from runners.contract.protocol import PROTOCOL_VERSION, ProfileEntry

# The panels of optimize's (and profile's) options in --help.
MODEL_PANEL = "Model and samples"
SEARCH_PANEL = "Search"
IMAGES_PANEL = "GPUs and images"
RUNNERS_PANEL = "Runners"
TRITON_PANEL = "Triton"
OUTPUT_PANEL = "Output"

OPTIMIZE_EPILOG = """Examples:

  nav-orch optimize examples/mlp.py:make_mlp --input input:8,64:float32 --images cpu --gpus none

  nav-orch optimize model.onnx --samples samples.npz --batch-sizes 1,8,32 --objective latency --json > results.json

Exit codes: 0 a best variant, 1 none passed, 2 bad input, 3 environment (Docker, an image, a GPU)."""

# Help texts with brackets, which rich would take for markup and drop.
ACCURACY_HELP = escape("Accuracy budget of int8/fp8 variants: [OUTPUT=]cosine:0.99,top1:0.9,max_abs:X (repeatable; "
                       f"defaults cosine {default_of(Budget, 'min_cosine')}, top1 {default_of(Budget, 'min_top1')}).")
ZOO_FILE_HELP = escape("The zoo file: TOML, a [[model]] table per model with optimize's options, [defaults] for all "
                       "(docs/zoo.md).")

# Config fields that options of another name set; any other field is set by --FIELD-WITH-DASHES.
# An --accuracy key takes its value after a colon (the option's own syntax).
FIELD_OPTIONS = {
    "model": "MODEL", "args": "--model-arg", "inputs": "--input", "job_timeout_s": "--timeout",
    "output_atol": "--atol", "output_rtol": "--rtol",
    "min_cosine": "--accuracy cosine:", "min_top1": "--accuracy top1:", "max_abs": "--accuracy max_abs:",
    "all_variants": "--triton-all", "concurrency": "--triton-concurrency", "enabled=False": "--no-triton",
    "triton_tritonserver": "--tritonserver", "triton_python": "--triton-python",
    "search": "--triton-search", "search_budget_s": "--triton-search-budget",
}
OPTION_FIELDS = {*FIELD_OPTIONS, *OptimizeConfig.model_fields, *Tolerances.model_fields, *Budget.model_fields,
                 *TritonSettings.model_fields, "framework", "triton_tritonserver", "triton_python"}
NAMED_FIELD = re.compile(r"`([\w=]+)`")


def option_for(field: str) -> str:
    return FIELD_OPTIONS.get(field, "--" + field.replace("_", "-"))


def validation_message(error: ValidationError) -> str:
    """A config's first error as the command line's user gave it: the option, its value, what is
    wrong; fields named in the message (`samples`) become their options too."""
    first = error.errors()[0]
    fields = [part for part in first["loc"] if isinstance(part, str) and part in OPTION_FIELDS]
    message = NAMED_FIELD.sub(lambda found: option_for(found.group(1)) if found.group(1) in OPTION_FIELDS
                              else found.group(0), first["msg"])
    if not fields:
        return message
    option, value = option_for(fields[-1]), shown(first.get("input"))
    if value is None or repr(first.get("input")) in message:  # no value, or the message quotes it
        return f"{option.rstrip(':')}: {message}"
    return f"{option}{'' if option.endswith(':') else ' '}{value}: {message}"


def shown(value: Any) -> Optional[str]:
    """A value as it was typed, for a scalar; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return f"{value:g}" if isinstance(value, float) else str(value)


def version_text(release: str) -> str:
    """`nav-orch --version`: this nav-orch, the images it builds and runs, and the runners' protocol."""
    return (f"nav-orch {__version__}\n"
            f"images: NGC release {release} (docker-bake.hcl; --images auto on a GPU host), or cpu\n"
            f"runner protocol: {PROTOCOL_VERSION}")


def next_steps(results: RunResults, workspace: Path) -> list[str]:
    """The few lines after optimize's table: the best variant's gain over the source model run as
    it is, where its artifact and the report are, and how to serve it. None without a best."""
    best = next((v for v in results.variants if v.name == results.best), None)
    if best is None or results.selection is None:
        return []
    lines = [speedup_line(results, best.profile)]
    margin = confidence_text(results.selection)
    if margin is not None:
        lines.append(f"margin: {margin}")
    if best.artifact:
        lines.append(f"artifact: {workspace / best.artifact}")
    report = workspace / "report.html"
    if report.is_file():
        lines.append(f"report: {report}")
    search = results.triton.search if results.triton else None
    if search is not None and search.chosen is not None:
        gain = f"{search.gain:.2f}× the default configuration's throughput" if search.gain is not None else \
            "the default configuration failed"
        lines.append(f"serving configuration: {search.chosen} of {len(search.trials)} tried ({search.mode}), {gain}"
                     + (f"; {search.note}" if search.note else ""))
    lines.append(f"serve it: {serve_command(results, workspace)}")
    return lines


def speedup_line(results: RunResults, profile: list[ProfileEntry]) -> str:
    assert results.selection is not None  # next_steps asks only with a best, which comes with a selection
    objective, batch = results.selection.objective, results.selection.batch_size
    ours, source = figure(profile, objective, batch), figure(results.source_profile, objective, batch)
    at = f" at batch {batch}" if batch is not None else ""
    if ours is None or source is None:
        return f"speedup: not measured (the source model as it is was not timed{at})"
    text = "{:,.0f}/s" if objective == "throughput" else "{:.3f} ms p50"
    return (f"speedup: {gain(ours, source, objective):.2f}× the source model as it is ({objective}{at}: "
            f"{text.format(ours)} against {text.format(source)})")


def serve_command(results: RunResults, workspace: Path) -> str:
    """`nav-orch serve` for this workspace. A run without Docker serves from the tritonserver its Triton
    stage served with (in the Python its models ran in), or else with PyTriton from its runners' Python."""
    command = ["nav-orch", "serve", str(workspace)]
    local = next((image for image in results.environment.images if image.tag == "local"), None)
    triton = results.triton
    if triton is not None and triton.local_python is not None and not triton.error:
        command += ["--executor", "local", "--python", triton.local_python,
                    "--tritonserver", triton.image.removeprefix(LOCAL_SERVER_PREFIX)]
    elif local is not None:  # the local executor's record: its id is the runners' Python
        command += ["--server", "pytriton", "--executor", "local", "--python", local.id]
    return shlex.join(command)
