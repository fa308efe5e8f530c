"""The TensorRT version guard: a TensorRT engine (model.plan) is served only by a Triton image
whose TensorRT equals the one that built it. TensorRT refuses engines from any other version, and
Triton reports that only as a model that fails to load; this turns it into a clear error before a
server starts.

The engine's TensorRT is what the runners reported (results.json, environment.images[].versions
"tensorrt") or else the label `org.nav-orch.tensorrt` of the image that built it. The server's is
read from the Triton image itself: the name of the libnvinfer.so.X.Y.Z it ships (a short
container lists it at stage time). Its label, from docker-bake.hcl's NGC_TENSORRT_VERSION, is
"from-base" unless set at build time, so it vouches for nothing by default.
"""
from __future__ import annotations

import re
from typing import Optional

from orchestrator.errors import EnvironmentProblem
from orchestrator.results import Environment

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
        raise TensorRTMismatch(f"{variant} is a TensorRT engine, but {server_image} has no TensorRT (no "
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
