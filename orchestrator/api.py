"""The Python API: `optimize(config)` runs the whole pipeline and returns its results."""
from __future__ import annotations

import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import docker
import numpy as np

from orchestrator import __version__
from orchestrator.config import ExecutorName, OptimizeConfig
from orchestrator.containers import engine
from orchestrator.containers.derived_images import ensure_derived_image
from orchestrator.containers.gpus import host_gpus, select_gpus
from orchestrator.containers.image_builds import user_cache
from orchestrator.containers.images import image_for
from orchestrator.errors import BadInput, DiskFull, EnvironmentProblem, NavOrchError, is_disk_full
from orchestrator.model_ref import missing_module
from orchestrator.progress import QuietReporter, Reporter
from orchestrator.results import Environment, ImageRecord, RunResults
from orchestrator.run import cache, memory_limit
from orchestrator.run.executor import DockerExecutor, Executor, LocalExecutor, probe_python
from orchestrator.run.pipeline import Pipeline, ReferenceFailed
from orchestrator.run.planning import REFERENCE
from orchestrator.run.recording import Recorder
from orchestrator.run.workspace import Workspace
from orchestrator.samples import load_calibration, load_samples, random_samples, write_samples
from orchestrator.triton.local import local_triton_for
from orchestrator.triton.stage import StageTools, docker_tools, local_tools, run_triton_stage


def check_readable(path: Path) -> None:
    """Runners run as the calling user: what that user cannot read, they cannot either."""
    unreadable = [item for item in [path, *(sorted(path.rglob("*")) if path.is_dir() else [])]
                  if not os.access(item, os.R_OK | (os.X_OK if item.is_dir() else 0))]
    if unreadable:
        raise BadInput(f"cannot read {unreadable[0]}: nav-orch runs the model as you, and you cannot read it")


def prepare_samples(config: OptimizeConfig) -> dict[str, np.ndarray]:
    if config.samples is not None:
        return load_samples(config.samples, batched=config.dynamic_axes is None)
    if config.inputs:
        return random_samples(config.inputs, config.seed)
    raise BadInput("no samples: pass --samples FILE.npz or --input NAME:SHAPE:DTYPE for each model input")


def with_requirements(client: docker.DockerClient, image: ImageRecord, config: OptimizeConfig, run_id: str,
                      reporter: Reporter) -> ImageRecord:
    """The runner image plus the model's own libraries (a derived image, built once)."""
    logs = user_cache() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"derived-{time.strftime('%Y%m%d-%H%M%S')}-{run_id}.log"
    base = engine.ImageInfo(tag=image.tag, id=image.id, labels=image.labels)
    try:
        with log_path.open("w") as log:
            derived = ensure_derived_image(client, image.tag, base, config.requirements, config.find_links, run_id,
                                           lambda line: reporter.note(f"requirements: {line}"),
                                           lambda line: print(line, file=log, flush=True))
    except NavOrchError as error:
        if log_path.stat().st_size == 0:  # refused before any build
            log_path.unlink()
            raise
        raise type(error)(f"{error} (log: {log_path})") from None
    if derived.built_s is None:
        log_path.unlink(missing_ok=True)
        reporter.note(f"requirements: {derived.tag} (built before) has {', '.join(config.requirements)}")
    else:
        reporter.note(f"requirements: built {derived.tag} with {', '.join(config.requirements)} in "
                      f"{derived.built_s:.0f} s (log: {log_path})")
    return ImageRecord(tag=derived.tag, id=derived.info.id, labels=derived.info.labels, base=image.tag,
                       requirements=list(config.requirements))


def write_report(results: RunResults, path: Path, reporter: Reporter) -> None:
    """The run's report.html; a report that cannot be written is noted, never the run's failure."""
    from orchestrator.report.html import write_report as write_html

    try:
        write_html(results, path)
    except Exception as error:  # noqa: BLE001 - the run's results stand whatever the report does
        reporter.note(f"report.html not written: {type(error).__name__}: {error}")


def runner_memory(client: docker.DockerClient, config: OptimizeConfig, gpus: int, reporter: Reporter) -> Optional[int]:
    """Each runner container's memory limit in bytes (None: none), said when it is not the user's own."""
    at_once = memory_limit.runners_at_once(config.jobs, gpus, config.gpu_sessions)
    limit = memory_limit.runner_limit(config.memory, engine.host_memory(client), at_once)
    if limit is None:
        reporter.note("--memory none: runner containers have no memory limit, so a model that takes all of "
                      "the host's memory can take down anything else running on it")
    elif config.memory == memory_limit.AUTO:
        reporter.note(f"each runner may use {memory_limit.describe(limit)} of memory ({at_once} at once; "
                      "--memory sets it)")
    return limit


def triton_stage_tools(client: Optional[docker.DockerClient], config: OptimizeConfig, gpus: list[str],
                       workspace: Workspace, reporter: Reporter) -> Optional[StageTools]:
    """The Triton stage's servers and clients: Docker's, or for the local executor a tritonserver of
    this machine; None, said once, when the local executor has none it can serve with (an error only
    when --tritonserver named one)."""
    if client is not None:
        return docker_tools(client)
    python = config.triton.python or config.python or sys.executable
    try:
        triton, serving = local_triton_for(python, config.triton.tritonserver)
    except EnvironmentProblem as why:
        if config.triton.tritonserver is not None:
            raise
        reporter.note(f"Triton stage skipped: {why}")
        return None
    reporter.note(f"triton: serving with {triton.binary}, measured with tritonclient over gRPC")
    return local_tools(triton, serving, python, gpus, workspace.triton / "backends")


def save_unless_disk_full(save: Callable[[], None], stopping: bool) -> None:
    """Save the results once more; where the run is `stopping` on an error and the disk is full, the
    last whole results.json stays (it is written atomically) and that error is the one reported."""
    try:
        save()
    except OSError as error:
        if not (stopping and is_disk_full(error)):
            raise


def profile(config: OptimizeConfig, reporter: Optional[Reporter] = None) -> RunResults:
    """Profile a Python callable (`config.model.form == "function"`) on the samples: the optimize
    run with one profile-only variant, `python-function`, and no Triton stage (a bare function
    has no model to serve). Its best is that variant when the function ran, else None. The function
    is measured anew every time: there is no reference job to fingerprint it, and measuring is the
    one job there is."""
    if config.model.form != "function":
        raise BadInput(f"profile takes a file.py:function, not a {config.model.form} model (use optimize)")
    config = config.model_copy(update={"triton": config.triton.model_copy(update={"enabled": False})})
    return optimize(config, reporter)


def optimize(config: OptimizeConfig, reporter: Optional[Reporter] = None, force: bool = False) -> RunResults:
    """Export, verify, profile and select; results.json is kept up to date in the workspace.

    Jobs finished earlier in the same workspace under the same content key are reused
    unless `force`. `config.executor` says where runners run (`config.python` for the local
    one). Raises BadInput when the source model cannot run on the samples and EnvironmentProblem
    when Docker or the image is missing; KeyboardInterrupt leaves results marked interrupted.
    """
    reporter = reporter or QuietReporter()
    # The user's inputs are resolved once, here; nothing a runner writes is ever resolved.
    config = config.model_copy(update={"model": config.model.model_copy(update={"path": config.model.path.resolve()})})
    check_readable(config.model.path)
    workspace = Workspace(config.workspace).create()
    arrays = prepare_samples(config)
    calibration: dict[str, np.ndarray] = {}
    if config.calibration is not None:
        given = config.calibration.resolve()
        calibration = load_calibration(given, arrays)
        config = config.model_copy(update={"calibration": given})
    available = host_gpus()
    gpus = select_gpus(config.gpus, available)
    samples = write_samples(arrays, workspace.given_samples)
    tag = image_for(config.model.framework, config.images)
    environment = Environment(nav_orch=__version__, host_python=platform.python_version())
    run_id = uuid.uuid4().hex[:12]
    client = None
    if config.executor is not ExecutorName.local:  # only an explicit local leaves the sandbox
        client = engine.connect()
        environment.docker = engine.engine_version(client)
        removed = engine.remove_abandoned(client)
        if removed:
            reporter.note(f"removed {removed} container(s) that a killed nav-orch run left behind")
        info = engine.inspect_image(client, tag)
        if info is None:
            build = ("--flavor cpu" if config.images == "cpu"
                     else f"--flavor cuda --set NGC_RELEASE={config.images}")
            raise EnvironmentProblem(f"image {tag} is not built: run `nav-orch images build {build}`")
        image = ImageRecord(tag=tag, id=info.id, labels=info.labels)
        if config.requirements:
            image = with_requirements(client, image, config, run_id, reporter)
        environment_id = image.id
        about = ([f"image {image.tag}: {image.base} with {', '.join(image.requirements)}"] if image.base else [])
        limit = runner_memory(client, config, len(gpus), reporter)
        environment.runner_memory = memory_limit.docker_memory(limit)
        runner: Executor = DockerExecutor(workspace, config.job_timeout_s, client, run_id,
                                          limit, config.pids, config.gpus, about)
    else:
        python = config.python or sys.executable
        probe = probe_python(python, config.model.framework)
        if config.requirements:
            reporter.note(f"--requirements installs into the runner images: with --executor local, {python} "
                          "must have them already")
        image = ImageRecord(tag="local", id=python)
        environment_id = f"{python}:{probe.packages}"
        runner = LocalExecutor(workspace, config.job_timeout_s, python)
    environment.images.append(image)
    results = RunResults(model=config.model.title(), environment=environment)
    # The calibration data shapes every statically quantized variant: it keys their jobs as the samples do.
    inputs_key = cache.inputs_key({**arrays, **{f"calibration/{k}": v for k, v in calibration.items()}},
                                  environment_id)
    stage_tools = triton_stage_tools(client, config, gpus, workspace, reporter) if config.triton.enabled else None
    recorder = Recorder(results, image, workspace, reporter, {gpu.index: gpu.uuid for gpu in available})
    pipeline = Pipeline(config, workspace, runner, recorder, inputs_key, gpus, force)
    try:
        reference = pipeline.execute(samples)
        if stage_tools is not None and reference is not None:  # its failures are recorded, never raised
            run_triton_stage(stage_tools, workspace, results, reference.io, run_id, config, gpus, reporter,
                             recorder.save)
        return results
    except ReferenceFailed as error:
        results.state, results.error = "failed", f"the source model failed on the samples: {error}"
        where = image.tag if client is not None else f"the runners' Python ({image.id})"
        missing = missing_module(str(error), config.model.path.parent, where, client is not None)
        if missing is not None:
            results.error = missing
            raise BadInput(missing) from None
        details = "" if "(log:" in str(error) else f" (traceback: {workspace.jobs / REFERENCE / 'runner.log'})"
        raise BadInput(results.error + details) from None
    except KeyboardInterrupt:
        results.state = "interrupted"
        raise
    except OSError as error:
        if not is_disk_full(error):
            raise
        full = DiskFull.at(workspace.root, error)
        results.state, results.error = "failed", str(full)
        raise full from None
    except NavOrchError as error:
        results.state, results.error = "failed", str(error)
        raise
    finally:
        if results.state == "running":
            results.state = "failed"
        save_unless_disk_full(recorder.save, stopping=sys.exc_info()[0] is not None)
        runner.close()
        if client is not None:
            engine.remove_labelled(client, run_id)
        write_report(results, workspace.report_path, reporter)
