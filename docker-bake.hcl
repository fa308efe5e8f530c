# nav-orch runner images: one image per toolchain, built with `docker buildx bake` where
# buildx exists, and otherwise by `nav-orch images build` through the Docker API from this
# same file (orchestrator/bake.py reads it).
#
# Keep to the subset both paths understand:
#   - variables with a plain string `default`;
#   - interpolation ONLY of the form ${VAR}, VAR being a variable declared here
#     (no functions, no ternaries, no ${target.x.y}, no %{ } directives, no $${ } escapes);
#   - groups list targets or other groups; targets set context, dockerfile, args, tags, labels.
# Precedence of a variable's value: an explicit override (`--set VAR=...`) > the environment
# variable of the same name > the default below (the same order as bake's own).
#
# Images hold frameworks only (Python + packages): the runner code is mounted read-only at
# run time. `python` on PATH must be the interpreter holding the frameworks.

variable "NAV_ORCH_VERSION" {
  # The nav-orch release these images belong to (kept equal to orchestrator.__version__ by a test).
  default = "0.1.0"
}

variable "SOURCE_URL" {
  # Where nav-orch's source lives; set it for published builds (--set SOURCE_URL=https://...).
  default = ""
}

# --- CUDA flavor: every image FROM the same NVIDIA NGC release ---------------------------

variable "NGC_RELEASE" {
  default = "25.10"
}

variable "REGISTRY" {
  # Prefix of the NGC base images (a local mirror on air-gapped clusters).
  default = "nvcr.io/nvidia/"
}

# What the default NGC_RELEASE documents; change them together with NGC_RELEASE.
# Sources: NVIDIA's Triton compatibility matrix lists the NGC 25.10 PyTorch build as
# torch 2.9.0a0+145a3a7bda.nv25.10; the Triton Inference Server release notes 25.10 (same NGC
# release) say it is based on CUDA 13.0.2.006. The TensorRT version of the PyTorch 25.10
# container could not be confirmed here, hence "from-base" (read it in the image:
# `python -c "import tensorrt; print(tensorrt.__version__)"`).
variable "NGC_TORCH_VERSION" {
  default = "2.9.0a0+145a3a7bda.nv25.10"
}

variable "NGC_CUDA_VERSION" {
  default = "13.0.2.006"
}

variable "NGC_MIN_DRIVER" {
  # The oldest driver branch the release's CUDA runs on (`nav-orch doctor` checks it): CUDA 13.0
  # needs R580 (CUDA 13.0 release notes); NGC's 25.10 notes add forward compatibility on
  # data-center GPUs with older branches through the CUDA compat package.
  default = "580"
}

variable "NGC_TENSORRT_VERSION" {
  default = "from-base"
}

variable "ONNXRUNTIME_GPU_VERSION" {
  # PyPI's onnxruntime-gpu 1.31.1 is built for CUDA 13 (its `cuda` extra requires
  # nvidia-cuda-runtime~=13.0), matching the CUDA 13.0 of NGC 25.10.
  default = "1.31.1"
}

variable "TORCHAO_VERSION" {
  # int8/fp8 torch.compile variants (runners/toolchains/torchao_plan.py). torchao's compatibility table
  # (pytorch/ao#2919; the check in torchao 0.14.1's own __init__) pairs 0.14.1 with torch 2.9.0:
  # NGC 25.10's 2.9.0a0 reads as 2.9.0 there (no "dev"/"git" in it), so its kernels load too. 0.13
  # is built for 2.8, 0.15 for 2.9.1, 0.16 for 2.10. Change it together with NGC_RELEASE.
  default = "0.14.1"
}

variable "MODELOPT_VERSION" {
  # nvidia-modelopt, TensorRT Model Optimizer's ONNX post-training quantization for int8/fp8
  # TensorRT plans. 0.42.0: the first release whose installation guide lists CUDA 13.x (with
  # TensorRT >= 10.0 and torch >= 2.6), and the one that fixed calibration on several samples in
  # the ONNX workflow; from 0.43 on it requires setuptools >= 80, and from 0.44 on onnx 1.21, either
  # of which NGC's pinned packages (/etc/pip/constraint.txt) may refuse (the base's onnx is kept;
  # NGC 25.10's version could not be confirmed here). Its [onnx] extra's onnxruntime-gpu (~1.22, a
  # CUDA 12 build) is not installed: the image keeps ONNXRUNTIME_GPU_VERSION, whose
  # onnxruntime.quantization still has every class 0.42.0 imports and patches, and with which its
  # int8 and fp8 ONNX quantization ran here on the CPU (images/pytorch/Dockerfile says how).
  default = "0.42.0"
}

# --- CPU flavor: a local Debian base (see `nav-orch images bootstrap`) ---------------------

variable "DEBIAN_BASE" {
  default = "nav-orch/debian:bookworm"
}

variable "TORCH_CPU_VERSION" {
  # Installed from the CPU wheel that `nav-orch images build` copies into the build context.
  default = "2.13.0"
}

variable "ONNX_VERSION" {
  default = "1.23.2"
}

variable "ONNXRUNTIME_VERSION" {
  default = "1.32.0"
}

variable "ONNXSCRIPT_VERSION" {
  default = "0.7.2"
}

variable "NUMPY_VERSION" {
  default = "2.4.6"
}

# --- Triton Inference Server (the Triton stage; README, "Triton stage") ---------------------

variable "PYTRITON_VERSION" {
  # CPU flavor: the nvidia-pytriton wheel whose tritonserver (Triton 2.51.0, the NGC 24.10
  # server, Python backend only) the image carries.
  default = "0.7.0"
}

variable "TRITON_CPU_SERVER_VERSION" {
  # What that tritonserver reports (GET /v2); change it together with PYTRITON_VERSION.
  default = "2.51.0"
}

variable "PERF_ANALYZER_CLIENT_VERSION" {
  # CPU flavor: the tritonclient manylinux1 wheel carrying a perf_analyzer binary. Later wheels
  # need glibc 2.38 (2.55+) or carry no binary (2.61+).
  default = "2.41.0"
}

variable "CUDA_RUNTIME_CU12_VERSION" {
  # libcudart.so.12, which that perf_analyzer links against (it never uses a GPU on the CPU flavor).
  default = "12.9.79"
}

variable "PYTHON_BACKEND_NUMPY_VERSION" {
  # The CPU flavor's Python backend stub is built against numpy 1's ABI (see its Dockerfile).
  default = "1.26.4"
}

variable "NGC_TRITON_VERSION" {
  # The Triton version of NGC's tritonserver:${NGC_RELEASE}-py3 (its release notes say).
  default = "from-base"
}

variable "TRITON_PYTHON_TORCH_VERSION" {
  # CUDA flavor: torch for the Python backend (ExportedProgram variants have no native backend).
  # Same major.minor as NGC_TORCH_VERSION, so programs exported there load here.
  default = "2.9.0"
}

# --- TensorFlow 2 and JAX (framework `tensorflow`, `jax`) -----------------------------------

variable "TENSORFLOW_CPU_VERSION" {
  # CPU flavor. tensorflow-cpu, keras, tf2onnx, onnx, onnxruntime and numpy below were installed
  # together on Python 3.11 from this host's pip and checked end to end (Keras -> SavedModel ->
  # tf2onnx -> ONNX Runtime; jax2tf -> SavedModel -> tf2onnx).
  default = "2.21.0"
}

variable "KERAS_VERSION" {
  # The Keras 3 that tensorflow-cpu 2.21 installs; pinned because it reads the `.keras` files.
  default = "3.15.1"
}

variable "TF2ONNX_VERSION" {
  default = "1.17.0"
}

variable "JAX_VERSION" {
  # jax and jaxlib. 0.5.3 is the last JAX whose jax2tf still converts to plain TensorFlow ops
  # (native_serialization=False, enable_xla=False); from 0.6 on jax2tf always emits StableHLO in
  # an XlaCallModule op, which tf2onnx cannot convert (checked here with 0.6.2 and 0.10.2), so a
  # newer JAX would lose the ONNX (and TensorRT, TF-TRT) variants of JAX models.
  default = "0.5.3"
}

variable "TF_NGC_RELEASE" {
  # CUDA flavor. NVIDIA stopped publishing the NGC TensorFlow container after 25.02, so the
  # TensorFlow image stays on that last release whatever NGC_RELEASE says (it is still tagged
  # nav-orch/tensorflow:${NGC_RELEASE}, the image set a run of that release uses).
  default = "25.02"
}

variable "JAX_NGC_RELEASE" {
  # CUDA flavor: NGC's JAX container (nvcr.io/nvidia/jax:<release>-py3); 25.04-py3 is a
  # published tag. Not built or checked from this host (no registry).
  default = "25.04"
}

variable "ONNXRUNTIME_GPU_CU12_VERSION" {
  # CUDA flavor of the TensorFlow and JAX images: NGC 25.02/25.04 carry CUDA 12, and PyPI's
  # onnxruntime-gpu 1.23.2 is a CUDA 12 build (its `cuda` extra requires nvidia-cuda-runtime-cu12~=12.0).
  default = "1.23.2"
}

# --- groups ------------------------------------------------------------------------------

group "default" {
  targets = ["cpu"]
}

# A target built FROM another's image names it in `contexts` ("target:NAME"): buildx bake then
# builds that one first, and so does `nav-orch images build` without buildx.
group "cpu" {
  targets = ["pytorch-cpu", "triton-cpu", "tensorflow-cpu", "jax-cpu"]
}

group "cuda" {
  targets = ["pytorch-cuda", "triton", "triton-sdk", "tensorflow-cuda", "jax-cuda"]
}

# --- targets -----------------------------------------------------------------------------

target "pytorch-cpu" {
  context    = "images/pytorch-cpu"
  dockerfile = "Dockerfile"
  args = {
    BASE_IMAGE          = "${DEBIAN_BASE}"
    TORCH_CPU_VERSION   = "${TORCH_CPU_VERSION}"
    ONNX_VERSION        = "${ONNX_VERSION}"
    ONNXRUNTIME_VERSION = "${ONNXRUNTIME_VERSION}"
    ONNXSCRIPT_VERSION  = "${ONNXSCRIPT_VERSION}"
    NUMPY_VERSION       = "${NUMPY_VERSION}"
  }
  tags = ["nav-orch/pytorch:cpu"]
  labels = {
    "org.opencontainers.image.title"       = "nav-orch PyTorch (CPU)"
    "org.opencontainers.image.description" = "nav-orch runner image: PyTorch ${TORCH_CPU_VERSION} (CPU), ONNX ${ONNX_VERSION}, ONNX Runtime ${ONNXRUNTIME_VERSION}, onnxscript ${ONNXSCRIPT_VERSION} on Debian bookworm"
    "org.opencontainers.image.version"     = "${NAV_ORCH_VERSION}"
    "org.opencontainers.image.source"      = "${SOURCE_URL}"
    # torch and numpy: BSD-3-Clause; onnx: Apache-2.0; onnxruntime, onnxscript: MIT.
    "org.opencontainers.image.licenses"    = "BSD-3-Clause AND Apache-2.0 AND MIT"
    "org.opencontainers.image.base.name"   = "${DEBIAN_BASE}"
    "org.nav-orch.flavor"                  = "cpu"
    "org.nav-orch.ngc-release"             = "none"
    "org.nav-orch.torch"                   = "${TORCH_CPU_VERSION}"
    "org.nav-orch.onnxruntime"             = "${ONNXRUNTIME_VERSION}"
    "org.nav-orch.cuda"                    = "none"
    "org.nav-orch.tensorrt"                = "none"
  }
}

target "pytorch-cuda" {
  context    = "images/pytorch"
  dockerfile = "Dockerfile"
  args = {
    BASE_IMAGE              = "${REGISTRY}pytorch:${NGC_RELEASE}-py3"
    ONNXRUNTIME_GPU_VERSION = "${ONNXRUNTIME_GPU_VERSION}"
    ONNXSCRIPT_VERSION      = "${ONNXSCRIPT_VERSION}"
    TORCHAO_VERSION         = "${TORCHAO_VERSION}"
    MODELOPT_VERSION        = "${MODELOPT_VERSION}"
  }
  tags = ["nav-orch/pytorch:${NGC_RELEASE}"]
  labels = {
    "org.opencontainers.image.title"       = "nav-orch PyTorch (NGC ${NGC_RELEASE})"
    "org.opencontainers.image.description" = "nav-orch runner image: NVIDIA NGC PyTorch ${NGC_RELEASE} plus onnxruntime-gpu ${ONNXRUNTIME_GPU_VERSION}, torchao ${TORCHAO_VERSION}, nvidia-modelopt ${MODELOPT_VERSION} (ONNX quantization) and onnxscript (the base's, else ${ONNXSCRIPT_VERSION})"
    "org.opencontainers.image.version"     = "${NAV_ORCH_VERSION}"
    "org.opencontainers.image.source"      = "${SOURCE_URL}"
    # The NGC base is under the NVIDIA Deep Learning Container License; onnxruntime-gpu, onnxscript:
    # MIT; torchao: BSD-3-Clause; nvidia-modelopt and its ONNX dependencies: Apache-2.0.
    "org.opencontainers.image.licenses"    = "LicenseRef-NVIDIA-Deep-Learning-Container-License AND MIT AND BSD-3-Clause AND Apache-2.0"
    "org.opencontainers.image.base.name"   = "${REGISTRY}pytorch:${NGC_RELEASE}-py3"
    "org.nav-orch.flavor"                  = "cuda"
    "org.nav-orch.ngc-release"             = "${NGC_RELEASE}"
    "org.nav-orch.torch"                   = "${NGC_TORCH_VERSION}"
    "org.nav-orch.onnxruntime"             = "${ONNXRUNTIME_GPU_VERSION}"
    "org.nav-orch.torchao"                 = "${TORCHAO_VERSION}"
    "org.nav-orch.modelopt"                = "${MODELOPT_VERSION}"
    # The packages images/pytorch/pins.py keeps at the base's version where the base has one (NGC's
    # /etc/pip/constraint.txt refuses any other), else installs at the Dockerfile's pin: their versions
    # are known only once built, so the image lists them in this file, not in a label.
    "org.nav-orch.kept-from-base"          = "onnxscript onnx-graphsurgeon ml_dtypes onnxslim polygraphy lief cppimport"
    "org.nav-orch.pins"                    = "/opt/nav-orch/pins.txt"
    "org.nav-orch.cuda"                    = "${NGC_CUDA_VERSION}"
    "org.nav-orch.tensorrt"                = "${NGC_TENSORRT_VERSION}"
  }
}

target "triton-cpu" {
  context    = "images/triton-cpu"
  dockerfile = "Dockerfile"
  contexts = {
    "nav-orch/pytorch:cpu" = "target:pytorch-cpu"
  }
  args = {
    BASE_IMAGE                   = "nav-orch/pytorch:cpu"
    PYTRITON_VERSION             = "${PYTRITON_VERSION}"
    PERF_ANALYZER_CLIENT_VERSION = "${PERF_ANALYZER_CLIENT_VERSION}"
    CUDA_RUNTIME_CU12_VERSION    = "${CUDA_RUNTIME_CU12_VERSION}"
    PYTHON_BACKEND_NUMPY_VERSION = "${PYTHON_BACKEND_NUMPY_VERSION}"
  }
  tags = ["nav-orch/triton:cpu"]
  labels = {
    "org.opencontainers.image.title"       = "nav-orch Triton Inference Server (CPU)"
    "org.opencontainers.image.description" = "tritonserver ${TRITON_CPU_SERVER_VERSION} (Python backend) from nvidia-pytriton ${PYTRITON_VERSION} and perf_analyzer from tritonclient ${PERF_ANALYZER_CLIENT_VERSION}, on nav-orch/pytorch:cpu"
    "org.opencontainers.image.version"     = "${NAV_ORCH_VERSION}"
    "org.opencontainers.image.source"      = "${SOURCE_URL}"
    # tritonserver, perf_analyzer, pytriton: BSD-3-Clause; the CUDA runtime: NVIDIA's license.
    "org.opencontainers.image.licenses"    = "BSD-3-Clause AND Apache-2.0 AND MIT AND LicenseRef-NVIDIA-CUDA-Toolkit-EULA"
    "org.opencontainers.image.base.name"   = "nav-orch/pytorch:cpu"
    "org.nav-orch.flavor"                  = "cpu"
    "org.nav-orch.ngc-release"             = "none"
    "org.nav-orch.tritonserver"            = "${TRITON_CPU_SERVER_VERSION}"
    "org.nav-orch.perf-analyzer"           = "${PERF_ANALYZER_CLIENT_VERSION}"
    "org.nav-orch.triton-backends"         = "python"
    "org.nav-orch.torch"                   = "${TORCH_CPU_VERSION}"
    "org.nav-orch.onnxruntime"             = "${ONNXRUNTIME_VERSION}"
    "org.nav-orch.cuda"                    = "none"
    "org.nav-orch.tensorrt"                = "none"
  }
}

target "triton" {
  context    = "images/triton"
  dockerfile = "Dockerfile"
  args = {
    BASE_IMAGE                  = "${REGISTRY}tritonserver:${NGC_RELEASE}-py3"
    TRITON_PYTHON_TORCH_VERSION = "${TRITON_PYTHON_TORCH_VERSION}"
  }
  tags = ["nav-orch/triton:${NGC_RELEASE}"]
  labels = {
    "org.opencontainers.image.title"       = "nav-orch Triton Inference Server (NGC ${NGC_RELEASE})"
    "org.opencontainers.image.description" = "NVIDIA NGC tritonserver ${NGC_RELEASE} plus torch ${TRITON_PYTHON_TORCH_VERSION} for the Python backend"
    "org.opencontainers.image.version"     = "${NAV_ORCH_VERSION}"
    "org.opencontainers.image.source"      = "${SOURCE_URL}"
    "org.opencontainers.image.licenses"    = "LicenseRef-NVIDIA-Deep-Learning-Container-License AND BSD-3-Clause"
    "org.opencontainers.image.base.name"   = "${REGISTRY}tritonserver:${NGC_RELEASE}-py3"
    "org.nav-orch.flavor"                  = "cuda"
    "org.nav-orch.ngc-release"             = "${NGC_RELEASE}"
    "org.nav-orch.tritonserver"            = "${NGC_TRITON_VERSION}"
    "org.nav-orch.torch"                   = "${TRITON_PYTHON_TORCH_VERSION}"
    "org.nav-orch.onnxruntime"             = "from-base"
    "org.nav-orch.cuda"                    = "${NGC_CUDA_VERSION}"
    # The plan version guard compares this with the TensorRT that built a plan: set
    # NGC_TENSORRT_VERSION for TensorRT plans to be served.
    "org.nav-orch.tensorrt"                = "${NGC_TENSORRT_VERSION}"
  }
}

target "triton-sdk" {
  context    = "images/triton-sdk"
  dockerfile = "Dockerfile"
  args = {
    BASE_IMAGE = "${REGISTRY}tritonserver:${NGC_RELEASE}-py3-sdk"
  }
  tags = ["nav-orch/triton-sdk:${NGC_RELEASE}"]
  labels = {
    "org.opencontainers.image.title"       = "nav-orch perf_analyzer (NGC ${NGC_RELEASE})"
    "org.opencontainers.image.description" = "NVIDIA NGC tritonserver ${NGC_RELEASE} SDK: perf_analyzer of the same release as the server"
    "org.opencontainers.image.version"     = "${NAV_ORCH_VERSION}"
    "org.opencontainers.image.source"      = "${SOURCE_URL}"
    "org.opencontainers.image.licenses"    = "LicenseRef-NVIDIA-Deep-Learning-Container-License"
    "org.opencontainers.image.base.name"   = "${REGISTRY}tritonserver:${NGC_RELEASE}-py3-sdk"
    "org.nav-orch.flavor"                  = "cuda"
    "org.nav-orch.ngc-release"             = "${NGC_RELEASE}"
    "org.nav-orch.tritonserver"            = "${NGC_TRITON_VERSION}"
    "org.nav-orch.cuda"                    = "${NGC_CUDA_VERSION}"
    "org.nav-orch.tensorrt"                = "${NGC_TENSORRT_VERSION}"
  }
}

target "tensorflow-cpu" {
  context    = "images/tensorflow-cpu"
  dockerfile = "Dockerfile"
  args = {
    BASE_IMAGE             = "${DEBIAN_BASE}"
    TENSORFLOW_CPU_VERSION = "${TENSORFLOW_CPU_VERSION}"
    KERAS_VERSION          = "${KERAS_VERSION}"
    TF2ONNX_VERSION        = "${TF2ONNX_VERSION}"
    ONNX_VERSION           = "${ONNX_VERSION}"
    ONNXRUNTIME_VERSION    = "${ONNXRUNTIME_VERSION}"
    NUMPY_VERSION          = "${NUMPY_VERSION}"
  }
  tags = ["nav-orch/tensorflow:cpu"]
  labels = {
    "org.opencontainers.image.title"       = "nav-orch TensorFlow (CPU)"
    "org.opencontainers.image.description" = "nav-orch runner image: tensorflow-cpu ${TENSORFLOW_CPU_VERSION}, Keras ${KERAS_VERSION}, tf2onnx ${TF2ONNX_VERSION}, ONNX ${ONNX_VERSION}, ONNX Runtime ${ONNXRUNTIME_VERSION} on Debian bookworm"
    "org.opencontainers.image.version"     = "${NAV_ORCH_VERSION}"
    "org.opencontainers.image.source"      = "${SOURCE_URL}"
    # tensorflow, keras, tf2onnx, onnx: Apache-2.0; onnxruntime: MIT; numpy: BSD-3-Clause.
    "org.opencontainers.image.licenses"    = "Apache-2.0 AND MIT AND BSD-3-Clause"
    "org.opencontainers.image.base.name"   = "${DEBIAN_BASE}"
    "org.nav-orch.flavor"                  = "cpu"
    "org.nav-orch.ngc-release"             = "none"
    "org.nav-orch.tensorflow"              = "${TENSORFLOW_CPU_VERSION}"
    "org.nav-orch.onnxruntime"             = "${ONNXRUNTIME_VERSION}"
    "org.nav-orch.cuda"                    = "none"
    "org.nav-orch.tensorrt"                = "none"
  }
}

target "jax-cpu" {
  context    = "images/jax-cpu"
  dockerfile = "Dockerfile"
  contexts = {
    "nav-orch/tensorflow:cpu" = "target:tensorflow-cpu"
  }
  args = {
    BASE_IMAGE  = "nav-orch/tensorflow:cpu"
    JAX_VERSION = "${JAX_VERSION}"
  }
  tags = ["nav-orch/jax:cpu"]
  labels = {
    "org.opencontainers.image.title"       = "nav-orch JAX (CPU)"
    "org.opencontainers.image.description" = "nav-orch runner image: jax/jaxlib ${JAX_VERSION} (CPU) on nav-orch/tensorflow:cpu (tensorflow-cpu ${TENSORFLOW_CPU_VERSION}, tf2onnx ${TF2ONNX_VERSION}, ONNX Runtime ${ONNXRUNTIME_VERSION})"
    "org.opencontainers.image.version"     = "${NAV_ORCH_VERSION}"
    "org.opencontainers.image.source"      = "${SOURCE_URL}"
    # jax, jaxlib and the TensorFlow image's packages: Apache-2.0; onnxruntime: MIT; numpy, scipy: BSD-3-Clause.
    "org.opencontainers.image.licenses"    = "Apache-2.0 AND MIT AND BSD-3-Clause"
    "org.opencontainers.image.base.name"   = "nav-orch/tensorflow:cpu"
    "org.nav-orch.flavor"                  = "cpu"
    "org.nav-orch.ngc-release"             = "none"
    "org.nav-orch.jax"                     = "${JAX_VERSION}"
    "org.nav-orch.tensorflow"              = "${TENSORFLOW_CPU_VERSION}"
    "org.nav-orch.onnxruntime"             = "${ONNXRUNTIME_VERSION}"
    "org.nav-orch.cuda"                    = "none"
    "org.nav-orch.tensorrt"                = "none"
  }
}

target "tensorflow-cuda" {
  context    = "images/tensorflow"
  dockerfile = "Dockerfile"
  args = {
    BASE_IMAGE                   = "${REGISTRY}tensorflow:${TF_NGC_RELEASE}-tf2-py3"
    TF2ONNX_VERSION              = "${TF2ONNX_VERSION}"
    ONNXRUNTIME_GPU_CU12_VERSION = "${ONNXRUNTIME_GPU_CU12_VERSION}"
  }
  tags = ["nav-orch/tensorflow:${NGC_RELEASE}"]
  labels = {
    "org.opencontainers.image.title"       = "nav-orch TensorFlow (NGC ${TF_NGC_RELEASE})"
    "org.opencontainers.image.description" = "nav-orch runner image: NVIDIA NGC TensorFlow ${TF_NGC_RELEASE} (the last NGC TensorFlow release; TF-TRT and TensorRT from the base) plus tf2onnx ${TF2ONNX_VERSION} and onnxruntime-gpu ${ONNXRUNTIME_GPU_CU12_VERSION}"
    "org.opencontainers.image.version"     = "${NAV_ORCH_VERSION}"
    "org.opencontainers.image.source"      = "${SOURCE_URL}"
    "org.opencontainers.image.licenses"    = "LicenseRef-NVIDIA-Deep-Learning-Container-License AND Apache-2.0 AND MIT"
    "org.opencontainers.image.base.name"   = "${REGISTRY}tensorflow:${TF_NGC_RELEASE}-tf2-py3"
    "org.nav-orch.flavor"                  = "cuda"
    "org.nav-orch.ngc-release"             = "${TF_NGC_RELEASE}"
    "org.nav-orch.tensorflow"              = "from-base"
    "org.nav-orch.onnxruntime"             = "${ONNXRUNTIME_GPU_CU12_VERSION}"
    "org.nav-orch.cuda"                    = "from-base"
    "org.nav-orch.tensorrt"                = "from-base"
  }
}

target "jax-cuda" {
  context    = "images/jax"
  dockerfile = "Dockerfile"
  args = {
    BASE_IMAGE                   = "${REGISTRY}jax:${JAX_NGC_RELEASE}-py3"
    TENSORFLOW_CPU_VERSION       = "${TENSORFLOW_CPU_VERSION}"
    TF2ONNX_VERSION              = "${TF2ONNX_VERSION}"
    ONNXRUNTIME_GPU_CU12_VERSION = "${ONNXRUNTIME_GPU_CU12_VERSION}"
  }
  tags = ["nav-orch/jax:${NGC_RELEASE}"]
  labels = {
    "org.opencontainers.image.title"       = "nav-orch JAX (NGC ${JAX_NGC_RELEASE})"
    "org.opencontainers.image.description" = "nav-orch runner image: NVIDIA NGC JAX ${JAX_NGC_RELEASE} plus tensorflow-cpu ${TENSORFLOW_CPU_VERSION} (for jax2tf), tf2onnx ${TF2ONNX_VERSION} and onnxruntime-gpu ${ONNXRUNTIME_GPU_CU12_VERSION}"
    "org.opencontainers.image.version"     = "${NAV_ORCH_VERSION}"
    "org.opencontainers.image.source"      = "${SOURCE_URL}"
    "org.opencontainers.image.licenses"    = "LicenseRef-NVIDIA-Deep-Learning-Container-License AND Apache-2.0 AND MIT"
    "org.opencontainers.image.base.name"   = "${REGISTRY}jax:${JAX_NGC_RELEASE}-py3"
    "org.nav-orch.flavor"                  = "cuda"
    "org.nav-orch.ngc-release"             = "${JAX_NGC_RELEASE}"
    "org.nav-orch.jax"                     = "from-base"
    "org.nav-orch.tensorflow"              = "${TENSORFLOW_CPU_VERSION}"
    "org.nav-orch.onnxruntime"             = "${ONNXRUNTIME_GPU_CU12_VERSION}"
    "org.nav-orch.cuda"                    = "from-base"
    "org.nav-orch.tensorrt"                = "none"
  }
}
