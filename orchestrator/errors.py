"""Errors the CLI turns into one line and a documented exit code (see docs/concepts.md, "Exit codes")."""
from __future__ import annotations

import errno
import shutil
from enum import IntEnum
from pathlib import Path
from typing import Optional


class ExitCode(IntEnum):
    OK = 0
    NO_VARIANT = 1  # the run finished, but no variant passed verification and profiling
    BAD_INPUT = 2  # the command line, the model or the samples are wrong
    ENVIRONMENT = 3  # Docker, an image or a GPU is missing
    SERVER = 4  # `nav-orch serve`: Triton could not start, load the model or keep running
    INTERRUPTED = 130  # Ctrl-C; SIGTERM ends with 143 and SIGHUP with 129 (128 + the signal)


class NavOrchError(Exception):
    """A failure the user can act on: `str(error)` says what is wrong and what to do."""

    exit_code = ExitCode.BAD_INPUT


class BadInput(NavOrchError):
    exit_code = ExitCode.BAD_INPUT


class EnvironmentProblem(NavOrchError):
    exit_code = ExitCode.ENVIRONMENT


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXT = "No space left on device"  # strerror(ENOSPC), as a runner's error or log says it


def is_disk_full(error: OSError) -> bool:
    return error.errno in DISK_FULL_ERRNOS


class DiskFull(EnvironmentProblem):
    """The workspace's filesystem filled up: the run stops, keeping what finished."""

    @classmethod
    def at(cls, workspace: Path, error: Optional[OSError] = None, needed: Optional[int] = None) -> DiskFull:
        """`needed`: the bytes one more artifact takes, where the run knows (its largest so far)."""
        where = f" writing {error.filename}" if error is not None and error.filename else ""
        try:
            usage = shutil.disk_usage(workspace)
            space = f" ({usage.free >> 20} MiB free of {usage.total >> 20} MiB"
            space += f"; each variant needs up to {-(-needed >> 20)} MiB)" if needed else ")"
        except OSError:
            space = ""
        return cls(f"no space left on the filesystem of {workspace}{where}{space}: free some, or give a "
                   "--workspace on a larger disk; rerun the same command to finish only what is missing")


class ServerFailed(NavOrchError):
    """Triton Inference Server did not come up with the models asked for, or stopped."""

    exit_code = ExitCode.SERVER

    def __init__(self, message: str, failed_models: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.failed_models = failed_models or {}  # model -> why it failed to load
