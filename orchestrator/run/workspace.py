"""The layout of a run's workspace folder."""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from orchestrator.errors import DISK_FULL_TEXT, BadInput, DiskFull
from orchestrator.results import RunResults
from runners.contract.protocol import write_text_atomic

MIN_FREE = 1 << 20  # less than this free, and no artifact yet to size the need by: the disk is full


class Workspace:
    """WORKSPACE/
    results.json        the run's results (rewritten atomically after every session)
    inputs/samples.npz  the samples as given or generated
    reference/          the source model's outputs and the samples keyed by input name
    variants/NAME/      one folder per variant, holding its artifact
    jobs/ID/            job.json, result.json and runner.log of each job
    jobs/.warm-N/       a warm runner's queue while the run lasts (orchestrator/run/executor.py)
    logs/SESSION.log    what each runner process printed
    cache/              compilers' caches shared by the run's runners (torch.compile)
    triton/             the Triton stage: model_repository/, server logs, perf/ (perf_analyzer's runs)

    Runners write into reference/, variants/, jobs/ and cache/: what lies there is untrusted
    (orchestrator/run/untrusted.py; read in runner_output.py). The host alone writes results.json,
    inputs/, logs/ and triton/.
    """

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.inputs = self.root / "inputs"
        self.given_samples = self.inputs / "samples.npz"
        self.reference = self.root / "reference"
        self.variants = self.root / "variants"
        self.jobs = self.root / "jobs"
        self.logs = self.root / "logs"
        self.cache = self.root / "cache"
        self.triton = self.root / "triton"
        self.model_repository = self.triton / "model_repository"
        self.perf = self.triton / "perf"
        self.results_path = self.root / "results.json"
        self.report_path = self.root / "report.html"

    def create(self) -> Workspace:
        for folder in (self.inputs, self.reference, self.variants, self.jobs, self.logs, self.cache):
            folder.mkdir(parents=True, exist_ok=True)
        self.reclaim()
        return self

    def reclaim(self) -> None:
        """Give root back what an older nav-orch made its runners' user (65534) own in a workspace.
        Runners now run as the calling user; run as root, that is uid 0 without capabilities, which
        cannot write into folders another user owns. Links are changed, never followed."""
        if os.getuid() != 0:
            return  # a user's runners always ran as that user: nothing to give back
        for folder in self.runner_writable():
            for top, folders, files in os.walk(folder):
                for name in [".", *folders, *files]:
                    path = os.path.join(top, name)
                    if os.lstat(path).st_uid != 0:
                        os.lchown(path, 0, 0)

    def out_of_space(self, failures: Sequence[str]) -> Optional[DiskFull]:
        """Why the run must stop, where jobs failed on a full disk: one says so (ENOSPC), or less space
        is free than the largest artifact here takes (torch's writers say only "file write failed")."""
        if not failures:
            return None
        largest = max((entry.stat(follow_symlinks=False).st_size for folder in os.scandir(self.variants)
                       if folder.is_dir(follow_symlinks=False) for entry in os.scandir(folder.path)
                       if entry.is_file(follow_symlinks=False)), default=0)
        needed = max(largest, MIN_FREE)
        if any(DISK_FULL_TEXT in text for text in failures) or shutil.disk_usage(self.root).free < needed:
            return DiskFull.at(self.root, needed=largest or None)
        return None

    def runner_writable(self) -> tuple[Path, ...]:
        return (self.reference, self.variants, self.jobs, self.cache)

    def written_by_runners(self, path: Path) -> bool:
        return any(path == folder or folder in path.parents for folder in self.runner_writable())

    def job_dir(self, job_id: str) -> Path:
        path = self.jobs / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def variant_dir(self, name: str) -> Path:
        path = self.variants / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def read_results(self) -> RunResults:
        """results.json, as a run wrote it; BadInput when there is none or it is not one."""
        if not self.results_path.is_file():
            raise BadInput(f"{self.root} has no results.json: run `nav-orch optimize ... --workspace {self.root}` "
                           "first")
        try:
            return RunResults.model_validate_json(self.results_path.read_text())
        except ValidationError as error:
            raise BadInput(f"{self.results_path} is not a nav-orch results file: {error.errors()[0]['msg']}") from None

    def write_results(self, results: RunResults) -> None:
        write_text_atomic(self.results_path, results.model_dump_json(indent=2))
