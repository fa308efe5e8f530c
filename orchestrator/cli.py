"""The `nav-orch` command line."""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any, Optional, TypeVar, cast, get_args

import docker
import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from orchestrator import api, cli_text
from orchestrator.cli_text import IMAGES_PANEL, MODEL_PANEL, OUTPUT_PANEL, RUNNERS_PANEL, SEARCH_PANEL, TRITON_PANEL
from orchestrator.config import (
    Accuracy,
    Budget,
    OptimizeConfig,
    Tolerances,
    TritonSettings,
    default_of,
    read_requirements,
)
from orchestrator.containers import cleanup, derived_images, engine, image_builds, images
from orchestrator.containers.gpus import host_gpus, resolve_gpus, select_gpus
from orchestrator.errors import BadInput, EnvironmentProblem, ExitCode, NavOrchError
from orchestrator.model_ref import parse_function, parse_model
from orchestrator.progress import (
    BuildOutput,
    LiveReporter,
    ProgressMode,
    Reporter,
    make_reporter,
    print_summary,
    say,
    stderr_console,
    widen,
)
from orchestrator.results import RunResults
from orchestrator.samples import parse_input_spec
from orchestrator.signals import StopOnSignals, exit_code

# Rich markup in help texts, whichever typer's default: text in brackets ([[model]]) is escaped.
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]})
images_app = typer.Typer(no_args_is_help=True, help="Build the runner images.")
app.add_typer(images_app, name="images")

T = TypeVar("T")


def show_version(wanted: bool) -> None:
    if wanted:
        typer.echo(cli_text.version_text(images.bake_release()))
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", metavar="", is_eager=True, callback=show_version,
                                 help="Print nav-orch's version, the images' NGC release and the runner protocol."),
) -> None:
    """Find the fastest correct deployment of a trained model."""


def guarded(action: Callable[[], T]) -> T:
    """Run a command body; known failures become one line on stderr and their exit code. Ctrl-C,
    SIGTERM and SIGHUP stop it cleanly (orchestrator/signals.py)."""
    try:
        with StopOnSignals():
            return action()
    except NavOrchError as error:
        typer.echo(f"nav-orch: {error}", err=True)
        raise typer.Exit(error.exit_code) from None
    except ValidationError as error:
        typer.echo(f"nav-orch: {cli_text.validation_message(error)}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    except OSError as error:  # a path the checks before could not foresee (a full disk, a folder's rights)
        typer.echo(f"nav-orch: {os_error_line(error)}", err=True)
        raise typer.Exit(ExitCode.ENVIRONMENT) from None
    except KeyboardInterrupt as interrupt:
        typer.echo(f"nav-orch: interrupted ({interrupt}); containers removed, finished results kept"
                   if str(interrupt) else "nav-orch: interrupted; containers removed, finished results kept", err=True)
        raise typer.Exit(exit_code(interrupt)) from None


def os_error_line(error: OSError) -> str:
    what = error.strerror or str(error) or type(error).__name__
    return f"{error.filename}: {what}" if error.filename else what


def writable_folder(path: Path, option: str) -> Path:
    """The folder an option names, made where missing; BadInput where it cannot be made or written."""
    if path.exists() and not path.is_dir():
        raise BadInput(f"{option} {path}: a file, not a folder; name a folder (made if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # rights, a read-only mount: only a write tells
            pass
    except OSError as error:
        raise BadInput(f"{option} {path}: cannot be written ({os_error_line(error)}); name a folder you may "
                       "write") from None
    return path


def split_list(text: Optional[str]) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def option_default(model: type[BaseModel], name: str) -> Any:
    """The default of an option that sets a config field: the field's own (config.py holds the
    defaults), written as the option takes it: a list as comma-separated text, a choice by its value."""
    value = default_of(model, name)
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return value.value if isinstance(value, Enum) else value


def parse_tolerances(atol: list[str], rtol: list[str]) -> Tolerances:
    """Each of --atol/--rtol is a global VALUE or NAME=VALUE for one output."""
    values: dict[str, dict] = {"atol": {}, "rtol": {}}
    globals_: dict[str, Optional[float]] = {"atol": None, "rtol": None}
    for option, items in (("atol", atol), ("rtol", rtol)):
        for item in items:
            name, sep, value = item.rpartition("=")
            try:
                number = float(value)
            except ValueError:
                raise BadInput(f"--{option} {item!r}: expected a number or OUTPUT=NUMBER") from None
            if sep:
                values[option][name] = number
            else:
                globals_[option] = number
    return Tolerances(atol=globals_["atol"], rtol=globals_["rtol"],
                      output_atol=values["atol"], output_rtol=values["rtol"])


BUDGET_KEYS = {"cosine": "min_cosine", "top1": "min_top1", "max_abs": "max_abs"}


def parse_accuracy(items: list[str]) -> Accuracy:
    """Each --accuracy is [OUTPUT=]KEY:VALUE,... with keys cosine, top1 and max_abs (`none` turns
    top1 or max_abs off); without OUTPUT it sets every output's budget, which an output's own
    items then change. Values are checked by the config model, as for API callers."""
    default: dict[str, Optional[float]] = {}
    outputs: dict[str, dict[str, Optional[float]]] = {}
    for item in sorted(items, key=lambda text: "=" in text.partition(":")[0]):  # every-output items first
        name, sep, pairs = item.rpartition("=") if "=" in item.partition(":")[0] else ("", "", item)
        fields = outputs.setdefault(name, dict(default)) if sep else default
        for pair in split_list(pairs):
            key, _, value = pair.partition(":")
            if key not in BUDGET_KEYS:
                raise BadInput(f"--accuracy {item!r}: unknown key {key!r}; use cosine, top1 or max_abs, as in "
                               "--accuracy logits=cosine:0.999,top1:0.99")
            try:
                fields[BUDGET_KEYS[key]] = None if value == "none" and key != "cosine" else float(value)
            except ValueError:
                raise BadInput(f"--accuracy {item!r}: {key} needs a number{'' if key == 'cosine' else ' or none'}, "
                               f"not {value!r}") from None
    return Accuracy(default=Budget(**default), outputs={name: Budget(**fields) for name, fields in outputs.items()})


def requirement_lines(files: list[Path]) -> list[str]:
    """The lines of every --requirements file, each checked (orchestrator/config.py read_requirements)."""
    return [line for path in files for line in read_requirements(path)]


def parse_batch_sizes(text: str) -> list[int]:
    try:
        return [int(size) for size in split_list(text)]
    except ValueError:
        raise BadInput(f"--batch-sizes {text!r}: expected integers like 1,8,64") from None


def run_reported(call: Callable[[Reporter], T], progress: str, console: Console) -> T:
    """Run an API call with the progress reporter `--progress` asks for."""
    if progress not in get_args(ProgressMode):
        raise BadInput(f"--progress {progress!r}: use auto, plain or quiet")
    reporter = make_reporter(cast(ProgressMode, progress), console)
    if isinstance(reporter, LiveReporter):
        with reporter:
            return call(reporter)
    return call(reporter)


def finish(results: RunResults, workspace: Path, json_output: bool, progress: str, console: Console,
           next_steps: bool = False) -> int:
    """results.json on stdout with --json, the summary table (on stderr with --json: stdout stays
    JSON), with `next_steps` what to do with the best variant, and the exit code."""
    if json_output:
        sys.stdout.write(results.model_dump_json(indent=2) + "\n")
    if progress != "quiet" or not json_output:
        shown = console if json_output else Console()
        print_summary(results, shown, str(workspace))
        for line in cli_text.next_steps(results, workspace) if next_steps else []:
            say(shown, line)
    return ExitCode.OK if results.best else ExitCode.NO_VARIANT


@app.command(epilog=cli_text.OPTIMIZE_EPILOG)
def optimize(
    model: str = typer.Argument(..., metavar="MODEL", help="FILE.py:FACTORY, a TorchScript file (.pt/.ts), an "
                                "ExportedProgram (.pt2), an ONNX file (.onnx), a Keras file (.keras) or a SavedModel "
                                "folder."),
    framework: Optional[str] = typer.Option(None, metavar="NAME", rich_help_panel=MODEL_PANEL,
                                            help="torch, tensorflow, jax or onnx: whose runner runs the model; "
                                            "inferred from the file or the factory's imports where possible "
                                            "(`profile`: torch unless given; numpy is in every image)."),
    model_arg: list[str] = typer.Option([], "--model-arg", metavar="KEY=VALUE", rich_help_panel=MODEL_PANEL,
                                        help="Passed to the factory (repeatable)."),
    samples: Optional[Path] = typer.Option(option_default(OptimizeConfig, "samples"), metavar="FILE.npz",
                                           rich_help_panel=MODEL_PANEL,
                                           help="One array per model input, batch on axis 0 (np.savez)."),
    input_spec: list[str] = typer.Option([], "--input", metavar="NAME:SHAPE:DTYPE", rich_help_panel=MODEL_PANEL,
                                         help="Seeded random samples instead, e.g. x:8,64:float32 (repeatable)."),
    seed: int = typer.Option(option_default(OptimizeConfig, "seed"), metavar="N", rich_help_panel=MODEL_PANEL,
                             help="Seed of the random samples."),
    formats: Optional[str] = typer.Option(option_default(OptimizeConfig, "formats"), metavar="FORMATS",
                                          rich_help_panel=SEARCH_PANEL, help="Comma-separated formats; default: all "
                                          "of the framework's that the device runs."),
    precisions: Optional[str] = typer.Option(option_default(OptimizeConfig, "precisions"), metavar="PRECISIONS",
                                             rich_help_panel=SEARCH_PANEL, help="Comma-separated fp32,fp16,bf16 "
                                             "(int8, fp8: quantized); default: fp32 on CPUs, all three on GPUs."),
    memory_formats: Optional[str] = typer.Option(option_default(OptimizeConfig, "memory_formats"),
                                                 metavar="LAYOUTS", rich_help_panel=SEARCH_PANEL,
                                                 help="Comma-separated contiguous,channels_last for the torch "
                                                 "formats; default: contiguous on CPUs, both on GPUs."),
    exhaustive: bool = typer.Option(option_default(OptimizeConfig, "exhaustive"), "--exhaustive", metavar="",
                                    rich_help_panel=SEARCH_PANEL,
                                    help="On GPUs, build torch.compile variants in every precision, not only the "
                                    "fast half precisions and fp32 where it wins; time every profile point in "
                                    "full, even one a verified rival beat."),
    batch_sizes: str = typer.Option(option_default(OptimizeConfig, "batch_sizes"), metavar="N,N",
                                    rich_help_panel=SEARCH_PANEL, help="Comma-separated batch sizes to profile."),
    atol: list[str] = typer.Option([], metavar="VALUE", rich_help_panel=SEARCH_PANEL,
                                   help="Absolute tolerance: VALUE, or OUTPUT=VALUE (repeatable)."),
    rtol: list[str] = typer.Option([], metavar="VALUE", rich_help_panel=SEARCH_PANEL,
                                   help="Relative tolerance: VALUE, or OUTPUT=VALUE (repeatable)."),
    accuracy: list[str] = typer.Option([], metavar="BUDGET", rich_help_panel=SEARCH_PANEL,
                                       help=cli_text.ACCURACY_HELP),
    calibration: Optional[Path] = typer.Option(option_default(OptimizeConfig, "calibration"), metavar="FILE.npz",
                                               rich_help_panel=SEARCH_PANEL, help="Inputs to calibrate static "
                                               "int8/fp8 quantization on (default: the samples)."),
    objective: str = typer.Option(option_default(OptimizeConfig, "objective"), metavar="OBJECTIVE",
                                  rich_help_panel=SEARCH_PANEL, help="throughput or latency."),
    latency_budget_ms: Optional[float] = typer.Option(option_default(OptimizeConfig, "latency_budget_ms"),
                                                      metavar="MS", rich_help_panel=SEARCH_PANEL,
                                                      help="Only consider points with p99 under this."),
    # CLI-only `auto`, not the config's cpu and none: a command resolves it into the release and GPUs of the
    # host it runs on (images.resolve_release, resolve_gpus); an API caller's config says what it runs on.
    images_release: str = typer.Option("auto", "--images", metavar="auto|cpu|YY.MM", rich_help_panel=IMAGES_PANEL,
                                       help="cpu, or the NGC release of the CUDA images; auto: the bake file's "
                                       "release on a GPU host (unless --gpus none), else cpu."),
    gpus: str = typer.Option("auto", metavar="GPUS", rich_help_panel=IMAGES_PANEL,
                             help="Docker's syntax (all, N, device=0,2, count=N, capabilities=..., driver=...) or "
                             "none; auto: all if present."),
    # CLI-only: the cores of the host the command runs on; a config's default is 1 (OptimizeConfig.jobs says why).
    jobs: int = typer.Option(os.cpu_count() or 1, metavar="N", rich_help_panel=RUNNERS_PANEL,
                             help="Variants built in parallel."),
    gpu_sessions: int = typer.Option(option_default(OptimizeConfig, "gpu_sessions"), metavar="N",
                                     rich_help_panel=IMAGES_PANEL, help="Runner sessions sharing one GPU: they "
                                     "compile side by side and take turns to profile; 1: one session per GPU at a "
                                     "time (less GPU memory)."),
    timeout: float = typer.Option(option_default(OptimizeConfig, "job_timeout_s"), metavar="SECONDS",
                                  rich_help_panel=RUNNERS_PANEL, help="Seconds each job may take."),
    memory: Optional[str] = typer.Option(option_default(OptimizeConfig, "memory"), metavar="auto|none|SIZE",
                                         rich_help_panel=RUNNERS_PANEL,
                                         help="Memory limit of each runner container: auto (the host's memory, less a "
                                         "reserve, shared by the runners at once), none, or a size such as 8g."),
    pids: int = typer.Option(option_default(OptimizeConfig, "pids"), metavar="N", rich_help_panel=RUNNERS_PANEL,
                             help="Process limit of each runner container."),
    executor: str = typer.Option(option_default(OptimizeConfig, "executor"), metavar="docker|local",
                                 rich_help_panel=RUNNERS_PANEL,
                                 help="docker, or local: runners as subprocesses of --python."),
    python: Optional[str] = typer.Option(option_default(OptimizeConfig, "python"), metavar="PYTHON",
                                         rich_help_panel=RUNNERS_PANEL,
                                         help="With --executor local: the Python holding the frameworks."),
    requirements: list[Path] = typer.Option([], "--requirements", metavar="FILE", rich_help_panel=IMAGES_PANEL,
                                            help="A requirements file (pip's format) of the model's own libraries "
                                            "(transformers, timm, ...): installed into a runner image derived from "
                                            "the toolchain's, built once (repeatable)."),
    find_links: Optional[Path] = typer.Option(option_default(OptimizeConfig, "find_links"), metavar="DIR",
                                              rich_help_panel=IMAGES_PANEL,
                                              help="A folder of wheels for --requirements (hosts without an index)."),
    no_triton: bool = typer.Option(False, "--no-triton", metavar="", rich_help_panel=TRITON_PANEL,
                                   help="Skip the Triton stage (serving the best variant from Triton Inference "
                                   "Server and measuring it with perf_analyzer)."),
    triton_all: bool = typer.Option(option_default(TritonSettings, "all_variants"), "--triton-all", metavar="",
                                    rich_help_panel=TRITON_PANEL, help="Serve and measure every verified variant."),
    triton_concurrency: str = typer.Option(option_default(TritonSettings, "concurrency"), metavar="N,N",
                                           rich_help_panel=TRITON_PANEL,
                                           help="Concurrency sweep of perf_analyzer (comma-separated)."),
    triton_search: str = typer.Option(option_default(TritonSettings, "search"), metavar="quick|full|off",
                                      rich_help_panel=TRITON_PANEL,
                                      help="Search the best variant's serving configuration (instances, the "
                                      "dynamic batcher's queue delay and preferred size; the largest batch stays "
                                      "--batch-sizes' largest) and deploy the best: quick (a hill climb from the "
                                      "default) or full."),
    triton_search_budget: float = typer.Option(option_default(TritonSettings, "search_budget_s"), metavar="SECONDS",
                                               rich_help_panel=TRITON_PANEL,
                                               help="Time for the search; what it measured by then is kept."),
    tritonserver: Optional[Path] = typer.Option(None, metavar="PATH", rich_help_panel=TRITON_PANEL,
                                                help="With --executor local: the tritonserver that serves the "
                                                "best variant (default: nvidia-pytriton's in --python, else "
                                                "one on PATH), measured with tritonclient over gRPC."),
    triton_python: Optional[str] = typer.Option(None, metavar="PYTHON", rich_help_panel=TRITON_PANEL,
                                                help="With --executor local: the Python the served model runs in "
                                                "(numpy<2 and the variant's runtime); default: --python."),
    # CLI-only: the config asks API callers to name their workspace; a command gets one without being told.
    workspace: Path = typer.Option(Path("nav-workspace"), metavar="DIR", rich_help_panel=OUTPUT_PANEL,
                                   help="Folder for artifacts, logs, results.json and report.html."),
    force: bool = typer.Option(False, "--force", metavar="", rich_help_panel=OUTPUT_PANEL,
                               help="Redo every job, even those finished earlier in this workspace."),
    json_output: bool = typer.Option(False, "--json", metavar="", rich_help_panel=OUTPUT_PANEL,
                                     help="Print results.json on stdout (the summary goes to stderr)."),
    progress: str = typer.Option("auto", metavar="auto|plain|quiet", rich_help_panel=OUTPUT_PANEL,
                                 help="auto: live lines on a terminal; plain: a line per event; quiet: none."),
) -> None:
    """Export, verify and profile MODEL in every format, and pick the best variant.

    The table ends with the best variant's speedup, its artifact, report.html and how to serve it."""
    console = stderr_console()

    def run() -> int:
        ref = parse_model(model, model_arg, framework)
        release = images.resolve_release(images_release, gpus)
        # OptimizeConfig validates the values (formats, precisions, executor, ...), as for the API.
        config = OptimizeConfig(
            model=ref, samples=samples, inputs=[parse_input_spec(s) for s in input_spec], seed=seed,
            formats=split_list(formats) or None, precisions=split_list(precisions) or None,
            memory_formats=split_list(memory_formats) or None, exhaustive=exhaustive,
            batch_sizes=parse_batch_sizes(batch_sizes), tolerances=parse_tolerances(atol, rtol),
            accuracy=parse_accuracy(accuracy), calibration=calibration, objective=objective,
            latency_budget_ms=latency_budget_ms, workspace=workspace, images=release,
            gpus=resolve_gpus(gpus, release), jobs=jobs, gpu_sessions=gpu_sessions, job_timeout_s=timeout,
            memory=memory, pids=pids,
            triton=triton_settings(no_triton, triton_all, triton_concurrency, tritonserver, triton_python,
                                   triton_search, triton_search_budget),
            executor=executor,
            python=python,
            requirements=requirement_lines(requirements), find_links=find_links,
        )
        writable_folder(config.workspace, "--workspace")
        results = run_reported(lambda reporter: api.optimize(config, reporter, force), progress, console)
        return finish(results, config.workspace, json_output, progress, console, next_steps=True)

    raise typer.Exit(guarded(run))


# `profile` takes optimize's options of the same names: declared once, on optimize.
_OPTIMIZE_OPTIONS = {name: parameter.default for name, parameter in inspect.signature(optimize).parameters.items()}


@app.command()
def profile(
    function: str = typer.Argument(..., metavar="FILE.py:FUNCTION", help="Any Python callable, called with the "
                                   "samples as numpy arrays (positional, in the samples' order)."),
    framework: Optional[str] = _OPTIMIZE_OPTIONS["framework"],
    samples: Optional[Path] = _OPTIMIZE_OPTIONS["samples"],
    input_spec: list[str] = _OPTIMIZE_OPTIONS["input_spec"],
    seed: int = _OPTIMIZE_OPTIONS["seed"],
    batch_sizes: str = _OPTIMIZE_OPTIONS["batch_sizes"],
    images_release: str = _OPTIMIZE_OPTIONS["images_release"],
    gpus: str = _OPTIMIZE_OPTIONS["gpus"],
    timeout: float = _OPTIMIZE_OPTIONS["timeout"],
    memory: Optional[str] = _OPTIMIZE_OPTIONS["memory"],
    pids: int = _OPTIMIZE_OPTIONS["pids"],
    executor: str = _OPTIMIZE_OPTIONS["executor"],
    python: Optional[str] = _OPTIMIZE_OPTIONS["python"],
    requirements: list[Path] = _OPTIMIZE_OPTIONS["requirements"],
    find_links: Optional[Path] = _OPTIMIZE_OPTIONS["find_links"],
    workspace: Path = _OPTIMIZE_OPTIONS["workspace"],
    json_output: bool = _OPTIMIZE_OPTIONS["json_output"],
    progress: str = _OPTIMIZE_OPTIONS["progress"],
) -> None:
    """Profile any Python function on the samples (no export, no verification): results.json gets
    the variant `python-function` with the same profile fields as `optimize`."""
    console = stderr_console()

    def run() -> int:
        ref = parse_function(function, framework)
        release = images.resolve_release(images_release, gpus)
        config = OptimizeConfig(
            model=ref, samples=samples, inputs=[parse_input_spec(s) for s in input_spec], seed=seed,
            batch_sizes=parse_batch_sizes(batch_sizes), workspace=workspace, images=release,
            gpus=resolve_gpus(gpus, release), job_timeout_s=timeout, memory=memory, pids=pids,
            executor=executor, python=python, requirements=requirement_lines(requirements), find_links=find_links,
        )
        writable_folder(config.workspace, "--workspace")
        results = run_reported(lambda reporter: api.profile(config, reporter), progress, console)
        return finish(results, config.workspace, json_output, progress, console)

    raise typer.Exit(guarded(run))


@images_app.command("build")
def images_build(
    flavor: str = typer.Option("cpu", metavar="cpu|cuda", help="The bake group to build."),
    target: list[str] = typer.Option([], metavar="TARGET", help="Build only these bake targets (repeatable)."),
    set_var: list[str] = typer.Option([], "--set", metavar="VAR=VALUE",
                                      help="A docker-bake.hcl variable, e.g. NGC_RELEASE=25.10 (repeatable)."),
    pip_config: Optional[Path] = typer.Option(None, metavar="FILE",
                                              help="pip configuration for builds; default: the host's."),
    ca_bundle: Optional[Path] = typer.Option(None, metavar="FILE",
                                             help="CA bundle pip trusts in builds; default: the host's."),
    rebuild: bool = typer.Option(False, metavar="",
                                 help="Build every target anew, without cache, even when up to date."),
    progress: str = typer.Option("auto", metavar="auto|plain", help="auto: a line per image, the builder's output "
                                 "in the log file; plain: the builder's output as it comes."),
) -> None:
    """Build the runner images from docker-bake.hcl (buildx bake, or the Docker API without buildx)."""

    def run() -> None:
        overrides = dict(item.split("=", 1) for item in set_var if "=" in item)
        if len(overrides) != len(set_var):
            raise BadInput("--set takes VAR=VALUE")
        client = engine.connect()
        with build_output("images-build", progress) as shown:
            built = image_builds.build_images(client, images.BAKE_FILE, target or flavor, overrides, pip_config,
                                              ca_bundle, shown.note, rebuild=rebuild, on_output=shown.output)
        for tag in built:
            typer.echo(tag)

    guarded(run)


@contextlib.contextmanager
def build_output(name: str, progress: str) -> Iterator[BuildOutput]:
    """The screen and the log file of an image build or bootstrap (the log: in nav-orch's cache)."""
    if progress not in ("auto", "plain"):
        raise BadInput(f"--progress {progress}: choose auto or plain")
    logs = image_builds.user_cache() / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EnvironmentProblem(f"cannot make {logs} ({error.strerror}): set XDG_CACHE_HOME to a folder you may "
                                 "write") from None
    path = logs / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with path.open("w") as log:
        typer.echo(f"nav-orch: the full log goes to {path}", err=True)
        yield BuildOutput(log, sys.stderr, live=sys.stderr.isatty(), plain=progress == "plain")


@images_app.command("list")
def images_list() -> None:
    """The runner images on this host, and those derived from them with --requirements."""

    def run() -> None:
        client = engine.connect()
        table = Table(box=None, pad_edge=False)
        for column in ("image", "size", "built on", "requirements"):
            table.add_column(column)
        for image in engine.labelled_images(client, images.FLAVOR_LABEL):
            base = image.labels.get(derived_images.BASE_LABEL)
            built_on = "" if base is None else base + (" (rebuilt since: stale)"
                                                        if derived_images.stale(client, image) else "")
            requirements = json.loads(image.labels.get(derived_images.REQUIREMENTS_LABEL, "[]"))
            table.add_row(image.tag, f"{image.size / 1e9:.2f} GB", built_on, ", ".join(requirements))
        widen(Console()).print(table)

    guarded(run)


@images_app.command("bootstrap")
def images_bootstrap(
    tag: str = typer.Option(image_builds.DEBIAN_BASE, metavar="TAG", help="Tag of the Debian base image to make."),
    mirror: Optional[str] = typer.Option(None, metavar="URL",
                                         help="Debian mirror; default: the one the host's apt uses."),
    if_missing: bool = typer.Option(False, metavar="", help="Do nothing when the image exists already."),
    progress: str = typer.Option("auto", metavar="auto|plain", help="auto: the phases, debootstrap's output in the "
                                 "log file; plain: debootstrap's output as it comes."),
) -> None:
    """Make the Debian base image locally with debootstrap (no registry needed)."""

    def run() -> None:
        client = engine.connect()
        existing = engine.inspect_image(client, tag)
        if if_missing and existing is not None:
            typer.echo(f"{tag} {existing.id}")
            return
        with build_output("images-bootstrap", progress) as shown:
            image_id = image_builds.bootstrap_base(client, tag, mirror, shown.note, on_output=shown.output)
        typer.echo(f"{tag} {image_id}")

    guarded(run)


def triton_settings(no_triton: bool, triton_all: bool, concurrency: str, tritonserver: Optional[Path] = None,
                    python: Optional[str] = None, search: str = default_of(TritonSettings, "search"),
                    search_budget_s: float = default_of(TritonSettings, "search_budget_s")) -> TritonSettings:
    try:
        values = [int(value) for value in split_list(concurrency)]
    except ValueError:
        raise BadInput(f"--triton-concurrency {concurrency!r}: expected integers like 1,2,4") from None
    if not values or min(values) < 1:
        raise BadInput(f"--triton-concurrency {concurrency!r}: expected positive integers like 1,2,4")
    # --no-triton only turns the stage off: without it, the settings' own default stands.
    off: dict[str, Any] = {"enabled": False} if no_triton else {}
    return TritonSettings(all_variants=triton_all, concurrency=values, tritonserver=tritonserver, python=python,
                          search=search, search_budget_s=search_budget_s, **off)


@app.command()
def serve(
    workspace: Path = typer.Argument(..., metavar="WORKSPACE", help="A workspace that `nav-orch optimize` wrote."),
    variant: Optional[str] = typer.Option(None, metavar="NAME", help="The variant to serve; default: the best."),
    server: str = typer.Option("triton", metavar="triton|pytriton",
                               help="Triton Inference Server, or PyTriton."),
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="The address the server binds; another than the "
                             "loopback serves beyond this machine (with a warning)."),
    http_port: int = typer.Option(0, metavar="PORT", help="HTTP port (1-65535); default: a free one."),
    grpc_port: int = typer.Option(0, metavar="PORT", help="gRPC port (1-65535); default: a free one."),
    gpus: str = typer.Option("auto", metavar="GPUS", help="Docker's syntax: all, N, device=0,2 or none; auto: all "
                             "if present (CUDA images only)."),
    executor: str = typer.Option("docker", metavar="docker|local",
                                 help="docker, or local: the server as a process of this machine, without Docker."),
    python: Optional[str] = typer.Option(None, metavar="PYTHON", help="With --executor local: the Python holding "
                                         "nvidia-pytriton, numpy<2 and the variant's framework; default: this one."),
    tritonserver: Optional[Path] = typer.Option(None, metavar="PATH", help="With --executor local and --server "
                                                "triton: the tritonserver to run (default: nvidia-pytriton's in "
                                                "--python, else one on PATH)."),
) -> None:
    """Serve a variant from Triton Inference Server or PyTriton until Ctrl-C; prints the endpoints and a request."""
    from orchestrator.triton.serve import serve as serve_workspace

    def run() -> None:
        serve_workspace(workspace, variant, http_port, grpc_port, gpus, typer.echo,
                        lambda line: typer.echo(f"nav-orch: {line}", err=True), server_kind=server, host=host,
                        executor=executor, python=python, tritonserver=tritonserver)

    guarded(run)


@app.command()
def report(
    workspaces: list[Path] = typer.Argument(..., metavar="WORKSPACE",
                                            help="One workspace: rebuild its report.html; several: compare them."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", help="Where to write it; default: "
                                          "WORKSPACE/report.html for one workspace, compare.html for several."),
) -> None:
    """Write the HTML report of a run, or of several runs side by side (one self-contained file)."""
    from orchestrator.report.html import write_comparison, write_report
    from orchestrator.run.workspace import Workspace

    def run() -> None:
        target = output or (Workspace(workspaces[0]).report_path if len(workspaces) == 1 else Path("compare.html"))
        if target.is_dir():
            raise BadInput(f"-o/--output {target}: a folder; name the file to write, as in {target / 'report.html'}")
        found = [(str(path), Workspace(path).read_results()) for path in workspaces]
        try:
            path = write_report(found[0][1], target) if len(found) == 1 else write_comparison(found, target)
        except OSError as error:
            raise BadInput(f"{'-o/--output ' if output else ''}{target}: cannot be written "
                           f"({error.strerror or error}); name a file in a folder you may write") from None
        typer.echo(f"report: {path}")

    guarded(run)


@app.command()
def zoo(
    zoo_file: Path = typer.Argument(..., metavar="FILE.toml", help=cli_text.ZOO_FILE_HELP),
    workspace: Path = typer.Option(Path("nav-zoo"), metavar="DIR", help="One folder per model inside it, with "
                                   "zoo.json and index.html."),
    ray: Optional[str] = typer.Option(None, metavar="ADDRESS", help="A Ray cluster's address (or auto): one Ray "
                                      "task per model; default: this host."),
    results_dir: Optional[Path] = typer.Option(None, metavar="DIR", help="With --ray: a folder every node shares; "
                                               "the runs write there, and the model files are read where they are."),
    build_images: bool = typer.Option(False, metavar="",
                                      help="With --ray: build missing images on each node first."),
    parallel: int = typer.Option(1, min=1, metavar="N", help="This host: models run at a time besides those on GPUs "
                                 "(each optimize uses every core and profiles alone, so 1 keeps figures clean)."),
    cpus_per_model: float = typer.Option(1.0, metavar="N", help="With --ray: the CPUs a model's task asks for."),
    gpus: str = typer.Option("auto", metavar="GPUS", help="This host: the GPUs the zoo spreads its GPU models over, "
                             "in Docker's syntax (all, N, device=0,2); auto: every GPU it has."),
) -> None:
    """Optimize every model of a zoo file, on this host or over a Ray cluster, each into its own workspace."""
    from orchestrator.zoo import run_zoo
    from orchestrator.zoo.outcome import exit_code, summary_table

    console = stderr_console()

    def run() -> int:
        writable_folder(workspace, "--workspace")
        results = run_zoo(zoo_file, workspace, lambda line: say(console, f"zoo: {line}"), ray, results_dir,
                          build_images, parallel, cpus_per_model,
                          None if gpus == "auto" else select_gpus(gpus, host_gpus()))
        widen(Console()).print(summary_table(results))
        say(console, f"zoo: {workspace / 'zoo.json'}, {workspace / 'index.html'}")
        return exit_code(results)

    raise typer.Exit(guarded(run))


@app.command("run-config", hidden=True)
def run_config(
    config_file: Path = typer.Argument(..., metavar="FILE", help="An OptimizeConfig as JSON (a zoo writes one per "
                                       "model)."),
    progress: str = typer.Option("plain", metavar="auto|plain|quiet", help="auto, plain or quiet."),
) -> None:
    """Optimize from a config file: a zoo's run of one model (orchestrator/zoo/task.py)."""
    console = stderr_console()

    def run() -> int:
        config = OptimizeConfig.model_validate_json(config_file.read_text())
        results = run_reported(lambda reporter: api.optimize(config, reporter), progress, console)
        return finish(results, config.workspace, False, progress, console)

    raise typer.Exit(guarded(run))


@app.command()
def doctor() -> None:
    """Check nav-orch's image matrix, Docker, the images, GPUs, the NVIDIA container runtime and the
    driver; say what to do."""
    from orchestrator.containers.doctor import check_bake_file, diagnose

    def run() -> int:
        matrix, bake = check_bake_file(images.BAKE_FILE)
        findings = [matrix, *diagnose(bake, engine.connect, host_gpus, image_builds.DEBIAN_BASE)]
        for finding in findings:
            typer.echo(f"{finding.level:<5} {finding.check}: {finding.detail}")
            if finding.fix and finding.level != "ok":
                typer.echo(f"      fix: {finding.fix}")
        failed = sum(finding.level == "fail" for finding in findings)
        typer.echo(f"{failed} problem(s)" if failed else "ready")
        return ExitCode.ENVIRONMENT if failed else ExitCode.OK

    raise typer.Exit(guarded(run))


@app.command()
def clean(
    drop_images: bool = typer.Option(False, "--images", metavar="", help="Also remove the images derived with "
                                     "--requirements that no run can use again: their runner image was rebuilt or "
                                     "removed."),
    every: bool = typer.Option(False, "--all", metavar="", help="Remove every nav-orch container, those of runs "
                               "still going and of other hosts sharing the daemon included (asks first)."),
    dry_run: bool = typer.Option(False, "--dry-run", metavar="", help="List what would be removed and what kept; "
                                 "remove nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", metavar="", help="Do not ask before --all (needed where there "
                             "is no terminal to ask on)."),
) -> None:
    """Remove the containers that killed runs left behind (found by label; a run also does this as it starts),
    and list those of runs still going, which stay."""

    def run() -> None:
        # Asked on a terminal only: a script's `clean --all` without --yes is refused, never left waiting.
        confirm: Optional[Callable[[str], bool]] = ((lambda question: True) if yes
                                                    else typer.confirm if sys.stdin.isatty() else None)
        cleanup.require_confirmation(every, dry_run, confirm)  # bad input before the environment
        client = engine.connect()
        cleanup.clean(cleanup.DockerContainers(client), every, dry_run, confirm, typer.echo)
        if drop_images:
            clean_images(client, dry_run)

    guarded(run)


def clean_images(client: docker.DockerClient, dry_run: bool) -> None:
    """`clean --images`: the derived images no run can use again."""
    stale = derived_images.stale_images(client)
    if dry_run:
        for image in stale:
            typer.echo(f"would remove image {image.tag}")
        return
    gone = [image.tag for image in stale if engine.remove_image(client, image.tag)]
    for tag in gone:
        typer.echo(f"removed image {tag}")
    typer.echo(f"removed {len(gone)} derived image(s); kept {len(derived_images.derived_images(client))}")


if __name__ == "__main__":
    app()
