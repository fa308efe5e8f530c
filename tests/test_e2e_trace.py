"""TorchScript trace of a model that fails torch.jit.trace's own sanity check (end to end)."""
import pytest
from conftest import ROOT, assert_verified_and_profiled, read_results
from conftest import optimize_cpu as optimize

pytestmark = pytest.mark.docker

ENCODER = f"{ROOT}/tests/models/transformer.py:make_encoder"


def test_trace_that_fails_the_tracer_check_is_kept_and_verified(cpu_images, no_leftovers, tmp_path):
    """torch.nn.TransformerEncoder fails the tracer's check (tests/models/transformer.py says why):
    the export traces again without it, nav-orch's verification passes the variant, and the
    tracer's message stays in the session log."""
    workspace = tmp_path / "ws"
    run = optimize(workspace, ENCODER, "--input", "tokens:4,10,32:float32", "--formats", "torchscript-trace")
    assert run.returncode == 0, run.stderr[-3000:]
    (variant,) = read_results(workspace)["variants"]
    assert variant["name"] == "torchscript-trace-fp32"
    assert_verified_and_profiled(variant)
    logs = "".join(path.read_text() for path in (workspace / "logs").glob("*.log"))
    assert "Tracing failed sanity checks!" in logs
    assert "traced again without it" in logs
