"""report.html: the verdict, charts and tables of one run, or of several runs side by side.

Every chart is a plotly figure in a <div class="chart" data-series="N"> (N: its traces), so a test
can check in a browser that each rendered all of its series. plotly.js is inlined once per file.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from orchestrator.results import RunResults, VariantResult, figure, gain
from runners.contract.protocol import QUANTIZED, OutputError, ProfileEntry, write_text_atomic

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 3px 10px; text-align: left; }
tr:nth-child(even) { background: #f6f6f6; } .verdict { font-size: 1.1em; background: #eef6ee; padding: 1em; }
code { font-size: 0.9em; }
"""


def write_report(results: RunResults, path: Path) -> Path:
    """Write one run's report to `path`; returns it."""
    title = f"nav-orch: {results.model or path.parent.name}"
    body = [f"<h1>{esc(title)}</h1>", verdict(results), *charts(results), *tables(results)]
    write_text_atomic(path, page(title, body))
    return path


def write_comparison(runs: Sequence[tuple[str, RunResults]], path: Path) -> Path:
    """Runs side by side: the best of each, and each variant's throughput in every run."""
    rows = [[esc(label), esc(r.best or "none"), esc(r.selection.reason if r.selection else r.error or ""),
             esc(", ".join(g.name for g in r.environment.gpus) or "CPU"),
             esc(", ".join(i.tag for i in r.environment.images))] for label, r in runs]
    body = [f"<h1>{len(runs)} runs compared</h1>", "<h2>Best of each run</h2>",
            table(["run", "best", "why", "GPU", "images"], rows)]
    names = sorted({v.name for _, r in runs for v in r.variants if v.profile})
    traces = [bar(label, names, [top_throughput(find(r, name)) for name in names]) for label, r in runs]
    body += ["<h2>Throughput of each variant (its best batch size)</h2>",
             chart(traces, "variant", "samples/s", barmode="group")]
    first_label, first = runs[0]
    deltas = []
    for name in names:
        base = top_throughput(find(first, name))
        cells = [esc(name)]
        for _, run in runs[1:]:
            value = top_throughput(find(run, name))
            cells.append(f"{(value / base - 1) * 100:+.1f} %" if base and value else "-")
        deltas.append(cells)
    body += [f"<h2>Change against {esc(first_label)}</h2>", table(["variant", *[esc(x) for x, _ in runs[1:]]], deltas)]
    write_text_atomic(path, page("nav-orch: runs compared", body))
    return path


# --- sections --------------------------------------------------------------------------------------

def verdict(results: RunResults) -> str:
    if not results.best:
        why = f"{esc(results.state)}: {esc(results.error)}" if results.error else esc(results.state)
        return f"<p class=verdict>No variant was chosen ({why}).</p>"
    best = find(results, results.best)
    text = f"<b>{esc(results.best)}</b> is the best variant"
    if results.selection:
        text += f": {esc(results.selection.reason)}"
        objective = results.selection.objective
        others = [v for v in results.variants if v.status == "ok" and v.name != results.best and v.profile]
        batch = results.selection.batch_size
        ours = figure(best.profile if best else [], objective, batch)
        rivals = [(value, v.name) for v in others if (value := figure(v.profile, objective, batch))]
        gains = []
        # Where the close candidates were timed again interleaved, the reason gives the margin over
        # the runner-up with its interval; the single pass's ratio, within its noise, would contradict it.
        if ours and rivals and results.selection.margin is None:
            value, name = (max if objective == "throughput" else min)(rivals)
            gains.append(f"{gain(ours, value, objective):.2f}× the runner-up, {esc(name)}")
        source = figure(results.source_profile, objective, batch)
        if ours and source:
            gains.append(f"{gain(ours, source, objective):.2f}× the source model run as it is")
        elif ours:
            gains.append("not compared with the source model as it is (it was not timed at that batch size)")
        if gains:
            text += ". It is " + " and ".join(gains)
    return f"<p class=verdict>{text}.</p>"


def charts(results: RunResults) -> list[str]:
    profiled = [v for v in results.variants if v.status == "ok" and v.profile]
    out = []
    if profiled:
        curves = [dict(type="scatter", mode="lines+markers", name=v.name,
                       x=[e.latency_ms.p50 for e in v.profile], y=[e.throughput for e in v.profile],
                       text=[f"batch {e.batch_size}" for e in v.profile],
                       error_x=dict(type="data", symmetric=False, arrayminus=[0] * len(v.profile),
                                    array=[e.latency_ms.p99 - e.latency_ms.p50 for e in v.profile]))
                  for v in profiled]
        out += ["<h2>Throughput against latency (p50; the bar reaches p99), per batch size</h2>",
                chart(curves, "latency p50 (ms)", "samples/s", log_x=True)]
        points = [f"{v.name} bs{e.batch_size}" for v in profiled for e in v.profile]
        percentiles = [bar(p, points, [getattr(e.latency_ms, p) for v in profiled for e in v.profile])
                       for p in ("p50", "p90", "p95", "p99")]
        out += ["<h2>Latency percentiles</h2>", chart(percentiles, "variant and batch size", "ms", barmode="group")]
    # Quantized variants are judged by their budget, not their tolerance: their own table (tables()).
    verified = [v for v in results.variants if v.verification is not None and v.precision not in QUANTIZED]
    if verified:
        outputs = sorted({name for v in verified for name in v.verification.outputs})  # type: ignore[union-attr]
        traces = []
        for output in outputs:
            used = [budget(v, output) for v in verified]
            traces.append(bar(output, [v.name for v in verified], used))
        out += ["<h2>Verification: each output's largest error as a share of its tolerance (1 = the limit)</h2>",
                chart(traces, "variant", "error / tolerance", barmode="group", log_y=True)]
    if results.triton and results.triton.runs:
        keys = sorted({(r.variant, r.batch_size) for r in results.triton.runs})
        sweeps = []
        for variant, batch in keys:
            runs = sorted((r for r in results.triton.runs if (r.variant, r.batch_size) == (variant, batch)),
                          key=lambda r: r.concurrency)
            sweeps.append(dict(type="scatter", mode="lines+markers", name=f"{variant} bs{batch}",
                               x=[r.latency_ms.p50 for r in runs], y=[r.throughput for r in runs],
                               text=[f"concurrency {r.concurrency}" for r in runs]))
        out += ["<h2>Served by Triton: the concurrency sweep (perf_analyzer)</h2>",
                chart(sweeps, "latency p50 (ms)", "samples/s")]
    search = results.triton.search if results.triton else None
    measured = [t for t in search.trials if t.error is None and t.p99_ms is not None] if search else []
    if search and measured:
        def scatter(name: str, trials: list, **style: Any) -> dict[str, Any]:
            return dict(type="scatter", name=name, x=[t.p99_ms for t in trials], y=[t.throughput for t in trials],
                        text=[f"{t.config}, concurrency {t.concurrency}" for t in trials], **style)
        front = sorted((t for t in measured if t.config in search.pareto), key=lambda t: t.throughput)
        chosen = [t for t in measured if t.config == search.chosen]
        traces = [scatter("configurations tried", measured, mode="markers"),
                  scatter("Pareto front", front, mode="lines+markers"),
                  scatter(f"chosen: {search.chosen}", chosen, mode="markers", marker=dict(size=14, symbol="star"))]
        gain = f", {search.gain:.2f}× the default's throughput" if search.gain is not None else ""
        out += [f"<h2>Serving configurations searched for {esc(search.variant)} ({search.mode}, "
                f"{len(search.trials)} tried{gain})</h2>", chart(traces, "latency p99 (ms)", "samples/s")]
    if results.timeline:
        kinds = sorted({t.kind for t in results.timeline})
        lanes = [dict(type="bar", orientation="h", name=kind,
                      y=[f"{t.placement}: {t.session}" for t in results.timeline if t.kind == kind],
                      base=[t.start_s for t in results.timeline if t.kind == kind],
                      x=[max(t.end_s - t.start_s, 0.01) for t in results.timeline if t.kind == kind],
                      text=[t.job for t in results.timeline if t.kind == kind]) for kind in kinds]
        out += ["<h2>Timeline: the jobs this run ran, by runner session and placement</h2>",
                chart(lanes, "seconds from the start", "", barmode="overlay")]
    return out


def tables(results: RunResults) -> list[str]:
    out = []
    left = [v for v in results.variants if v.status not in ("ok", "pending")]
    if left:
        rows = [[esc(v.name), esc(v.status), esc(v.error or ""), f"<code>logs/, jobs/*-{esc(v.name)}/runner.log</code>"]
                for v in left]
        out += ["<h2>Failed and skipped variants</h2>", table(["variant", "status", "reason", "logs"], rows)]
    rows = [[esc(v.name), esc(name), f"{o.cosine:.5f}", "-" if o.top1 is None else f"{o.top1:.3f}",
             f"{o.max_abs_err:.3g}", esc(budget_text(o)), "yes" if o.passed else "<b>no</b>"]
            for v in results.variants if v.verification for name, o in v.verification.outputs.items()
            if o.cosine is not None]
    if rows:
        out += ["<h2>Accuracy of the quantized variants, against their budget</h2>",
                table(["variant", "output", "cosine", "top-1 agreement", "max abs error", "budget", "within"], rows)]
    rows = [[esc(v.name), f"{e.batch_size}", f"{e.throughput:,.0f}",
             *(f"{getattr(e.latency_ms, p):.3f}" for p in ("p50", "p90", "p95", "p99")), timed(e)]
            for v in results.variants for e in v.profile]
    if rows:
        out += ["<h2>Profile</h2>", table(["variant", "batch", "samples/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms",
                                           "timed"], rows)]
    env = results.environment
    rows = [["nav-orch", esc(env.nav_orch)], ["host Python", esc(env.host_python)], ["Docker", esc(env.docker or "-")]]
    rows += [[f"image {esc(i.tag)}", esc(f"{i.id}; " + ", ".join(f"{k} {v}" for k, v in sorted(i.versions.items())))]
             for i in env.images]
    rows += [[f"image {esc(i.tag)} adds", esc(f"{', '.join(i.requirements)} to {i.base}")]
             for i in env.images if i.base]
    rows += [[f"GPU {esc(g.name)}", esc(f"driver {g.driver}, compute capability {g.compute_capability}, SM clock "
                                          f"{g.sm_clock_mhz} of {g.max_sm_clock_mhz} MHz")] for g in env.gpus]
    out += ["<h2>Environment</h2>", table(["", ""], rows)]
    return out


# --- pieces ----------------------------------------------------------------------------------------

def timed(entry: ProfileEntry) -> str:
    """How far a point was timed: a point a rival beat stopped after its first window."""
    if entry.beaten_by:
        return f"first window only: {esc(entry.beaten_by)} beat it"
    return "in full" if entry.stable else "in full, unstable"


def find(results: RunResults, name: str) -> Optional[VariantResult]:
    return next((v for v in results.variants if v.name == name), None)


def top_throughput(variant: Optional[VariantResult]) -> Optional[float]:
    return figure(variant.profile, "throughput", None) if variant else None


def budget_text(error: OutputError) -> str:
    """A quantized output's budget as --accuracy writes it: `cosine ≥ 0.99, top-1 ≥ 0.9`."""
    b = error.budget
    if b is None:
        return "-"
    parts = [f"cosine ≥ {b.min_cosine}"]
    parts += [f"top-1 ≥ {b.min_top1}"] if b.min_top1 is not None and error.top1 is not None else []
    parts += [f"max abs ≤ {b.max_abs}"] if b.max_abs is not None else []
    return ", ".join(parts)


def budget(variant: VariantResult, output: str) -> Optional[float]:
    """The output's largest absolute error as a share of its absolute tolerance (of its relative
    one where atol is 0); a floor keeps an exact match on the log axis."""
    error = variant.verification.outputs.get(output) if variant.verification else None
    if error is None:
        return None
    share = error.max_abs_err / error.atol if error.atol else error.max_rel_err / error.rtol if error.rtol else 0.0
    return max(share, 1e-6)


def bar(name: str, x: list[Any], y: list[Any]) -> dict[str, Any]:
    return dict(type="bar", name=name, x=x, y=y)


def chart(traces: list[dict[str, Any]], x_title: str, y_title: str, barmode: Optional[str] = None,
          log_x: bool = False, log_y: bool = False) -> str:
    import plotly.graph_objects as go

    layout: dict[str, Any] = dict(xaxis=dict(title=x_title, type="log" if log_x else None),
                                  yaxis=dict(title=y_title, type="log" if log_y else None),
                                  margin=dict(l=60, r=20, t=20, b=60), height=420, template="plotly_white")
    if barmode:
        layout["barmode"] = barmode
    figure_html = go.Figure(data=traces, layout=layout).to_html(full_html=False, include_plotlyjs=False,
                                                                 config={"displaylogo": False})
    return f'<div class="chart" data-series="{len(traces)}">{figure_html}</div>'


def table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def esc(text: object) -> str:
    return html.escape(str(text))


def page(title: str, body: list[str]) -> str:
    from plotly.offline import get_plotlyjs

    # plotly.js inline, once: the file opens offline, and fetches nothing.
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{esc(title)}</title><style>{STYLE}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            + "\n".join(body) + "</body></html>")
