"""Everything a runner wrote is untrusted data: how the host reads, checks and copies it.

A runner runs code nobody reviewed (the user's model). Whatever it leaves in the folders it
could write (`reference/`, `variants/NAME/`, `jobs/ID/`, `cache/`) may be a symbolic link to a
host file, a hard link, a FIFO or a device, a path that climbs out with `..`, or a file far too
large. So the host:
- opens such files one path component at a time with O_NOFOLLOW (no link is ever followed,
  even one swapped in between a check and a use) and refuses anything but a regular file with
  a single link, within a size limit;
- checks a whole artifact tree with lstat before it mounts, copies or serves it;
- removes every entry of a runner-writable folder that is not a plain file or folder once the
  runner is gone (`sweep`), so the workspace users keep and upload holds only data.

A violation is `UntrustedOutput`: the job or variant fails with "runner output not trusted: ...",
and the offending file is never read. The host's reads of runner output (a job's result, the
reference job's arrays) are in runner_output.py, built on these checks.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from orchestrator.errors import NavOrchError

PREFIX = "runner output not trusted"
RESULT_MAX_BYTES = 1 << 20  # result.json: a few KiB in practice
ARRAYS_MAX_BYTES = 8 << 30  # reference outputs and normalised samples the host loads
ARTIFACT_MAX_BYTES = 256 << 30  # a variant's artifact tree (large language models reach ~150 GB)
ARTIFACT_MAX_ENTRIES = 100_000


class UntrustedOutput(NavOrchError):
    """A runner left something the host will not use; `str()` says what and where."""

    def __init__(self, detail: str):
        super().__init__(f"{PREFIX}: {detail}")


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file or folder"


def _size(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB" if size < 1 << 30 else f"{size / (1 << 30):.1f} GiB"


def relative_inside(relative: str) -> PurePosixPath:
    """A path a runner named (an artifact in its result): relative, no `..`, no empty parts."""
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or any(part in ("..", "") for part in relative.split("/")) \
            or "\\" in relative or "\0" in relative:
        raise UntrustedOutput(f"the artifact path {relative!r} is not a plain relative path inside the job's folder")
    return path


def _parts(root: Path, path: Path) -> tuple[str, ...]:
    try:
        return path.relative_to(root).parts
    except ValueError:
        raise UntrustedOutput(f"{path} lies outside {root}") from None


def _check_file(shown: str, info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UntrustedOutput(f"{shown} is {_kind(info.st_mode)}")
    if info.st_nlink > 1:
        raise UntrustedOutput(f"{shown} is a hard link ({info.st_nlink} names for one file)")
    if info.st_size > max_bytes:
        raise UntrustedOutput(f"{shown} is {_size(info.st_size)} (limit {_size(max_bytes)})")


def open_file(root: Path, path: Path, max_bytes: int) -> BinaryIO:
    """Open `path` (inside `root`, which the host made) for reading without following any link
    below `root`: a regular file with one link, at most `max_bytes`."""
    parts = _parts(root, path)
    shown = "/".join(parts)
    if not parts:
        raise UntrustedOutput(f"{root} is not a file")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except (NotADirectoryError, OSError) as error:
                if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                kind = _kind(os.lstat(part, dir_fd=fd).st_mode)
                raise UntrustedOutput(f"{shown}: {part} is {kind}, not a folder") from None
            os.close(fd)
            fd = inner
        # O_NONBLOCK: opening a FIFO must not hang; fstat refuses it right after.
        try:
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise UntrustedOutput(f"{shown} is a symbolic link") from None
    finally:
        os.close(fd)
    try:
        _check_file(shown, os.fstat(file_fd), max_bytes)
        os.set_blocking(file_fd, True)
        return os.fdopen(file_fd, "rb")
    except BaseException:
        os.close(file_fd)
        raise


def read_bytes(root: Path, path: Path, max_bytes: int) -> bytes:
    with open_file(root, path, max_bytes) as f:
        return f.read(max_bytes + 1)


def _entries(folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry below `folder` with its lstat: links are never followed, and only real folders
    are descended into."""
    pending = [folder]
    while pending:
        try:
            scan = os.scandir(pending.pop())
        except FileNotFoundError:  # gone since it was listed: another runner's temporary folder
            continue
        with scan:
            for entry in scan:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # renamed or removed by a runner still at work
                    continue
                if stat.S_ISDIR(info.st_mode):
                    pending.append(Path(entry.path))
                yield Path(entry.path), info


def check_tree(root: Path, path: Path, max_bytes: int = ARTIFACT_MAX_BYTES, missing_ok: bool = False) -> int:
    """Check an artifact (a file or a folder tree) inside `root` with lstat only: every folder on
    the way down a real folder, every entry a regular file with one link or a folder, the whole
    within the limits. Returns its size in bytes (0 for a missing path when `missing_ok`)."""
    parts = _parts(root, path)
    shown = "/".join(parts)
    current = root
    for part in parts:  # every folder on the way down, then the artifact itself
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            if missing_ok:
                return 0
            raise UntrustedOutput(f"{'/'.join(_parts(root, current))} is missing") from None
        if current != path and not stat.S_ISDIR(info.st_mode):
            raise UntrustedOutput(f"{'/'.join(_parts(root, current))} is {_kind(info.st_mode)}, not a folder")
    if not stat.S_ISDIR(info.st_mode):
        _check_file(shown, info, max_bytes)
        return info.st_size
    total = 0
    for entries, (entry, entry_info) in enumerate(_entries(path), start=1):
        if entries > ARTIFACT_MAX_ENTRIES:
            raise UntrustedOutput(f"{shown} holds more than {ARTIFACT_MAX_ENTRIES} entries")
        if stat.S_ISDIR(entry_info.st_mode):
            continue
        _check_file("/".join(_parts(root, entry)), entry_info, max_bytes)
        total += entry_info.st_size
        if total > max_bytes:
            raise UntrustedOutput(f"{shown} is over {_size(max_bytes)}")
    return total


def copy_tree(root: Path, source: Path, target: Path) -> None:
    """Copy a checked artifact (file or folder) out of a runner-writable folder: every file is
    opened through `open_file`, so nothing swapped in after the check is followed."""
    check_tree(root, source)
    if not source.is_dir():
        with open_file(root, source, ARTIFACT_MAX_BYTES) as src, target.open("xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return
    target.mkdir()
    for entry in sorted(source.iterdir()):
        copy_tree(root, entry, target / entry.name)


def sweep(root: Path, folder: Path) -> list[str]:
    """Remove, without reading them, the entries of a runner-writable folder that are not plain
    files or folders (links, hard-linked files, FIFOs, devices); returns one line for each."""
    problems: list[str] = []
    if not folder.exists():
        return problems
    for entry, info in _entries(folder):
        if stat.S_ISDIR(info.st_mode):
            continue
        try:
            _check_file("/".join(_parts(root, entry)), info, ARTIFACT_MAX_BYTES)
        except UntrustedOutput as error:
            problems.append(str(error).removeprefix(f"{PREFIX}: ") + " (removed)")
            try:
                os.unlink(entry)
            except FileNotFoundError:
                pass
    return problems


def create(path: Path) -> BinaryIO:
    """A fresh file for the host to write into a runner-writable folder (read and write): never
    opened through whatever a runner left under that name, which could link to a host file."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "w+b")


def write_text(path: Path, text: str) -> None:
    with create(path) as f:
        f.write(text.encode())
