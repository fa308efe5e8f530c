"""A half-precision artifact that a native Triton backend serves (libtorch, ONNX Runtime) takes and
returns the source model's dtypes: the backend's config.pbtxt declares the reference's io, and a
client sends what the source model took. Every such (format, precision) pair of the registry is
exported by the real runners (--executor local, the CPU image's toolchain) and loaded as those
backends load it."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import EXAMPLES, nav_orch, read_results

from runners.contract.formats import FORMATS

pytestmark = pytest.mark.docker  # the runners' Python is built like the CPU image (tests/conftest.py)

NATIVE_HALF = sorted((fmt.name, precision) for fmt in FORMATS.values() if fmt.triton and fmt.triton.backend
                     for precision in fmt.precisions_from("pytorch")
                     if precision in ("fp16", "bf16") and fmt.export_precision is None)
NEEDS_TENSORRT = {name for name, fmt in FORMATS.items() if fmt.toolchain is not None}

# Load each artifact as its backend does and call it with the samples in the source's dtypes; print
# what it declares and returns.
CALL = """
import json, sys
import numpy as np
samples = dict(np.load(sys.argv[2]))
kind, path = sys.argv[1], sys.argv[3]
if kind == "onnxruntime":
    import onnxruntime as ort
    session = ort.InferenceSession(path)
    declared = [t.type for t in [*session.get_inputs(), *session.get_outputs()]]
    outputs = session.run(None, samples)
else:
    import torch
    model = torch.jit.load(path)
    answer = model(*[torch.from_numpy(array) for array in samples.values()])
    outputs = [t.numpy() for t in (answer if isinstance(answer, tuple) else (answer,))]
    declared = []
print(json.dumps({"declared": declared, "dtypes": [str(o.dtype) for o in outputs],
                  "outputs": [o.tolist() for o in outputs]}))
"""


def test_native_backends_get_the_source_dtypes_from_every_half_precision_artifact(tmp_path, runners_python):
    assert ("onnx", "fp16") in NATIVE_HALF and ("torchscript-script", "bf16") in NATIVE_HALF
    workspace = tmp_path / "ws"
    formats = sorted({name for name, _ in NATIVE_HALF})
    run = nav_orch("optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32", "--executor", "local",
                   "--python", runners_python, "--formats", ",".join(formats), "--precisions", "fp16,bf16",
                   "--batch-sizes", "1,4", "--no-triton", "--workspace", str(workspace), "--progress", "quiet")
    assert run.returncode == 0, run.stderr
    results = read_results(workspace)
    variants = {(v["format"], v["precision"]): v for v in results["variants"]}
    assert set(NATIVE_HALF) <= set(variants)
    expected = np.load(workspace / "reference" / "reference.npz")["output"]
    assert expected.dtype == np.float32
    checked = set()
    for pair in NATIVE_HALF:
        variant = variants[pair]
        if pair[0] in NEEDS_TENSORRT:
            assert variant["status"] == "skipped", variant
            continue
        assert variant["status"] == "ok", variant
        backend = FORMATS[pair[0]].triton.backend
        called = subprocess.run([runners_python, "-c", CALL, backend, str(workspace / "reference" / "samples.npz"),
                                 str(workspace / variant["artifact"])], capture_output=True, text=True)
        assert called.returncode == 0, called.stderr[-3000:]
        answer = json.loads(called.stdout)
        if backend == "onnxruntime":
            assert answer["declared"] == ["tensor(float)", "tensor(float)"], pair
        assert answer["dtypes"] == ["float32"], pair
        np.testing.assert_allclose(answer["outputs"][0], expected, atol=0.05 if pair[1] == "bf16" else 0.01)
        checked.add(pair)
    assert checked == {pair for pair in NATIVE_HALF if pair[0] not in NEEDS_TENSORRT}

