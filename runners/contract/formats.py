"""The format registry: everything nav-orch knows about each format, in one table.

Standard library only: the host plans variants, jobs and Triton deployments from it, and the
runners inside every image build and load variants from it. Adding a format means one entry
here plus its runner functions (an exporter in the source framework's runner, a loader in the
runner that verifies and profiles it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, get_args

from runners.contract.protocol import FormatName, Framework, MemoryFormat, Precision, Quantization

# The precisions searched by default; the quantized ones (protocol QUANTIZED) only where asked for.
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16")
MEMORY_FORMATS: tuple[MemoryFormat, ...] = ("contiguous", "channels_last")
FRAMEWORKS: tuple[Framework, ...] = get_args(Framework)


@dataclass(frozen=True)
class Toolchain:
    """A package a format needs beyond its runner's framework. Runners report its version, keyed by
    `module`, when the module imports in the image; the host skips the format's variants where it
    is missing. The import name, not a distribution name: the same module comes from NGC's
    `tensorrt` wheel or from PyPI's `tensorrt-cu12-bindings` / `tensorrt-cu13-bindings`."""

    module: str
    title: str


@dataclass(frozen=True)
class Conversion:
    """A format built in two steps: the source framework's runner exports `intermediate` (on the
    CPUs, unless `Format.exported_in_check`), then `runner` converts it where the variant will run
    (an engine is built for its GPU)."""

    runner: str
    intermediate: str


@dataclass(frozen=True)
class Loader:
    """How a variant is loaded where it runs: `name` is its function in runners/serving/variant_loader.py
    (or, for a SavedModel, the TensorFlow runner's; for a compiled variant, its source compiled there),
    `package` the Python package that takes."""

    name: str
    package: str


@dataclass(frozen=True)
class TritonServing:
    """How Triton serves the artifact: a native backend (with its platform and the model file name
    it expects), and/or the Python backend (runners/serving/triton_python_model.py, which runs the
    format's loader)."""

    backend: Optional[str] = None
    platform: Optional[str] = None
    file: Optional[str] = None
    python_backend: bool = False


@dataclass(frozen=True)
class Quantizer:
    """One way a format quantizes: to `precision` (int8, fp8) by `method` (dynamic: scales from each
    call's activations; static: calibrated on samples), the model in `quantizes` (the fp32 ONNX export;
    torchao: the module in bf16), with the package it takes, on GPUs only or not."""

    precision: Precision
    method: Quantization
    quantizes: Precision = "fp32"
    toolchain: Optional[Toolchain] = None
    gpu_only: bool = False


TENSORRT = Toolchain("tensorrt", "TensorRT")
# Not a module: the runners report ONNX Runtime's version under this key where it has its CUDA
# execution provider (runners/harness/common.py gpu_runtime_versions); plain onnxruntime has none.
ONNXRUNTIME_CUDA = Toolchain("onnxruntime+cuda", "ONNX Runtime's CUDA execution provider (onnxruntime-gpu)")
TORCHAO = Toolchain("torchao", "torchao")
MODELOPT = Toolchain("modelopt", "TensorRT Model Optimizer")
# ONNX Runtime's own quantization: dynamic for matmul-heavy models, static (QDQ, calibrated) for
# convolutional ones; both are tried where asked for, and the one that verifies and wins is chosen.
ONNX_QUANTIZERS = (Quantizer("int8", "dynamic"), Quantizer("int8", "static"))
# torchao on the module before torch.compile: int8 dynamic activations with int8 weights, and fp8
# dynamic activations and weights (rowwise scales; compute capability 8.9 and later).
TORCHAO_QUANTIZERS = (Quantizer("int8", "dynamic", "bf16", TORCHAO, gpu_only=True),
                      Quantizer("fp8", "dynamic", "bf16", TORCHAO, gpu_only=True))
TORCHSCRIPT_SERVING = TritonServing("pytorch", "pytorch_libtorch", "model.pt", python_backend=True)
TORCHSCRIPT = Loader("torchscript", "torch")
COMPILED = Loader("torch-compile", "torch")


@dataclass(frozen=True)
class Format:
    name: FormatName
    frameworks: tuple[Framework, ...]  # source frameworks that export to it
    runner: str  # the runner module that verifies and profiles it (runners/toolchains/RUNNER_runner.py)
    artifact: str  # file (or folder) inside the variant's folder
    loader: Loader
    conversion: Optional[Conversion] = None
    toolchain: Optional[Toolchain] = None
    # Packages its runner needs besides the toolchain, which an image may lack (the versions the
    # runners report say): the TensorRT runner keeps its GPU buffers in torch tensors, and the
    # TensorFlow and JAX images carry no torch.
    runner_needs: tuple[str, ...] = ()
    precisions: tuple[Precision, ...] = PRECISIONS
    # Where a source framework's runner exports fewer of them: the ones it does, by framework.
    framework_precisions: tuple[tuple[Framework, tuple[Precision, ...]], ...] = ()
    quantizers: tuple[Quantizer, ...] = ()  # its int8/fp8 variants, one per quantizer
    # Its export is in this precision whatever the variant's: TensorRT lowers precision itself, from
    # an fp32 graph, keeping fp32 where a layer needs it.
    export_precision: Optional[Precision] = None
    # Its artifact is an engine that only the same version of this toolchain runs, or embeds such
    # engines: the Triton stage serves it only from an image whose version matches
    # (orchestrator/triton/tensorrt_guard.py).
    engine_of: Optional[Toolchain] = None
    # Its engines are embedded in a TorchScript file (Torch-TensorRT), which may hold none where every
    # part of the graph fell back to torch: the guard reads the file for them.
    engines_embedded: bool = False
    # Layouts the runner can give the weights and 4-D inputs: the torch formats' choice; ONNX and
    # TensorRT choose their own.
    memory_formats: tuple[MemoryFormat, ...] = ("contiguous",)
    gpu_only: bool = False
    # torch.compile's mode, for a format compiled where it runs: its artifact holds the options.
    compile_mode: Optional[str] = None
    # A long compile (about a minute per batch size for ResNet-50 on an H100): on GPUs it gets a
    # session of its own, after the other formats (orchestrator/run/planning.py compiled_skip_reason).
    compiled: bool = False
    # A trace records the device the model's own code makes tensors on (BERT's position ids), so a
    # variant traced on the CPUs fails on a GPU: on GPUs it is exported in its check session.
    traced_on_device: bool = False
    # Its exported program is compiled on the GPU (Torch-TensorRT): a program moved there from the CPUs
    # goes through the fake-tensor path that failed torch.compile (variant_loader.place_program), so on
    # GPUs it is exported in its check session, on the GPU that compiles it.
    compiled_from_program: bool = False
    # Converted from a TensorFlow graph by a tool that reads only plain TensorFlow ops (tf2onnx,
    # TF-TRT): a JAX source must lower to such ops, not to StableHLO.
    plain_tf_ops: bool = False
    # On GPUs it runs only where the runners report this (ONNX Runtime's CUDA execution provider): a
    # variant that cannot run there is skipped before its export.
    gpu_runtime: Optional[Toolchain] = None
    # On GPUs, left out of the default search where one of these formats is searched: it ran slower
    # than they did in every model measured (orchestrator/run/planning.py search_cut_reason).
    outrun_on_gpus_by: tuple[FormatName, ...] = ()
    triton: Optional[TritonServing] = None
    default: bool = True  # searched when --formats is not given (gpu_only ones only on GPUs)

    def precisions_from(self, framework: Framework) -> tuple[Precision, ...]:
        """The float precisions a variant of this format exported from `framework` can be in."""
        return dict(self.framework_precisions).get(framework, self.precisions)

    def quantizer(self, precision: Precision, method: Quantization) -> Optional[Quantizer]:
        """How it quantizes to `precision` by `method`; None for a float variant (or no such way)."""
        return next((q for q in self.quantizers if (q.precision, q.method) == (precision, method)), None)

    @property
    def exported_in_check(self) -> bool:
        """On GPUs, exported in its check session instead of on the CPUs before it: a trace, which
        records its device; a program compiled where it runs, which must not be moved there from the
        CPUs; and a compiled format, whose export only fixes its options, so that its long compile
        starts as soon as the reference has run, not after a runner's cold start among the other
        exports."""
        return self.traced_on_device or self.compiled_from_program or self.compiled

    @property
    def export_file(self) -> str:
        """What the export job writes: the intermediate of a two-step format, else the artifact."""
        return self.conversion.intermediate if self.conversion else self.artifact


# Exported from TensorFlow or JAX in fp32 only: TF-TRT and TensorRT lower precision themselves, and a
# half-precision SavedModel or tf2onnx graph would need the model rebuilt under a Keras dtype policy.
TF_FP32_ONLY: tuple[tuple[Framework, tuple[Precision, ...]], ...] = (("tensorflow", ("fp32",)), ("jax", ("fp32",)))

# In search order: the variants of a framework come in the order its formats appear here.
REGISTRY: tuple[Format, ...] = (
    Format("torchscript-trace", ("torch",), "torch", "model.ts", TORCHSCRIPT, memory_formats=MEMORY_FORMATS,
           traced_on_device=True, triton=TORCHSCRIPT_SERVING),
    Format("torchscript-script", ("torch",), "torch", "model.ts", TORCHSCRIPT, memory_formats=MEMORY_FORMATS,
           triton=TORCHSCRIPT_SERVING),
    Format("savedmodel", ("tensorflow", "jax"), "tensorflow", "savedmodel", Loader("savedmodel", "tensorflow"),
           precisions=("fp32",), triton=TritonServing("tensorflow", "tensorflow_savedmodel", "model.savedmodel")),
    # ONNX Runtime lacks bf16 kernels for most operators.
    Format("onnx", ("torch", "tensorflow", "jax", "onnx"), "onnx", "model.onnx", Loader("onnxruntime", "onnxruntime"),
           precisions=("fp32", "fp16"), framework_precisions=TF_FP32_ONLY, quantizers=ONNX_QUANTIZERS,
           plain_tf_ops=True, gpu_runtime=ONNXRUNTIME_CUDA,
           triton=TritonServing("onnxruntime", "onnxruntime_onnx", "model.onnx", python_backend=True)),
    Format("exported-program", ("torch",), "torch", "model.pt2", Loader("exported-program", "torch"),
           memory_formats=MEMORY_FORMATS, outrun_on_gpus_by=("torchscript-trace", "torch-compile-cudagraphs"),
           triton=TritonServing(python_backend=True)),
    # AOTInductor: the ExportedProgram compiled ahead of time for its device into a package that loads
    # without compiling. A long compile (36 s for a small MLP on 2 busy CPU cores), so opt-in.
    Format("torch-aoti", ("torch",), "torch", "model.aoti.pt2", Loader("torch-aoti", "torch"), compiled=True,
           memory_formats=MEMORY_FORMATS, triton=TritonServing(python_backend=True), default=False),
    # Plain torch.compile is opt-in: on CPUs its compile time (half a minute for a small MLP on 2
    # cores) seldom pays off, and on GPUs mode="reduce-overhead" measured faster.
    # Compiled where they run: the source in its runner, and in a server the ExportedProgram its export
    # writes (the variant's precision and layout fixed in it) with its options, warmed at every batch
    # size before the server is ready. A quantized one (torchao) has only its source, which no server has.
    Format("torch-compile", ("torch",), "torch", "compiled", COMPILED, compile_mode="default",
           compiled=True, memory_formats=MEMORY_FORMATS, quantizers=TORCHAO_QUANTIZERS, default=False,
           triton=TritonServing(python_backend=True)),
    Format("torch-compile-cudagraphs", ("torch",), "torch", "compiled", COMPILED,
           compile_mode="reduce-overhead", compiled=True, memory_formats=MEMORY_FORMATS, quantizers=TORCHAO_QUANTIZERS,
           gpu_only=True, triton=TritonServing(python_backend=True)),
    # Its TorchScript embeds TensorRT engines: the same version constraint as a plan's.
    Format("torch-tensorrt", ("torch",), "torch", "model.ts", Loader("torch-tensorrt", "torch_tensorrt"),
           conversion=Conversion("torch", "model.pt2"), toolchain=Toolchain("torch_tensorrt", "Torch-TensorRT"),
           gpu_only=True, compiled_from_program=True, engine_of=TENSORRT, engines_embedded=True,
           triton=TORCHSCRIPT_SERVING),
    # int8/fp8 plans from a Q/DQ ONNX model that TensorRT Model Optimizer calibrates on the samples.
    Format("tensorrt", ("torch", "tensorflow", "jax", "onnx"), "tensorrt", "model.plan", Loader("tensorrt", "tensorrt"),
           conversion=Conversion("tensorrt", "model.onnx"), toolchain=TENSORRT, runner_needs=("torch",), gpu_only=True,
           plain_tf_ops=True, export_precision="fp32", engine_of=TENSORRT,
           quantizers=(Quantizer("int8", "static", toolchain=MODELOPT), Quantizer("fp8", "static", toolchain=MODELOPT)),
           triton=TritonServing("tensorrt", "tensorrt_plan", "model.plan")),
    # TF-TRT's precision modes are FP32, FP16 and INT8 (which needs its own calibration: not built).
    Format("tf-trt", ("tensorflow", "jax"), "tensorflow", "tftrt-savedmodel", Loader("savedmodel", "tensorflow"),
           precisions=("fp32", "fp16"), conversion=Conversion("tensorflow", "savedmodel"), toolchain=TENSORRT,
           gpu_only=True, plain_tf_ops=True),
    # `nav-orch profile file.py:function`: the callable itself, profiled only (no artifact).
    Format("python", (), "python", "", Loader("python-function", "numpy"), default=False),
)

FORMATS: dict[str, Format] = {entry.name: entry for entry in REGISTRY}  # keyed by FormatName
TOOLCHAINS: tuple[Toolchain, ...] = tuple(dict.fromkeys(
    [*(f.toolchain for f in REGISTRY if f.toolchain),
     *(q.toolchain for f in REGISTRY for q in f.quantizers if q.toolchain)]))
RUNNER_NEEDS: tuple[str, ...] = tuple(dict.fromkeys(package for f in REGISTRY for package in f.runner_needs))


def formats_of(framework: str) -> list[Format]:
    return [entry for entry in REGISTRY if framework in entry.frameworks]


def default_formats(framework: str, on_gpu: bool) -> list[FormatName]:
    return [f.name for f in formats_of(framework) if f.default and (on_gpu or not f.gpu_only)]


def default_memory_formats(on_gpu: bool) -> list[MemoryFormat]:
    """channels_last is searched on GPUs, where convolutions in it measured faster (ResNet-50 fp16
    compiled on an H100: 1.047x at batch 64); a model without 4-D convolutions skips it."""
    return list(MEMORY_FORMATS) if on_gpu else ["contiguous"]


def default_precisions(on_gpu: bool) -> list[Precision]:
    """Half precisions are searched on GPUs; CPUs seldom run them faster."""
    return list(PRECISIONS) if on_gpu else ["fp32"]
