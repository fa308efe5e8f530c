"""The TensorRT version guard: a TensorRT engine (model.plan) is served only by a Triton image
whose TensorRT equals the one that built it. TensorRT refuses engines from any other version, and
Triton reports that only as a model that fails to load; this turns it into a clear error before a
server starts.

The engine's TensorRT is what the runners reported (results.json, environment.images[].versions
"tensorrt") or else the label `org.nav-orch.tensorrt` of the image that built it; the server's is
the label of the Triton image. Both labels come from docker-bake.hcl (NGC_TENSORRT_VERSION).
"""
from __future__ import annotations

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


def check_engine(variant: str, builder_version: Optional[str], server_image: str,
                 server_labels: dict[str, str]) -> None:
    """Raise TensorRTMismatch (one line, with what to do) unless the server can load the engine
    that TensorRT `builder_version` built."""
    label = server_labels.get(TENSORRT_LABEL)
    server = known(label)
    if label is not None and label.strip().lower() in NONE:
        raise TensorRTMismatch(f"{variant} is a TensorRT engine, but {server_image} has no TensorRT: serve it with the "
                               "CUDA Triton image of the NGC release that built it (--images RELEASE)")
    if builder_version is None:
        raise TensorRTMismatch(f"{variant}: the TensorRT version that built the engine is unknown (no runner reported "
                               "it and the image label says nothing): rebuild the images with "
                               "--set NGC_TENSORRT_VERSION=X.Y.Z")
    if server is None:
        raise TensorRTMismatch(f"{variant}: {server_image} does not say which TensorRT it carries (label "
                               f"{TENSORRT_LABEL}={label or 'missing'}): rebuild it with --set NGC_TENSORRT_VERSION="
                               f"{builder_version}")
    if not same_version(builder_version, server):
        raise TensorRTMismatch(f"{variant} was built with TensorRT {builder_version} but {server_image} carries "
                               f"TensorRT {server}: an engine loads only in the TensorRT that built it; use the "
                               "Triton image of the same NGC release as the runners")
