"""report.html end to end: written by a real optimize run (with the Triton stage), rebuilt and
compared by `nav-orch report`, and opened in headless Chromium: every chart drawn with all of its
series, no console error, no request beyond the file itself. Screenshots go to test-artifacts/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import open_page
from conftest import EXAMPLES, ROOT, nav_orch, write_two_input_samples

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
ARTIFACTS = ROOT / "test-artifacts"


def optimize(workspace: Path, samples: Path, *options: str) -> dict:
    run = nav_orch("optimize", f"{EXAMPLES}/two_heads.py:make_two_heads", "--samples", str(samples), "--images",
                   "cpu", "--gpus", "none", "--workspace", str(workspace), "--batch-sizes", "1,4",
                   "--progress", "plain", "--json", *options)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def assert_seen_whole(page: dict, path: Path, charts: int) -> None:
    assert len(page["charts"]) == charts, page["charts"]
    for chart in page["charts"]:
        assert chart["svg"] >= 1 and chart["drawn"] == chart["expected"] >= 1, page["charts"]
    assert page["errors"] == []
    assert page["requests"] == [path.resolve().as_uri()]  # the file itself, nothing else


@pytest.fixture(scope="module")
def runs(cpu_images, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("report")
    samples = write_two_input_samples(folder / "samples.npz")
    served = folder / "served"
    # With a short configuration search in Docker (perf_analyzer in containers), drawn in the report.
    optimize(served, samples, "--formats", "onnx,torchscript-trace", "--triton-concurrency", "1,2",
             "--triton-search", "quick", "--triton-search-budget", "15")
    plain = folder / "plain"
    optimize(plain, samples, "--formats", "onnx", "--no-triton")
    return served, plain


def test_every_run_writes_a_report_that_renders_offline_with_every_chart(runs):
    served, _ = runs
    report = served / "report.html"
    results = json.loads((served / "results.json").read_text())
    # The timeline's jobs, each with its session and placement.
    assert results["timeline"] and all(t["end_s"] >= t["start_s"] >= 0 and t["placement"] == "CPU"
                                       for t in results["timeline"])
    assert {t["kind"] for t in results["timeline"]} >= {"reference", "export", "verify", "profile"}
    # The source model as it is, timed by the reference job at every batch size: the verdict's baseline.
    assert [e["batch_size"] for e in results["source_profile"]] == [1, 4]
    assert all(e["throughput"] > 0 for e in results["source_profile"])
    text = report.read_text()
    assert "× the source model run as it is" in text
    assert "<script src" not in text and "two_heads.py:make_two_heads" in text
    search = results["triton"]["search"]
    assert search["trials"][0]["config"] == search["default"] and search["chosen"] is not None
    assert all(t["error"] is None and t["throughput"] > 0 for t in search["trials"]), search["trials"]
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(report, ARTIFACTS / "report.png")
    # throughput/latency, percentiles, verification, Triton's sweep, the configurations searched, timeline
    assert_seen_whole(page, report, charts=6)
    assert page["charts"][0]["expected"] == 2  # one series per verified variant
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_nav_orch_report_rebuilds_one_and_compares_several(runs, tmp_path):
    served, plain = runs
    (served / "report.html").unlink()
    run = nav_orch("report", str(served))
    assert run.returncode == 0 and run.stdout.strip() == f"report: {served / 'report.html'}"
    compare = tmp_path / "compare.html"
    run = nav_orch("report", str(served), str(plain), "-o", str(compare))
    assert run.returncode == 0, run.stderr
    page = open_page(compare, ARTIFACTS / "compare.png")
    assert_seen_whole(page, compare, charts=1)
    assert page["charts"][0]["expected"] == 2  # a series per run
    run = nav_orch("report", str(tmp_path / "nothing-here"))
    assert run.returncode == 2 and "has no results.json" in run.stderr
