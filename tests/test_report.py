"""report.html without a browser: what it holds for a run, and that runner text is escaped. The
browser checks are in test_e2e_report.py."""
from __future__ import annotations

import re
from dataclasses import replace

from rich.console import Console

from orchestrator.progress import print_summary
from orchestrator.report.html import write_comparison, write_report
from orchestrator.results import (
    Environment,
    ImageRecord,
    JobTiming,
    PairedRatio,
    RunResults,
    Selection,
    TritonLatency,
    TritonResults,
    TritonRun,
    VariantResult,
)
from runners.contract.protocol import LatencyStats, OutputError, ProfileEntry, Verification


def entry(batch: int, p50: float, throughput: float) -> ProfileEntry:
    return ProfileEntry(batch, LatencyStats(p50, p50 * 1.1, p50 * 1.2, p50 * 1.5, p50), throughput, 3, True)


def results(best_throughput: float = 900.0) -> RunResults:
    verified = Verification(True, {"y": OutputError(1e-6, 1e-5, 1e-4, 1e-3, True)})
    variants = [
        VariantResult(name="onnx-fp32", format="onnx", precision="fp32", status="ok", verification=verified,
                      profile=[entry(1, 0.1, 100.0), entry(4, 0.2, best_throughput)]),
        VariantResult(name="torchscript-trace-fp32", format="torchscript-trace", precision="fp32", status="ok",
                      verification=verified, profile=[entry(1, 0.2, 50.0), replace(entry(4, 0.4, 300.0),
                                                                                   beaten_by="onnx-fp32")]),
        VariantResult(name="exported-program-fp32", format="exported-program", precision="fp32", status="failed",
                      error="export: <script>alert(1)</script>"),
    ]
    triton = TritonResults(image="nav-orch/triton:cpu", model_repository="triton/model_repository", runs=[
        TritonRun(variant="onnx-fp32", backend="python", batch_size=4, concurrency=c, throughput=500.0 * c,
                  latency_ms=TritonLatency(p50=0.5, p90=0.6, p95=0.7, p99=0.9), server_queue_ms=0.01,
                  server_compute_ms=0.2) for c in (1, 2)])
    timeline = [JobTiming(job="reference", kind="reference", session="reference", placement="CPU", start_s=0.0,
                          end_s=2.0),
                JobTiming(job="export-onnx-fp32", kind="export", session="build-onnx-fp32", placement="CPU",
                          start_s=2.0, end_s=3.0)]
    return RunResults(model="mlp.py:make_mlp", state="complete", best="onnx-fp32", variants=variants,
                      selection=Selection(objective="throughput", batch_size=4, reason="highest throughput"),
                      environment=Environment(nav_orch="0.1.0", host_python="3.11"), triton=triton, timeline=timeline)


def test_a_report_holds_the_verdict_every_chart_and_the_failures_escaped(tmp_path):
    text = write_report(results(), tmp_path / "report.html").read_text()
    assert "<title>nav-orch: mlp.py:make_mlp</title>" in text
    assert "It is 3.00× the runner-up, torchscript-trace-fp32" in text
    # throughput/latency (2 variants), percentiles (4), verification (1 output), Triton (1 sweep), timeline (2 kinds)
    assert re.findall(r'<div class="chart" data-series="(\d+)">', text) == ["2", "4", "1", "1", "2"]
    assert "export: &lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>alert(1)" not in text
    assert "<script src" not in text and "cdn.plot.ly/plotly" not in text.split("<body>")[1]
    # The profile table says which points were cut short, and by whom.
    assert "<td>4</td><td>300</td>" in text and "<td>first window only: onnx-fp32 beat it</td>" in text
    assert text.count("<td>in full</td>") == 3


def test_the_summary_marks_the_points_a_rival_cut_short():
    console = Console(record=True, width=200)
    print_summary(results(), console, "ws")
    text = console.export_text()
    assert "~300 (bs4)" in text and " 900 (bs4)" in text
    assert "~: 1 profile point(s) timed for one window only" in text and "--exhaustive" in text


def test_a_comparison_shows_each_runs_best_and_the_change_per_variant(tmp_path):
    text = write_comparison([("before", results(900.0)), ("after", results(1800.0))], tmp_path / "c.html").read_text()
    assert re.findall(r'<div class="chart" data-series="(\d+)">', text) == ["2"]
    assert "<td>onnx-fp32</td><td>+100.0 %</td>" in text and "<td>torchscript-trace-fp32</td><td>+0.0 %</td>" in text


def test_the_verdict_measures_the_best_against_the_source_model_as_it_is(tmp_path):
    run = results()
    run.source_profile = [entry(1, 0.5, 20.0), entry(4, 1.0, 200.0)]
    text = write_report(run, tmp_path / "report.html").read_text()
    assert "It is 3.00× the runner-up, torchscript-trace-fp32 and 4.50× the source model run as it is." in text
    run.selection = Selection(objective="latency", batch_size=1, reason="lowest p50 latency")
    text = write_report(run, tmp_path / "latency.html").read_text()
    assert "2.00× the runner-up, torchscript-trace-fp32 and 5.00× the source model run as it is." in text
    run.source_profile = [entry(1, 0.5, 20.0)]  # not timed at the selection's batch
    run.selection = Selection(objective="throughput", batch_size=4, reason="highest throughput")
    text = write_report(run, tmp_path / "untimed.html").read_text()
    assert "not compared with the source model as it is (it was not timed at that batch size)" in text


def test_a_choice_timed_again_interleaved_gives_the_paired_margin_not_the_single_pass_one(tmp_path):
    run = results()
    margin = PairedRatio(variant="torchscript-trace-fp32", ratio=1.04, low=1.01, high=1.07)
    run.selection = Selection(objective="throughput", batch_size=4, rounds=12, confidence=0.9614, margin=margin,
                              compared=[margin], reason=("highest throughput; timed again interleaved at batch 4: "
                                                         "1.04× torchscript-trace-fp32 (96 % interval 1.01–1.07, "
                                                         "12 paired rounds)"))
    text = write_report(run, tmp_path / "report.html").read_text()
    assert "1.04× torchscript-trace-fp32 (96 % interval 1.01–1.07, 12 paired rounds)" in text
    assert "the runner-up" not in text  # the single pass's 3.00×, within its noise, is not repeated


def test_the_environment_names_a_derived_image_and_what_it_adds(tmp_path):
    run = results()
    run.environment.images = [ImageRecord(tag="nav-orch/pytorch:cpu-req-1a2b3c4d5e6f", id="sha256:d",
                                          base="nav-orch/pytorch:cpu", requirements=["timm", "transformers==5.24.0"])]
    text = write_report(run, tmp_path / "report.html").read_text()
    assert ("<td>image nav-orch/pytorch:cpu-req-1a2b3c4d5e6f adds</td><td>timm, transformers==5.24.0 to "
            "nav-orch/pytorch:cpu</td>") in text
