"""What optimize says after its table: the best variant's speedup over the source model as it is,
where its artifact and report are, and the command that serves it; never on stdout with --json."""
from __future__ import annotations

import io
import json

from rich.console import Console

from orchestrator.cli import finish
from orchestrator.cli_text import next_steps
from orchestrator.results import (
    Environment,
    ImageRecord,
    PairedRatio,
    RunResults,
    Selection,
    TritonResults,
    VariantResult,
)
from runners.contract.protocol import LatencyStats, ProfileEntry


def entry(batch: int, p50: float, throughput: float) -> ProfileEntry:
    return ProfileEntry(batch, LatencyStats(p50, p50 * 1.1, p50 * 1.2, p50 * 1.5, p50), throughput, 3, True)


def results(objective: str = "throughput", batch: int = 8) -> RunResults:
    best = VariantResult(name="onnx-fp32", format="onnx", precision="fp32", status="ok",
                         artifact="variants/onnx-fp32/model.onnx",
                         profile=[entry(1, 0.1, 1000.0), entry(8, 0.2, 4000.0)])
    return RunResults(model="mlp.py:make_mlp", state="complete", best=best.name, variants=[best],
                      selection=Selection(objective=objective, batch_size=batch, reason="why"),
                      environment=Environment(nav_orch="0.1.0", host_python="3.11",
                                              images=[ImageRecord(tag="nav-orch/pytorch:cpu", id="sha256:a")]),
                      source_profile=[entry(1, 0.4, 250.0), entry(8, 0.8, 1000.0)])


def test_the_speedup_the_files_and_the_serve_command(tmp_path):
    (tmp_path / "report.html").write_text("")
    assert next_steps(results(), tmp_path) == [
        "speedup: 4.00× the source model as it is (throughput at batch 8: 4,000/s against 1,000/s)",
        f"artifact: {tmp_path}/variants/onnx-fp32/model.onnx",
        f"report: {tmp_path}/report.html",
        f"serve it: nav-orch serve {tmp_path}",
    ]


def test_a_latency_run_compares_latencies(tmp_path):
    lines = next_steps(results("latency", 1), tmp_path)
    assert lines[0] == ("speedup: 4.00× the source model as it is (latency at batch 1: 0.100 ms p50 against "
                        "0.400 ms p50)")
    assert not any(line.startswith("report:") for line in lines)  # no report.html written: none named


def test_a_source_not_timed_at_the_selections_batch_is_said_so(tmp_path):
    assert next_steps(results(batch=64), tmp_path)[0] == (
        "speedup: not measured (the source model as it is was not timed at batch 64)")


def test_a_local_run_is_served_by_pytriton_from_its_python(tmp_path):
    run = results()
    run.environment.images = [ImageRecord(tag="local", id="/opt/py 3/bin/python")]
    assert next_steps(run, tmp_path)[-1] == (f"serve it: nav-orch serve {tmp_path} --server pytriton --executor local "
                                             "--python '/opt/py 3/bin/python'")


def test_a_local_run_whose_triton_stage_served_it_is_served_by_that_tritonserver(tmp_path):
    run = results()
    run.environment.images = [ImageRecord(tag="local", id="/opt/py/bin/python")]
    run.triton = TritonResults(image="tritonserver /opt/ts/bin/tritonserver", model_repository="triton/repo",
                               client="tritonclient-grpc", local_python="/opt/serve/bin/python")
    assert next_steps(run, tmp_path)[-1] == (f"serve it: nav-orch serve {tmp_path} --executor local --python "
                                             "/opt/serve/bin/python --tritonserver /opt/ts/bin/tritonserver")
    run.triton.error = "torch-compile-fp16: Triton failed to load it: ..."  # not served: PyTriton, as before
    assert next_steps(run, tmp_path)[-1].startswith(f"serve it: nav-orch serve {tmp_path} --server pytriton")


def test_a_choice_timed_again_interleaved_gives_its_margin_with_the_interval(tmp_path):
    run = results()
    assert run.selection is not None
    run.selection.rounds, run.selection.confidence = 12, 0.9614
    run.selection.margin = PairedRatio(variant="tensorrt-fp16", ratio=1.04, low=1.01, high=1.07)
    assert next_steps(run, tmp_path)[1] == "margin: 1.04× tensorrt-fp16 (96 % interval 1.01–1.07, 12 paired rounds)"
    run.selection.margin = PairedRatio(variant="tensorrt-fp16", ratio=0.98, low=0.95, high=1.02)
    run.selection.tie, run.selection.tie_broken_by = True, "smaller"
    assert next_steps(run, tmp_path)[1] == ("margin: tie with tensorrt-fp16 (0.98×, 96 % interval 0.95–1.02, "
                                            "12 paired rounds): chose the smaller artifact")
    run.selection = Selection(objective="throughput", batch_size=8, reason="why")  # not timed again: no line
    assert not any(line.startswith("margin:") for line in next_steps(run, tmp_path))


def test_no_best_no_next_steps(tmp_path):
    run = results()
    run.best = None
    assert next_steps(run, tmp_path) == []


def test_with_json_stdout_stays_json_and_the_summary_goes_to_stderr(tmp_path, capsys):
    shown = io.StringIO()
    code = finish(results(), tmp_path, json_output=True, progress="plain", console=Console(file=shown, width=200),
                  next_steps=True)
    assert code == 0
    assert json.loads(capsys.readouterr().out)["best"] == "onnx-fp32"
    assert "speedup: 4.00×" in shown.getvalue() and f"serve it: nav-orch serve {tmp_path}" in shown.getvalue()
