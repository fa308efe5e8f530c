"""The TensorRT version guard: a TensorRT engine is served only by a Triton image whose TensorRT
equals the one that built it, whether it is a plan (model.plan) or embedded in a Torch-TensorRT
TorchScript file (model.ts). TensorRT refuses engines from any other version, and Triton reports
that only as a model that fails to load; this turns it into a clear error before a server starts.

The engine's TensorRT is what the runners reported (results.json, environment.images[].versions
"tensorrt") or else the label `org.nav-orch.tensorrt` of the image that built it: neither file
records it where the host could read it (a plan's header is undocumented; Torch-TensorRT's engine
record holds its own ABI version, the engine's name, device, bindings and settings, not TensorRT's).
The server's is read from the Triton image itself: the name of the libnvinfer.so.X.Y.Z it ships (a
short container lists it at stage time). Its label, from docker-bake.hcl's NGC_TENSORRT_VERSION, is
"from-base" unless set at build time, so it vouches for nothing by default.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import IO, Optional

from orchestrator.errors import EnvironmentProblem
from orchestrator.results import Environment
from orchestrator.run import untrusted
from runners.contract.formats import Format

TENSORRT_LABEL = "org.nav-orch.tensorrt"
# Label values that say nothing about a version.
UNKNOWN = {"", "from-base", "unknown"}
NONE = {"none"}


class TensorRTMismatch(EnvironmentProblem):
    """An engine and the Triton image that would serve it disagree on TensorRT, or cannot be compared."""


def known(version: Optional[str]) -> Optional[str]:
    if version is None:
        return None
    version = version.strip()
    return None if version.lower() in UNKNOWN | NONE else version


def builder_tensorrt(environment: Environment) -> Optional[str]:
    """The TensorRT that built this run's engines; raises when the run's images disagree."""
    found = set()
    for image in environment.images:
        version = known(image.versions.get("tensorrt")) or known(image.labels.get(TENSORRT_LABEL))
        if version:
            found.add(version)
    if len(found) > 1:
        raise TensorRTMismatch(f"the run's images carry different TensorRT versions ({', '.join(sorted(found))}): "
                               "cannot tell which one built the engine")
    return found.pop() if found else None


def same_version(a: str, b: str) -> bool:
    """Equal on every component both spell out, and both at least major.minor.patch
    ("10.13.3" matches "10.13.3.9"; "10.13" is too vague to vouch for an engine)."""
    left, right = a.split("."), b.split(".")
    if min(len(left), len(right)) < 3:
        return False
    return all(x == y for x, y in zip(left, right))


# Where a TensorRT runtime lies in NGC images: Debian packages put it under /usr/lib/<arch>-linux-gnu,
# tarball installs under /usr/local/tensorrt; /opt holds Triton and its backends.
LIBRARY_ROOTS = ("/usr", "/opt")
LIBRARY_PATTERN = "libnvinfer.so.*"
# The runtime library's full name carries its version (libnvinfer.so.10.13.3); libnvinfer.so.10 is
# only the soname link, and libnvinfer_plugin.so.* and the like are other libraries.
LIBNVINFER = re.compile(r"(?:^|/)libnvinfer\.so\.(\d+\.\d+\.\d+(?:\.\d+)*)$")


def tensorrt_in_listing(listing: str, image: str) -> Optional[str]:
    """The TensorRT version a listing of an image's libnvinfer files shows (one path a line;
    other lines, such as an entrypoint's banner, are skipped); None when it shows none. Two
    versions: TensorRTMismatch, as nothing tells which one Triton loads."""
    found = {match.group(1) for line in listing.splitlines() if (match := LIBNVINFER.search(line.strip()))}
    if len(found) > 1:
        raise TensorRTMismatch(f"{image} ships several TensorRT runtimes ({', '.join(sorted(found))}): cannot "
                               "tell which one would load an engine; serve with an image that has one")
    return found.pop() if found else None


def check_served_engine(variant: str, builder_version: Optional[str], server_image: str,
                        server_version: Optional[str]) -> None:
    """Raise TensorRTMismatch (one line, with what to do) unless a server whose image ships
    TensorRT `server_version` (None: none) can load the engine TensorRT `builder_version` built."""
    if server_version is None:
        raise TensorRTMismatch(f"{variant} holds a TensorRT engine, but {server_image} has no TensorRT (no "
                               f"{LIBRARY_PATTERN} under {' or '.join(LIBRARY_ROOTS)}): serve it with the CUDA "
                               "Triton image of the NGC release that built it (--images RELEASE)")
    if builder_version is None:
        raise TensorRTMismatch(f"{variant}: the TensorRT version that built the engine is unknown (no runner reported "
                               "it and the image label says nothing): rebuild the images with --set "
                               f"NGC_TENSORRT_VERSION=X.Y.Z, the runners' TensorRT ({server_image} ships "
                               f"{server_version})")
    if not same_version(builder_version, server_version):
        raise TensorRTMismatch(f"{variant} was built with TensorRT {builder_version} but {server_image} carries "
                               f"TensorRT {server_version}: an engine loads only in the TensorRT that built it; use "
                               "the Triton image of the same NGC release as the runners")


# A Torch-TensorRT TorchScript file is a zip whose pickles (data.pkl; constants.pkl for what a trace made
# a constant) hold each engine as an object of this TorchBind class (Torch-TensorRT 2.9,
# core/runtime/register_jit_hooks.cpp), whose state is a list of strings, one of them the engine
# base64-encoded. TorchScript's pickler names a class by a GLOBAL opcode, written once per class
# (later objects refer to its memo entry), module and name each ending in a newline; base64, bindings
# and device strings hold no newline.
TORCH_TENSORRT_ENGINE = b"__torch__.torch.classes.tensorrt\nEngine\n"
PICKLE_SUFFIX = ".pkl"
SCAN_CHUNK = 1 << 20
# The class comes before its first engine's bytes, and a TorchScript pickle without engines is small
# (tensors live in data/): a pickle that has not named the class by then is taken to hold engines.
SCAN_MAX_BYTES = 1 << 30


def stream_names(stream: IO[bytes], needle: bytes, max_bytes: int = SCAN_MAX_BYTES,
                 chunk: int = SCAN_CHUNK) -> Optional[bool]:
    """Whether `needle` occurs in the stream, read a chunk at a time (the end of each kept, for a
    needle across two); None where it has not by `max_bytes` and the stream goes on."""
    tail, read, keep = b"", 0, len(needle) - 1
    while read < max_bytes:
        block = stream.read(min(chunk, max_bytes - read))
        if not block:
            return False
        seen = tail + block
        if needle in seen:
            return True
        read += len(block)
        tail = seen[max(0, len(seen) - keep):] if keep else b""
    return None if stream.read(1) else False


def embeds_engines(root: Path, artifact: Path) -> bool:
    """Whether a Torch-TensorRT TorchScript file (a runner's output inside `root`) embeds TensorRT
    engines: False only where every pickle of the archive was read whole without naming the engine
    class (Torch-TensorRT ran the whole graph in torch). A file that is no readable zip, or too large
    to tell, counts as embedding them, so the version guard applies. Read through `untrusted`: a link
    or an oversized file is refused (UntrustedOutput)."""
    with untrusted.open_file(root, artifact, untrusted.ARTIFACT_MAX_BYTES) as file:
        try:
            with zipfile.ZipFile(file) as archive:
                for member in archive.infolist():
                    if not member.filename.endswith(PICKLE_SUFFIX):
                        continue
                    with archive.open(member) as pickled:
                        found = stream_names(pickled, TORCH_TENSORRT_ENGINE)
                    if found is not False:
                        return True
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError):
            return True  # not a TorchScript archive this can read (RuntimeError: an encrypted member)
    return False


def serves_engines(fmt: Format, root: Path, artifact: Path) -> bool:
    """Whether serving `artifact` (of format `fmt`, inside `root`) loads TensorRT engines, which only
    the TensorRT that built them runs: a plan always; a Torch-TensorRT file where it embeds any."""
    if fmt.engine_of is None:
        return False
    return not fmt.engines_embedded or embeds_engines(root, artifact)
