"""Errors the CLI turns into one line and a documented exit code (see docs/concepts.md, "Exit codes")."""
from __future__ import annotations

from enum import IntEnum
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


class ServerFailed(NavOrchError):
    """Triton Inference Server did not come up with the models asked for, or stopped."""

    exit_code = ExitCode.SERVER

    def __init__(self, message: str, failed_models: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.failed_models = failed_models or {}  # model -> why it failed to load
