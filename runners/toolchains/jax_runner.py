"""JAX runner: a `file.py:factory` returning `(apply_fn, params)`, called as apply_fn(params,
*inputs). The reference comes from JAX itself; exports go through jax2tf into the TensorFlow
runner's SavedModel layout (so that runner verifies and profiles them), then tf2onnx for ONNX
and the TensorRT intermediate. Runs in the JAX image, which is the TensorFlow image plus JAX."""
from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np

from runners.contract.formats import FORMATS
from runners.contract.protocol import IOSpec, Job, JobResult
from runners.harness.common import Handlers, Skip, array_bytes, import_callable, key_by_names, load_npz, save_reference
from runners.harness.measure import Timing, inputs_at, profile_source
from runners.toolchains import tensorflow_runner as tfr  # sets TensorFlow's log level before it loads

# isort: split
# JAX after TensorFlow: both load their own XLA; this order is the tested one.
import jax
import tensorflow as tf
from jax.experimental import jax2tf


def versions() -> dict[str, str]:
    found = {"jax": jax.__version__}
    if importlib.util.find_spec("jaxlib") is not None:
        import jaxlib

        found["jaxlib"] = getattr(jaxlib, "__version__", "unknown")
    return {**tfr.versions(), **found}


def load_function(job: Job) -> tuple[Callable[..., Any], Any]:
    """(apply_fn, params) from the factory; the seeds the TensorFlow runner fixes are fixed first
    (JAX's own randomness takes explicit keys, so the factory's PRNGKey decides the weights)."""
    factory = import_callable(job)
    tfr.seed_everything()
    source = job.source()
    made = factory(**source.args)
    if not (isinstance(made, tuple) and len(made) == 2 and callable(made[0])):
        raise TypeError(f"{source.factory}() returned {type(made).__name__}; expected (apply_fn, params)")
    return made


def input_names(apply_fn: Callable[..., Any]) -> Optional[list[str]]:
    """apply_fn's parameter names after `params`, or None where it takes *args."""
    try:
        params = list(inspect.signature(apply_fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind not in positional for p in params if p.default is inspect.Parameter.empty):
        return None
    return [p.name for p in params if p.kind in positional]


def reference(job: Job) -> JobResult:
    apply_fn, params = load_function(job)
    names = input_names(apply_fn)
    samples = load_npz(job.inputs.samples)
    samples = key_by_names(samples, names, f"{job.source().factory}'s apply_fn")
    outputs = apply_fn(params, *(jax.numpy.asarray(a) for a in samples.values()))
    arrays = tfr.to_numpy({name: np.asarray(value) for name, value in tfr.name_outputs(outputs, None).items()})
    leaves = jax.tree_util.tree_leaves_with_path(params)
    result = save_reference(job, samples, arrays, weights=array_bytes(
        (jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in leaves))

    def call_at(batch_size: int) -> Callable[[], None]:
        batch = [jax.device_put(a) for a in inputs_at(samples, result.io, batch_size).values()]
        return lambda: jax.block_until_ready(apply_fn(params, *batch))

    result.profile = profile_source(job, call_at)
    return result


def polymorphic_shapes(io: IOSpec) -> list[Optional[str]]:
    """params static; every input's axis 0 the symbolic batch `b`, the other axes as sampled."""
    return [None, *(f"(b, {', '.join(str(d) for d in spec.shape[1:])})" if len(spec.shape) > 1 else "(b,)"
                    for spec in io.inputs)]


def convert_function(apply_fn: Callable[..., Any], io: IOSpec, plain_ops: bool) -> Callable[..., Any]:
    """jax2tf.convert with a polymorphic batch. plain_ops: lower to ordinary TensorFlow ops
    (native_serialization=False, enable_xla=False), which tf2onnx and TF-TRT read; else JAX's
    default native serialization (StableHLO in an XlaCallModule op), which only TensorFlow runs."""
    # with_gradient=False would add PreventGradient ops, which tf2onnx cannot convert.
    options: dict[str, Any] = dict(polymorphic_shapes=polymorphic_shapes(io), with_gradient=True)
    if plain_ops:
        options.update(native_serialization=False, enable_xla=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # both options are deprecated in newer JAX
        return jax2tf.convert(apply_fn, **options)


def uses_xla_call_module(concrete: Any) -> bool:
    graph = concrete.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    ops |= {node.op for function in graph.library.function for node in function.node_def}
    return "XlaCallModule" in ops


def export(job: Job) -> JobResult:
    tfr.check_exportable(job, "jax")
    apply_fn, params = load_function(job)
    # The weights become variables of the SavedModel (not graph constants: a large model would
    # pass the 2 GB limit of a GraphDef).
    owner = tf.Module()
    owner.params = tf.nest.map_structure(lambda a: tf.Variable(np.asarray(a), trainable=False), params)
    serve = serving(apply_fn, owner, job.io_spec(), job.format_name())
    target = Path(job.output_dir) / FORMATS[job.format_name()].export_file
    tfr.write_variant(job, serve, target, owner)
    return JobResult(job.id, job.kind, "ok", artifact=target.name)


def serving(apply_fn: Callable[..., Any], owner: tf.Module, io: IOSpec, fmt: str) -> Any:
    """The serving tf.function of the export, traced once here so conversion errors surface with
    the format they concern."""
    def build(plain_ops: bool) -> Any:
        converted = convert_function(apply_fn, io, plain_ops)
        serve = tfr.serving_function(lambda inputs: converted(owner.params, *inputs.values()), io, None)
        return serve, serve.get_concrete_function()

    try:
        serve, concrete = build(plain_ops=True)
    except Exception as error:  # noqa: BLE001 - jax2tf raises NotImplementedError and others per primitive
        if FORMATS[fmt].plain_tf_ops:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"jax2tf cannot lower the function to plain TensorFlow ops, which {fmt} needs: "
                             f"{first}") from error
        serve, concrete = build(plain_ops=False)  # a SavedModel runs StableHLO fine
    # jax2tf's native serialization wraps the whole function in one XlaCallModule op (StableHLO).
    if FORMATS[fmt].plain_tf_ops and uses_xla_call_module(concrete):
        raise Skip(f"jax2tf of JAX {jax.__version__} always emits StableHLO (an XlaCallModule op), which "
                   f"tf2onnx and TF-TRT cannot convert; {fmt} variants of JAX models need JAX 0.5.3 or older "
                   "(the nav-orch/jax:cpu image pins it)")
    return serve


def handlers(timing: Timing) -> Handlers:
    """This runner's jobs, for one runner process (it profiles nothing: its variants run in others)."""
    return {"reference": reference, "export": export}
