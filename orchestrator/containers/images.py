"""The runner images a run uses: each framework's image for an NGC release or the CPU images, the
release `--images auto` picks on this host, and the image matrix (docker-bake.hcl) they come from."""
from __future__ import annotations

from orchestrator.config import CPU_RELEASE
from orchestrator.containers.bake import load_bake_file
from orchestrator.containers.gpus import nvidia_driver_loaded
from orchestrator.errors import BadInput
from orchestrator.resources import shipped

BAKE_FILE = shipped("docker-bake.hcl")

# The image repository of each framework's runners; the tag is the NGC release, or "cpu".
FRAMEWORK_IMAGES: dict[str, str] = {
    "torch": "nav-orch/pytorch",
    "tensorflow": "nav-orch/tensorflow",
    "jax": "nav-orch/jax",  # the TensorFlow image plus JAX: jax2tf exports need TensorFlow
    # ONNX models run in the PyTorch images: they carry onnx and ONNX Runtime (and the CUDA one
    # TensorRT), so a separate ONNX image would only duplicate them.
    "onnx": "nav-orch/pytorch",
}
# Every runner image carries it (docker-bake.hcl), and so does each image derived from one.
FLAVOR_LABEL = "org.nav-orch.flavor"


def image_for(framework: str, release: str) -> str:
    """The image a run uses: `nav-orch/pytorch:cpu`, or `nav-orch/pytorch:<NGC release>`."""
    try:
        repository = FRAMEWORK_IMAGES[framework]
    except KeyError:
        raise BadInput(f"no runner image for framework {framework!r} "
                       f"(known: {', '.join(sorted(FRAMEWORK_IMAGES))})") from None
    return f"{repository}:{release}"


def bake_release() -> str:
    """The NGC release the image matrix builds by default (docker-bake.hcl's NGC_RELEASE)."""
    return load_bake_file(BAKE_FILE).resolve_variables()["NGC_RELEASE"]


def default_release(gpus_wanted: bool) -> str:
    """`--images auto`: the CUDA images of the bake file's NGC release on a GPU host, else the CPU ones."""
    if not gpus_wanted or not nvidia_driver_loaded():
        return CPU_RELEASE
    return bake_release()


def resolve_release(images_release: str, gpus: str) -> str:
    """`--images auto`: the CUDA images on a GPU host unless --gpus none, else the CPU ones."""
    return default_release(gpus != "none") if images_release == "auto" else images_release
