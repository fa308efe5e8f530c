"""TensorFlow runner: loads a Keras model or a SavedModel, exports it (SavedModel, ONNX through
tf2onnx, and the intermediates of TensorRT and TF-TRT), converts SavedModels with TF-TRT, and
verifies and profiles SavedModel and TF-TRT variants in TensorFlow. SavedModels that jax2tf
wrote (runners/toolchains/jax_runner.py) load here too: they use the same serving signature."""
from __future__ import annotations

import importlib.util
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np

# Before TensorFlow loads: its C++ info lines (oneDNN notices) would fill every runner log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import tensorflow as tf  # noqa: E402

from runners.contract.formats import FORMATS  # noqa: E402
from runners.contract.protocol import Framework, IOSpec, Job, JobResult  # noqa: E402
from runners.harness.common import (  # noqa: E402
    Handlers,
    LastLoaded,
    Skip,
    array_bytes,
    import_callable,
    key_by_names,
    load_npz,
    save_reference,
    sharing_a_load,
)
from runners.harness.measure import (  # noqa: E402
    Timing,
    batch_of,
    profile_result,
    profile_source,
    verification_result,
    verify_outputs,
)
from runners.toolchains.onnx_quantize import export_quantized, quantized_onnx  # noqa: E402
from runners.toolchains.tensorrt_build import (  # noqa: E402
    TFTRT_NATIVE_SEGMENT_ENV,
    tftrt_build_batches,
    tftrt_engine_problem,
    tftrt_fallback_reason,
)

SIGNATURE = "serving_default"
# tf2onnx 1.17 and the ONNX Runtime of the images both support opset 17; TensorRT 10 parses it too.
ONNX_OPSET = 17
TFTRT_PRECISIONS = {"fp32": "FP32", "fp16": "FP16"}


def versions() -> dict[str, str]:
    build = tf.sysconfig.get_build_info()
    found = {"tensorflow": tf.__version__, "cuda": str(build.get("cuda_version") or "none")}
    for name in ("keras", "tf2onnx", "onnxruntime"):
        if importlib.util.find_spec(name) is not None:
            found[name] = getattr(__import__(name), "__version__", "unknown")
    # "tensorrt" only where TF-TRT can use it: the host skips tf-trt variants on images without it
    # (runners/contract/formats.py).
    if tensorrt_missing() is None:
        try:
            from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils

            found["tensorrt"] = ".".join(map(str, _pywrap_py_utils.get_loaded_tensorrt_version()))
        except Exception:  # noqa: BLE001 - a version report must never fail a job
            found["tensorrt"] = "unknown"
    return found


def use_threads() -> None:
    """Honour the executor's thread share (OMP_NUM_THREADS), which TensorFlow does not read."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
        except RuntimeError:
            pass  # already initialized in this process: the first job's setting stands


def seed_everything(seed: int = 0) -> None:
    """Factories initialise weights randomly; every job must build the same model."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    if importlib.util.find_spec("keras") is not None:
        import keras

        keras.utils.set_random_seed(seed)


# --- the source model as one callable ------------------------------------------------------------

@dataclass
class Source:
    """A model as the runner uses it: call(dict of tensors keyed by input name) -> dict of output
    tensors keyed by output name. input_names is None where the model does not say (the samples'
    names are used); output_names None where it has none (output, output_0, ...)."""

    call: Callable[[dict[str, tf.Tensor]], Any]
    input_names: Optional[list[str]]
    output_names: Optional[list[str]]
    owner: Any = None  # what holds the model's variables (saved along with a SavedModel export)


def load_source(job: Job) -> Source:
    use_threads()
    source = job.source()
    path = Path(job.inputs.model) / source.file
    if source.form == "factory":
        factory = import_callable(job)
        seed_everything()
        model = factory(**source.args)
        return keras_source(model, f"{source.factory}()")
    if source.form == "keras":
        import keras

        return keras_source(keras.saving.load_model(str(path), compile=False), path.name)
    if source.form == "savedmodel":
        return savedmodel_source(path)
    raise ValueError(f"unknown model form {source.form!r} for the TensorFlow runner")


def keras_source(model: Any, what: str) -> Source:
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} returned {type(model).__name__}, not a keras.Model")
    try:
        input_names = [getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(model.inputs)]
    except (AttributeError, ValueError):  # a subclassed model that was never built
        input_names = None
    output_names = list(getattr(model, "output_names", None) or []) or None

    def call(inputs: dict[str, tf.Tensor]) -> Any:
        values = list(inputs.values())
        return model(values[0] if len(values) == 1 else values, training=False)

    return Source(call, input_names, output_names, owner=model)


def savedmodel_source(path: Path) -> Source:
    loaded = tf.saved_model.load(str(path))
    if SIGNATURE not in loaded.signatures:
        found = ", ".join(loaded.signatures) or "none"
        raise ValueError(f"{path.name} has no {SIGNATURE!r} signature (it has: {found}); "
                         "save it with signatures={'serving_default': ...}")
    fn = loaded.signatures[SIGNATURE]
    input_names = list(fn.structured_input_signature[1])
    output_names = list(fn.structured_outputs) if isinstance(fn.structured_outputs, dict) else None

    def call(inputs: dict[str, tf.Tensor]) -> Any:
        return fn(**inputs)

    return Source(call, input_names, output_names, owner=loaded)


def name_outputs(outputs: Any, names: Optional[list[str]]) -> dict[str, Any]:
    """The model's outputs keyed by name. Sorted by name: TensorFlow flattens a dict of outputs in
    key order (SavedModel signatures and tf2onnx's ONNX outputs alike), so every variant lists
    the outputs in the same order as the reference."""
    if isinstance(outputs, Mapping):
        named = dict(outputs)
    elif isinstance(outputs, (list, tuple)):
        named = dict(zip(names, outputs)) if names and len(names) == len(outputs) else \
            {f"output_{i}": t for i, t in enumerate(outputs)}
    else:
        named = {(names[0] if names and len(names) == 1 else "output"): outputs}
    return {name: named[name] for name in sorted(named)}


def to_numpy(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays = {}
    for name, value in outputs.items():
        array = np.asarray(value)
        arrays[name] = array.astype(np.float32) if array.dtype in (np.float16, tf.bfloat16.as_numpy_dtype) else array
    return arrays


def reference(job: Job) -> JobResult:
    source = load_source(job)
    samples = key_by_names(load_npz(job.inputs.samples), source.input_names, "the model")
    with tf.device(tf_device(job)):
        outputs = to_numpy(name_outputs(source.call({n: tf.constant(a) for n, a in samples.items()}),
                                        source.output_names))
    weights = getattr(source.owner, "weights", None) or []
    result = save_reference(job, samples, outputs,
                            weights=array_bytes((getattr(w, "path", w.name), np.asarray(w)) for w in weights))
    with tf.device(tf_device(job)):
        result.profile = profile_source(job, lambda size: timed_call(source, batch_of(samples, size), job))
    return result


# --- export --------------------------------------------------------------------------------------

def input_signature(io: IOSpec) -> list[tf.TensorSpec]:
    """One TensorSpec per input, named as the reference named it, batch axis dynamic."""
    return [tf.TensorSpec([None, *spec.shape[1:]], tf.as_dtype(spec.dtype), name=spec.name) for spec in io.inputs]


def serving_function(call: Callable[[dict[str, tf.Tensor]], Any], io: IOSpec,
                     output_names: Optional[list[str]]) -> tf.types.experimental.GenericFunction:
    """A tf.function with one flat tensor argument per input (the signature's input names are
    the specs' names) returning a dict keyed by the reference's output names."""
    names = [spec.name for spec in io.inputs]
    expected = [spec.name for spec in io.outputs]

    def serve(*args: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = name_outputs(call(dict(zip(names, args))), output_names)
        if len(outputs) != len(expected):
            raise ValueError(f"the model returned {len(outputs)} outputs, the reference {len(expected)}")
        return dict(zip(expected, outputs.values()))

    return tf.function(serve, input_signature=input_signature(io), autograph=False)


def check_exportable(job: Job, framework: Framework) -> None:
    """What the registry says `framework`'s models export to, and in which precisions (planning never
    asks for more; a job written by hand is told why). A quantized variant is exported in fp32, then
    quantized (write_variant)."""
    fmt = FORMATS[job.format_name()]
    if framework not in fmt.frameworks:
        raise Skip(f"the {framework} runner cannot export {fmt.name}")
    precisions = fmt.precisions_from(framework)
    if job.precision not in precisions and fmt.quantizer(job.precision, job.quantization) is None:
        raise Skip(f"{fmt.name} variants of {framework} models are exported in {', '.join(precisions)} only "
                   "(tf-trt and tensorrt lower precision themselves, on a GPU)")


def export(job: Job) -> JobResult:
    check_exportable(job, "tensorflow")
    source = load_source(job)
    serve = serving_function(source.call, job.io_spec(), source.output_names)
    target = Path(job.output_dir) / FORMATS[job.format_name()].export_file
    write_variant(job, serve, target, source.owner)
    return JobResult(job.id, job.kind, "ok", artifact=target.name)


def write_variant(job: Job, serve: Any, target: Path, owner: Any) -> None:
    """`write_export` of the job's variant; an int8 ONNX variant is written in fp32, then quantized
    by ONNX Runtime (runners/toolchains/onnx_quantize.py). Shared with the JAX runner."""
    if quantized_onnx(job):
        export_quantized(job, lambda fp32: write_export(job.format_name(), serve, job.io_spec(), fp32, owner), target)
    else:
        write_export(job.format_name(), serve, job.io_spec(), target, owner)


def write_export(fmt: str, serve: Any, io: IOSpec, target: Path, owner: Any) -> None:
    """Write `serve` (a tf.function with a full input signature) as the export of `fmt`: a
    SavedModel folder (savedmodel; the tf-trt intermediate) or an ONNX file (onnx; the tensorrt
    intermediate). `owner` holds the variables `serve` uses: tracked, so the SavedModel saves them.
    Shared with the JAX runner."""
    if fmt in ("savedmodel", "tf-trt"):
        save_savedmodel(serve, target, owner)
    else:
        save_onnx(serve, io, target)


def save_savedmodel(serve: Any, target: Path, owner: Any) -> None:
    module = tf.Module()
    module.owner = owner
    module.serve = serve
    tf.saved_model.save(module, str(target), signatures={SIGNATURE: serve.get_concrete_function()})


def save_onnx(serve: Any, io: IOSpec, target: Path) -> None:
    import tf2onnx

    # from_function keeps the signature's input names and dynamic batch axis (None -> a symbolic dim).
    model, _ = tf2onnx.convert.from_function(serve, input_signature=input_signature(io), opset=ONNX_OPSET)
    # tf2onnx only logs the TensorFlow ops it cannot convert and leaves them in the graph: say which.
    left = unconverted_ops(model)
    if left:
        raise ValueError(f"tf2onnx {tf2onnx.__version__} cannot convert these TensorFlow ops to ONNX: "
                         f"{', '.join(left)}")
    target.write_bytes(model.SerializeToString())


def unconverted_ops(model: Any) -> list[str]:
    """Op types of the ONNX graph (and its subgraphs) that no ONNX schema defines."""
    import onnx

    found: set[str] = set()

    def walk(graph: Any) -> None:
        for node in graph.node:
            if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
                found.add(node.op_type)
            for attribute in node.attribute:
                for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                    walk(sub)

    walk(model.graph)
    return sorted(found)


# --- TF-TRT --------------------------------------------------------------------------------------

def tensorrt_missing() -> Optional[str]:
    """Why TF-TRT cannot run here, or None."""
    if not tf.test.is_built_with_cuda():
        return f"TF-TRT needs TensorFlow built with CUDA and TensorRT; this image has TensorFlow {tf.__version__} " \
               "for CPUs (no TensorRT)"
    try:
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils

        if not _pywrap_py_utils.is_tensorrt_enabled():
            return f"TensorFlow {tf.__version__} here was built without TensorRT: TF-TRT cannot convert"
    except ImportError:
        return f"TensorFlow {tf.__version__} here has no TF-TRT module"
    return None


def convert(job: Job) -> JobResult:
    """TF-TRT: TrtGraphConverterV2 on the exported SavedModel, engines built for the samples' batch
    (verification) and every batch size that will be profiled (dynamic shapes, one optimization
    profile each); a conversion that leaves no TensorRT engine op is no TF-TRT variant."""
    if job.format != "tf-trt":
        raise Skip(f"the TensorFlow runner converts tf-trt only, not {job.format}")
    reason = tensorrt_missing()
    if reason:
        raise Skip(reason)
    if not job.device.startswith("cuda") or not tf.config.list_physical_devices("GPU"):
        raise Skip("TF-TRT builds TensorRT engines for a GPU, and this job has none")
    if job.precision not in TFTRT_PRECISIONS:
        raise Skip(f"TF-TRT has no {job.precision} precision mode (it has FP32, FP16, INT8)")
    from tensorflow.python.compiler.tensorrt import trt_convert as trt

    converter = trt.TrtGraphConverterV2(
        input_saved_model_dir=job.inputs.export,
        input_saved_model_signature_key=SIGNATURE,
        precision_mode=TFTRT_PRECISIONS[job.precision],
        use_dynamic_shape=True,
        dynamic_shape_profile_strategy="Optimal",
    )
    converted = converter.convert()
    graph = converted.graph.as_graph_def()
    problem = tftrt_engine_problem([node.op for node in graph.node] +
                                   [node.op for function in graph.library.function for node in function.node_def])
    if problem:
        raise Skip(problem)
    # Keyed by the signature's input names: the converted function's flat inputs are not in the
    # declared order (tensorflow#50630), and build() passes a dict as keyword arguments, which the
    # signature's function type binds by name (trt_convert.py _convert_to_tensor).
    arrays = key_by_names(load_npz(job.inputs.samples), list(converted.structured_input_signature[1]),
                          "the TF-TRT function")
    sizes = tftrt_build_batches(next(iter(arrays.values())).shape[0], job.batch_sizes)

    def input_fn() -> Iterator[dict[str, tf.Tensor]]:
        for size in sizes:
            yield {name: tf.constant(array) for name, array in batch_of(arrays, size).items()}

    with engines_only(job, {name: array.shape for name, array in arrays.items()}, sizes):
        converter.build(input_fn=input_fn)
    target = Path(job.output_dir) / FORMATS[job.format].artifact
    converter.save(str(target))
    return JobResult(job.id, job.kind, "ok", artifact=target.name)


@contextmanager
def engines_only(job: Job, shapes: Mapping[str, Sequence[int]], batch_sizes: Sequence[int] = ()) -> Iterator[None]:
    """Run a tf-trt variant with no fallback to TensorFlow: where a TRTEngineOp would run its segment
    natively (no engine for the input shapes, an engine that failed to build or run), the call fails
    instead, with the reason, so a tf-trt variant is built, verified and timed only as TensorRT ran
    it. Other formats hold no engine op and run as they are. `shapes`, `batch_sizes`: for the reason."""
    if job.format != "tf-trt":
        yield
        return
    previous = os.environ.get(TFTRT_NATIVE_SEGMENT_ENV)
    # Read at every TRTEngineOp call (trt_engine_op.cc), so it holds for this block only.
    os.environ[TFTRT_NATIVE_SEGMENT_ENV] = "false"
    try:
        yield
    except tf.errors.AbortedError as error:
        reason = tftrt_fallback_reason(str(error.message), shapes, batch_sizes)
        if reason is None:
            raise
        raise RuntimeError(reason) from error
    finally:
        if previous is None:
            os.environ.pop(TFTRT_NATIVE_SEGMENT_ENV, None)
        else:
            os.environ[TFTRT_NATIVE_SEGMENT_ENV] = previous


# --- verify and profile --------------------------------------------------------------------------

def tf_device(job: Job) -> str:
    if job.device.startswith("cuda"):
        if not tf.config.list_physical_devices("GPU"):
            # Timing a GPU run's variant on the CPU would mislead the selection.
            raise Skip(f"TensorFlow {tf.__version__} here sees no GPU (a CPU-only build, or no CUDA)")
        return "/GPU:0"
    return "/CPU:0"


def load_variant(job: Job, loaded: LastLoaded) -> Source:
    """The variant's serving signature; verify and profile in one process share one load."""

    def load() -> Source:
        use_threads()
        if job.format not in ("savedmodel", "tf-trt"):
            raise Skip(f"the TensorFlow runner does not run {job.format} variants")
        return savedmodel_source(Path(job.inputs.artifact))

    return loaded.get((job.format, job.inputs.artifact, job.device), load)


def run_variant(variant: Source, inputs: dict[str, tf.Tensor], reference_names: list[str]) -> dict[str, Any]:
    outputs = name_outputs(variant.call(inputs), variant.output_names)
    if len(outputs) != len(reference_names):
        raise ValueError(f"the variant returned {len(outputs)} outputs, the source model {len(reference_names)}")
    if set(outputs) == set(reference_names):
        return {name: outputs[name] for name in reference_names}
    return dict(zip(reference_names, outputs.values()))


def verify(job: Job, loaded: LastLoaded) -> JobResult:
    variant = load_variant(job, loaded)
    device = tf_device(job)
    reference_outputs = load_npz(job.inputs.reference)
    samples = key_by_names(load_npz(job.inputs.samples), variant.input_names, "the model")
    with tf.device(device), engines_only(job, {name: array.shape for name, array in samples.items()}):
        inputs = {name: tf.constant(array) for name, array in samples.items()}
        outputs = to_numpy(run_variant(variant, inputs, list(reference_outputs)))
    return verification_result(job, verify_outputs(outputs, reference_outputs, job.tolerances, job.budgets))


def timed_call(model: Source, arrays: Mapping[str, np.ndarray], job: Job) -> Callable[[], None]:
    """One synchronous call of `model` on `arrays`, its device work included, for timing."""
    on_gpu = tf_device(job).startswith("/GPU")
    sync = getattr(tf.experimental, "sync_devices", None) if on_gpu else None
    inputs = {name: tf.constant(array) for name, array in arrays.items()}

    def run() -> None:
        outputs = model.call(inputs)
        if sync is not None:
            sync()
        elif on_gpu:  # no sync_devices: reading a value waits for the GPU
            for value in tf.nest.flatten(outputs):
                value.numpy()

    return run


def profile(job: Job, loaded: LastLoaded, timing: Timing) -> JobResult:
    variant = load_variant(job, loaded)
    samples = key_by_names(load_npz(job.inputs.samples), variant.input_names, "the model")
    with tf.device(tf_device(job)), engines_only(job, {name: array.shape for name, array in samples.items()},
                                                 job.batch_sizes):
        return profile_result(job, lambda size: timed_call(variant, batch_of(samples, size), job), timing)


def handlers(timing: Timing) -> Handlers:
    """This runner's jobs, for one runner process."""
    return sharing_a_load({"reference": reference, "export": export, "convert": convert},
                          {"verify": verify, "profile": partial(profile, timing=timing)})
