"""The Triton stage of `optimize`: after selection, serve the best variant (or every verified one)
from Triton Inference Server and measure it over the batch sizes and a concurrency sweep: in a
container with perf_analyzer, or for the local executor from a tritonserver of this machine with
tritonclient's gRPC client (local.py, grpc_load.py). Its figures land in results.json under "triton"; whatever goes
wrong lands in "triton.error" and never changes the run's exit code.

WORKSPACE/triton/
    model_repository/   the Triton model repository (repository.py)
    server.log          the server's log (server-N.log when it had to restart)
    perf/               each perf_analyzer run: NAME-bB-cC.cmd (command line), .log, .csv
                        (NAME-cC.* for a model Triton does not batch); the gRPC load's .csv
    backends/           the local server's Python backend, with the stub for the runners' Python
    stage.log           the traceback of an unexpected failure of the stage, if any

What starts servers and clients comes in as `StageTools` (`docker_tools`, `local_tools`), so the
stage itself is plain orchestration.
"""
from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Optional, Protocol

import docker
import numpy as np
from google.protobuf import json_format

from orchestrator.config import Objective, OptimizeConfig, TritonSettings
from orchestrator.containers import engine
from orchestrator.containers.gpus import docker_gpus
from orchestrator.containers.images import CPU_RELEASE
from orchestrator.errors import EnvironmentProblem, NavOrchError, ServerFailed
from orchestrator.progress import Reporter
from orchestrator.results import RunResults, SearchTrial, TritonResults, TritonRun, TritonSearch, VariantResult
from orchestrator.run.runner_output import reference_samples
from orchestrator.run.selection import select_best
from orchestrator.run.workspace import Workspace
from orchestrator.triton.config_search import ServingConfig, Space, Trial, best_point, pareto_front, search, sweep
from orchestrator.triton.grpc_load import GRPC_CLIENT, GrpcLoad
from orchestrator.triton.local import LocalTriton, LocalTritonServer, ServingPython, backend_directory
from orchestrator.triton.perf_analyzer import Measurement, PerfAnalyzer, PerfFailed, RunContainer, write_input_data
from orchestrator.triton.repository import (
    CONFIG_FILE,
    Deployment,
    config_text,
    deployment_for,
    model_config,
    tensor_names,
    with_serving,
    write_model,
)
from orchestrator.triton.server import TritonServer, image_backends
from orchestrator.triton.tensorrt_guard import (
    LIBRARY_PATTERN,
    LIBRARY_ROOTS,
    builder_tensorrt,
    check_served_engine,
    serves_engines,
    tensorrt_in_listing,
)
from runners.contract.formats import FORMATS
from runners.contract.protocol import IOSpec

TRITON_IMAGE = "nav-orch/triton"
TRITON_SDK_IMAGE = "nav-orch/triton-sdk"


class Server(Protocol):
    """A started Triton server, as the stage uses it (server.TritonServer)."""

    @property
    def grpc_url(self) -> str: ...
    ready_s: Optional[float]
    def __enter__(self) -> Server: ...
    def __exit__(self, *exc: object) -> None: ...
    def server_version(self) -> Optional[str]: ...
    def check_running(self) -> None: ...
    def load_model(self, model: str, config_json: str) -> None: ...


class ServerFactory(Protocol):
    def __call__(self, *, image: str, repository: Path, models: list[str], run_id: str, log_path: Path, gpus: str,
                 shm_size: str, ready_timeout_s: float) -> Server: ...


class Perf(Protocol):
    """perf_analyzer, as the stage uses it (perf_analyzer.PerfAnalyzer)."""

    folder: Path

    def measure(self, model: str, batch_size: Optional[int], concurrency: int, grpc_url: str,
                input_data: Optional[Path]) -> tuple[Measurement, Path]: ...


class PerfFactory(Protocol):
    def __call__(self, *, image: str, run_id: str, folder: Path, settings: TritonSettings) -> Perf: ...


@dataclass(frozen=True)
class StageTools:
    """The stage's collaborators that start servers and clients: in Docker, or on this machine."""

    require_image: Callable[[str], object]  # tag -> image; EnvironmentProblem when not built
    image_backends: Callable[[str, str], set[str]]  # (tag, run id) -> the backends it carries
    image_tensorrt: Callable[[str, str], Optional[str]]  # (tag, run id) -> the TensorRT it ships, if any
    server: ServerFactory
    perf: PerfFactory
    images: Callable[[str], tuple[str, str]]  # release -> (server image, perf_analyzer image)
    client: str = "perf_analyzer"  # what measures, as results.json's triton.client says
    local_python: Optional[str] = None  # a local server's models run in this Python


def triton_images(release: str) -> tuple[str, str]:
    """(server image, perf_analyzer image) of a release: the CPU flavor has both in one image;
    the CUDA flavor takes perf_analyzer from NGC's -sdk image of the same release."""
    if release == CPU_RELEASE:
        return f"{TRITON_IMAGE}:{CPU_RELEASE}", f"{TRITON_IMAGE}:{CPU_RELEASE}"
    return f"{TRITON_IMAGE}:{release}", f"{TRITON_SDK_IMAGE}:{release}"


def release_of(results: RunResults) -> str:
    """The release of the runner images this run used (their tag: nav-orch/pytorch:RELEASE)."""
    tags = [image.tag for image in results.environment.images if ":" in image.tag]
    return tags[0].rpartition(":")[2] if tags else CPU_RELEASE


def require_image(client: docker.DockerClient, tag: str) -> engine.ImageInfo:
    info = engine.inspect_image(client, tag)
    if info is None:
        flavor = "cpu" if tag.endswith(f":{CPU_RELEASE}") else "cuda"
        raise EnvironmentProblem(f"image {tag} is not built: run `nav-orch images build --flavor {flavor}`")
    return info


def image_tensorrt(run: RunContainer, image: str, run_id: str, timeout_s: float = 120.0) -> Optional[str]:
    """The TensorRT version the image ships, from the names of its libnvinfer files, listed by a
    short container of the image (`run`: engine.run_to_exit) as server.image_backends lists its
    backends."""
    spec = engine.ContainerSpec(
        image=image, command=["find", *LIBRARY_ROOTS, "-name", LIBRARY_PATTERN], mounts=[],
        labels={engine.RUN_LABEL: run_id, engine.ROLE_LABEL: "triton-tensorrt"}, pids=64)
    state, output = run(spec, timeout_s)
    version = tensorrt_in_listing(output, image)
    # find fails for a folder it may not read, and may still have found the library elsewhere.
    if state is None or (state.code != 0 and version is None):
        last = output.strip().splitlines()[-1] if output.strip() else "no output"
        raise EnvironmentProblem(f"cannot look for {LIBRARY_PATTERN} in {image}: "
                                 f"{last if state is not None else f'no answer in {timeout_s:.0f} s'}")
    return version


@dataclass
class ServingChoice:
    """The variants chosen to be served, and why others could not be."""

    deployments: list[Deployment]
    problems: list[str]


def choose_variants(results: RunResults, all_variants: bool, servable: Callable[[VariantResult], Deployment],
                    objective: Objective, budget_ms: Optional[float]) -> ServingChoice:
    """Deployments for the best variant (the best servable one, when the best is a runtime Triton
    cannot load) or for every verified variant; what could not be deployed, as problems."""
    verified = [v for v in results.variants if v.status == "ok"]
    deployments, problems, failed = [], [], set()
    candidates = verified if all_variants else [v for v in verified if v.name == results.best]
    for variant in candidates:
        try:
            deployments.append(servable(variant))
        except NavOrchError as error:
            problems.append(str(error))
            failed.add(variant.name)
    if not all_variants and not deployments and results.best:
        rest = [v for v in verified if v.name not in failed]
        while rest:
            name, _ = select_best(rest, objective, budget_ms)
            chosen = next(v for v in rest if v.name == name)
            try:
                deployments.append(servable(chosen))
                problems.append(f"served {chosen.name} instead, the best variant Triton can load")
                break
            except NavOrchError as error:
                problems.append(str(error))
                rest.remove(chosen)
    return ServingChoice(deployments, problems)


@dataclass
class TritonStage:
    workspace: Workspace
    run_id: str
    settings: TritonSettings
    gpus: list[str]
    reporter: Reporter
    tools: StageTools
    save: Callable[[], None] = lambda: None
    gpu_request: str = "auto"  # the user's --gpus: its capabilities, driver and options go to the server

    def run(self, results: RunResults, io: IOSpec, batch_sizes: list[int], objective: Objective,
            budget_ms: Optional[float], release: Optional[str] = None) -> TritonResults:
        """Deploy and measure; records into results.triton and returns it. Never raises but
        KeyboardInterrupt: a failure is the record's `error`."""
        server_image, perf_image = self.tools.images(release or release_of(results))
        triton = results.triton = TritonResults(image=server_image, client=self.tools.client,
                                                local_python=self.tools.local_python,
                                                model_repository=self.workspace.relative(self.workspace.model_repository))
        problems: list[str] = []
        try:
            self._run(results, triton, io, sorted(set(batch_sizes)), server_image, perf_image, objective, budget_ms,
                      problems)
        except KeyboardInterrupt:
            problems.append("interrupted")
            raise
        except NavOrchError as error:
            problems.append(str(error))
        except Exception as error:  # noqa: BLE001 - the stage must not cost the run its results
            self.workspace.triton.mkdir(parents=True, exist_ok=True)
            (self.workspace.triton / "stage.log").write_text(traceback.format_exc())
            problems.append(f"{type(error).__name__}: {error} (traceback: triton/stage.log)")
        finally:
            triton.error = "; ".join(problems) or None
            self.save()
        return triton

    def _run(self, results: RunResults, triton: TritonResults, io: IOSpec, batch_sizes: list[int],
             server_image: str, perf_image: str, objective: Objective, budget_ms: Optional[float],
             problems: list[str]) -> None:
        self.tools.require_image(server_image)
        self.tools.require_image(perf_image)
        self.reporter.note(f"triton: reading the backends of {server_image}")
        backends = self.tools.image_backends(server_image, self.run_id)
        builder_version = None  # the TensorRT that built the run's engines, asked once

        @cache
        def server_tensorrt() -> Optional[str]:
            # Asked of the image itself, and only when an engine is to be served: its label says
            # "from-base" unless the images were built with NGC_TENSORRT_VERSION set.
            self.reporter.note(f"triton: reading the TensorRT version of {server_image}")
            return self.tools.image_tensorrt(server_image, self.run_id)

        def servable(variant: VariantResult) -> Deployment:
            nonlocal builder_version
            deployment = deployment_for(variant, self.workspace.root, backends)
            if serves_engines(FORMATS[deployment.format], deployment.workspace, deployment.artifact):
                builder_version = builder_version or builder_tensorrt(results.environment)
                check_served_engine(variant.name, builder_version, server_image, server_tensorrt())
            return deployment

        choice = choose_variants(results, self.settings.all_variants, servable, objective, budget_ms)
        problems.extend(choice.problems)
        deployments = choice.deployments
        if not deployments:
            if not problems:
                problems.append("no verified variant to serve")
            return
        max_batch_size = max(batch_sizes)
        self.workspace.model_repository.mkdir(parents=True, exist_ok=True)
        for deployment in deployments:
            write_model(self.workspace.model_repository, deployment, io, max_batch_size, self.gpus)
        samples = reference_samples(self.workspace)
        perf = self.tools.perf(image=perf_image, run_id=self.run_id, folder=self.workspace.perf,
                               settings=self.settings)

        # A model that fails to load stops the server (--exit-on-error): note why, start again
        # without it, so the other variants are still measured.
        attempt = 0
        while deployments:
            attempt += 1
            log_path = self.workspace.triton / ("server.log" if attempt == 1 else f"server-{attempt}.log")
            server = self.tools.server(image=server_image, repository=self.workspace.model_repository,
                                       models=[d.model for d in deployments], run_id=self.run_id, log_path=log_path,
                                       gpus=docker_gpus(self.gpu_request, self.gpus), shm_size=self.settings.shm_size,
                                       ready_timeout_s=self.settings.ready_timeout_s)
            self.reporter.note(f"triton: starting {server_image} with {', '.join(d.model for d in deployments)}")
            for deployment in deployments:
                self.reporter.stage(deployment.variant, "triton: loading", deployment.backend)
            try:
                with server:
                    triton.server_version, triton.ready_s = server.server_version(), server.ready_s
                    self._measure(server, perf, deployments, io, batch_sizes, max_batch_size, samples, triton,
                                  problems)
                    if self.settings.search != "off" and not self.settings.all_variants:
                        self._search(server, perf_image, deployments[0], io, batch_sizes, max_batch_size, samples,
                                     triton, objective, budget_ms)
                return
            except ServerFailed as error:
                failed = {d.model for d in deployments} & set(error.failed_models)
                if not failed:
                    raise
                for deployment in [d for d in deployments if d.model in failed]:
                    reason = error.failed_models[deployment.model]
                    problems.append(f"{deployment.variant}: Triton failed to load it: {reason} (log: "
                                    f"{self.workspace.relative(log_path)})")
                    self.reporter.stage(deployment.variant, "triton: failed", reason)
                deployments = [d for d in deployments if d.model not in failed]

    def _measure(self, server: Server, perf: Perf, deployments: list[Deployment], io: IOSpec,
                 batch_sizes: list[int], max_batch_size: int, samples: dict[str, np.ndarray],
                 triton: TritonResults, problems: list[str]) -> None:
        for deployment in deployments:
            config = model_config(deployment, io, max_batch_size, self.gpus)
            batched = config.max_batch_size > 0
            input_names, _ = tensor_names(deployment, io)
            input_data = write_input_data(samples, input_names, batched, perf.folder / f"{deployment.model}-input.json")
            # Unbatched (max_batch_size 0): one point per concurrency, each request the samples'
            # full shapes, no -b; recorded as batch size 1, one request per inference.
            sizes: list[Optional[int]] = list(batch_sizes) if batched else [None]
            for batch_size in sizes:
                batch = f"batch {batch_size}" if batch_size is not None else "unbatched"
                for concurrency in self.settings.concurrency:
                    self.reporter.stage(deployment.variant, "triton: measuring", f"{batch}, concurrency {concurrency}")
                    try:
                        point, csv_path = perf.measure(deployment.model, batch_size, concurrency, server.grpc_url,
                                                       input_data)
                    except PerfFailed as error:
                        server.check_running()
                        problems.append(f"{deployment.variant} {batch} concurrency {concurrency}: {error}")
                        continue
                    triton.runs.append(TritonRun(
                        variant=deployment.variant, backend=deployment.backend, batch_size=batch_size or 1,
                        concurrency=concurrency, throughput=point.throughput, latency_ms=point.latency_ms,
                        server_queue_ms=point.server_queue_ms, server_compute_ms=point.server_compute_ms,
                        stable=point.stable, csv=self.workspace.relative(csv_path)))
                    self.save()
            served = [r for r in triton.runs if r.variant == deployment.variant]
            if served:
                top = max(served, key=lambda r: r.throughput)
                self.reporter.stage(deployment.variant, "served", f"{top.throughput:,.0f}/s at batch "
                                    f"{top.batch_size}, concurrency {top.concurrency}; p99 {top.latency_ms.p99:.3f} ms")


    def _search(self, server: Server, perf_image: str, deployment: Deployment, io: IOSpec, batch_sizes: list[int],
                max_batch_size: int, samples: dict[str, np.ndarray], triton: TritonResults, objective: Objective,
                budget_ms: Optional[float]) -> None:
        """Search the served best variant's configuration (config_search.py) on this server, one model
        load per configuration, and write the chosen one into its config.pbtxt: what `nav-orch serve`
        serves. Each trial is saved as it is measured, so a stopped search keeps them."""
        base = model_config(deployment, io, max_batch_size, self.gpus)
        batched = base.max_batch_size > 0
        space = (Space(batch_sizes=tuple(batch_sizes)) if batched
                 else Space(batch_sizes=(0,), queue_delays_us=(0,)))
        record = triton.search = TritonSearch(variant=deployment.variant, mode=self.settings.search,
                                              budget_s=self.settings.search_budget_s,
                                              client_batch_size=1 if batched else None)
        input_names, _ = tensor_names(deployment, io)
        folder = self.workspace.perf / "search"
        folder.mkdir(parents=True, exist_ok=True)
        input_data = write_input_data(samples, input_names, batched, folder / f"{deployment.model}-input.json")
        started = time.monotonic()

        def measure(config: ServingConfig) -> Trial:
            self.reporter.stage(deployment.variant, "triton: searching", config.name)
            try:
                server.load_model(deployment.model, json_format.MessageToJson(with_serving(base, config)))
                perf = self.tools.perf(image=perf_image, run_id=self.run_id, folder=folder / config.name,
                                       settings=self.settings)
                # perf_analyzer sees its own folder only (mounted at /perf): the input data goes in it.
                own_input = Path(shutil.copyfile(input_data, perf.folder / input_data.name))
                trial = best_point(sweep(lambda concurrency: self._point(server, perf, deployment, batched, config,
                                                                         concurrency, own_input),
                                         self.settings.search_concurrency), objective, budget_ms)
            except ServerFailed as error:
                server.check_running()
                trial = Trial(config, error=str(error))
            record.trials.append(search_trial(trial))
            self.save()
            return trial

        try:
            outcome = search(self.settings.search, measure, space,
                             lambda: time.monotonic() - started > self.settings.search_budget_s, objective, budget_ms)
        except KeyboardInterrupt:
            record.stopped = "interrupted"
            raise
        record.default, record.chosen = outcome.default.config.name, outcome.chosen.config.name
        record.gain, record.note, record.stopped = outcome.gain, outcome.note, outcome.stopped
        record.pareto = [trial.config.name for trial in pareto_front(outcome.trials)]
        (self.workspace.model_repository / deployment.model / CONFIG_FILE).write_text(
            config_text(with_serving(base, outcome.chosen.config)))
        gain = f"{outcome.gain:.2f}x the default's throughput" if outcome.gain is not None else "the default failed"
        self.reporter.note(f"triton search: {len(outcome.trials)} configuration(s) in "
                           f"{time.monotonic() - started:.0f} s; serving {outcome.chosen.config.name}, {gain}"
                           + (f" ({outcome.note})" if outcome.note else ""))

    def _point(self, server: Server, perf: Perf, deployment: Deployment, batched: bool, config: ServingConfig,
               concurrency: int, input_data: Path) -> Trial:
        try:
            point, _ = perf.measure(deployment.model, 1 if batched else None, concurrency, server.grpc_url, input_data)
        except PerfFailed as error:
            server.check_running()
            return Trial(config, concurrency, error=str(error))
        return Trial(config, concurrency, point.throughput, point.latency_ms.p50, point.latency_ms.p99,
                     point.server_queue_ms, point.server_compute_ms)


def search_trial(trial: Trial) -> SearchTrial:
    config = trial.config
    return SearchTrial(config=config.name, instances=config.instances, max_queue_delay_us=config.max_queue_delay_us,
                       max_batch_size=config.max_batch_size, preferred_batch_sizes=list(config.preferred_batch_sizes),
                       concurrency=trial.concurrency, throughput=trial.throughput, p50_ms=trial.p50_ms,
                       p99_ms=trial.p99_ms, server_queue_ms=trial.server_queue_ms,
                       server_compute_ms=trial.server_compute_ms, error=trial.error)


def docker_tools(client: docker.DockerClient) -> StageTools:
    """The real collaborators, each talking to `client`."""
    return StageTools(require_image=partial(require_image, client), image_backends=partial(image_backends, client),
                      image_tensorrt=partial(image_tensorrt, partial(engine.run_to_exit, client)),
                      server=partial(TritonServer, client),
                      perf=partial(PerfAnalyzer, partial(engine.run_to_exit, client)), images=triton_images)


def local_tools(triton: LocalTriton, serving: ServingPython, python: str, gpu_indices: list[str],
                backends: Path) -> StageTools:
    """Collaborators without Docker: `triton` on this machine serves through its Python backend
    alone (from `backends`, a folder it may write), and tritonclient's gRPC client measures."""
    def server(*, image: str, repository: Path, models: list[str], run_id: str, log_path: Path, gpus: str,
               shm_size: str, ready_timeout_s: float) -> Server:
        return LocalTritonServer(triton, backend_directory(triton, backends), serving, gpu_indices, repository,
                                 models, run_id, log_path, gpus, shm_size, ready_timeout_s)

    def perf(*, image: str, run_id: str, folder: Path, settings: TritonSettings) -> Perf:
        return GrpcLoad(folder, settings)

    return StageTools(require_image=lambda tag: None, image_backends=lambda tag, run_id: {"python"},
                      image_tensorrt=lambda tag, run_id: None, server=server, perf=perf,
                      images=lambda release: (triton.describe(), "tritonclient"), client=GRPC_CLIENT,
                      local_python=python)


def run_triton_stage(tools: StageTools, workspace: Workspace, results: RunResults, io: Optional[IOSpec],
                     run_id: str, config: OptimizeConfig, gpus: list[str], reporter: Reporter,
                     save: Callable[[], None]) -> Optional[TritonResults]:
    """The stage as `api.optimize` runs it after selection; None when it is off or nothing was chosen."""
    if not config.triton.enabled or not results.best or io is None:
        return None
    stage = TritonStage(workspace, run_id, config.triton, gpus, reporter, tools, save, config.gpus)
    return stage.run(results, io, config.batch_sizes, config.objective, config.latency_budget_ms, config.images)
