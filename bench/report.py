"""Reports: a Markdown page and a small HTML page with matplotlib plots (Agg; no display needed).

``write_report(results, "out/")`` writes ``report.md``, ``report.html`` and PNGs:

- ``latency_cdf.png``: the latency distribution (CDF) of each backend/precision, per scenario;
- ``latency_box.png``: every run's latency spread (box p25–p75, whiskers p1–p99) side by side;
- ``throughput_vs_batch.png``: items/s against batch size per backend/precision (when several batches ran).

The tables (``summary_table`` / ``comparison_table``) are shared with the CLI, which prints them with rich.
``cold ms`` reads ``load + first inference``.
matplotlib is imported only when plots are drawn.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .compare import Comparison
from .results import BenchResults, RunResult
from .rule import EXIT_CODES

log = logging.getLogger(__name__)

SUMMARY_HEADERS = (
    "backend precision", "scenario", "batch", "conc", "p50 ms", "p90 ms", "p99 ms", "mean±sd ms", "items/s",
    "queries", "stable", "cold ms",
)  # fmt: skip
COMPARISON_HEADERS = (
    "run", "verdict", "p50 Δ (95% CI)", "p99 Δ (95% CI)", "detectable p50 / p99", "items/s ratio", "why",
)  # fmt: skip


def _ms(v: float) -> str:
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"


def run_label(run: RunResult) -> str:
    """``backend@device precision`` (+ ``+pre`` when preprocessing was timed, + the shape bucket such as
    ``sequence=128`` and a padding other than the default, so that runs of one sweep stay apart)."""
    extra = " +pre" if run.settings.include_preprocessing else ""
    bucket = [k for k in run.key_extra if k.startswith(("sequence=", "padding="))]
    return f"{run.backend}@{run.device} {run.precision}{extra}" + "".join(f" {k}" for k in bucket)


def summary_table(results: BenchResults) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Headers and one row of strings per run (the table printed at the end of a sweep)."""
    rows = []
    for r in results.runs:
        lat = r.latency_ms
        cold = f"{r.cold_start.load_ms:.0f} + {_ms(r.cold_start.first_inference_ms)}" if r.cold_start else "-"
        stable = "yes" if r.stability.met else "NO"
        scenario = r.scenario
        if r.server is not None:
            met = "" if r.server.bound_met is None else (" ✓" if r.server.bound_met else " ✗ bound")
            scenario = f"server {r.server.achieved_qps:.0f}/{r.server.target_qps:.0f} qps{met}"
        rows.append(
            (
                run_label(r), scenario, str(r.batch_size), str(r.concurrency), _ms(lat.p50), _ms(lat.p90),
                _ms(lat.p99), f"{_ms(lat.mean)}±{_ms(lat.std)}", f"{r.throughput:,.0f}", str(lat.count), stable, cold,
            )
        )  # fmt: skip
    return SUMMARY_HEADERS, rows


def comparison_table(comparison: Comparison) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Headers and one row per compared run key."""

    def delta(ri: Any) -> str:
        if ri is None:
            return "-"
        return f"{ri.estimate - 1:+.1%} ({ri.low - 1:+.1%}..{ri.high - 1:+.1%})"

    rows = []
    for row in comparison.rows:
        tput = f"{row.throughput_ratio:.2f}" if row.throughput_ratio is not None else "-"
        det = " / ".join(detectable_text(ri) for ri in (row.p50, row.p99)) if row.p50 else "-"
        rows.append(
            (
                row.key,
                row.verdict.value.upper(),
                delta(row.p50),
                delta(row.p99),
                det,
                tput,
                "; ".join(row.reasons),
            )
        )
    return COMPARISON_HEADERS, rows


def detectable_text(ratio: Any) -> str:
    """The smallest slowdown a ratio's interval could detect, as ``"+4.2%"`` (``"any"``: unbounded)."""
    if ratio is None:
        return "-"
    det = ratio.detectable
    return "any" if det == float("inf") else f"+{det:.1%}"


def overhead_line(results: BenchResults) -> str:
    """One sentence on the harness's own cost (fake backend), or ``""`` if it was not measured."""
    if not results.overhead:
        return ""
    parts = [
        f"batch {o.batch_size}: p50 {o.latency_ms.p50 * 1000:.1f} µs, p99 {o.latency_ms.p99 * 1000:.1f} µs"
        for o in results.overhead
    ]
    return "Harness overhead per query (empty predictor, `fake` backend): " + "; ".join(parts) + "."


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def environment_lines(results: BenchResults) -> list[str]:
    """The machine in a few lines: CPU, ISA flags, cores, GPUs, libraries, fingerprint."""
    env = results.environment
    cpu = env.get("cpu") or {}
    gpus = env.get("gpus") or []
    libs = env.get("libraries") or {}
    gpu_text = ", ".join(f"{g.get('name')} (driver {g.get('driver')})" for g in gpus) or "none"
    return [
        f"CPU: {cpu.get('model', '?')} ({cpu.get('arch', '?')}), {cpu.get('physical_cores', '?')} physical / "
        f"{cpu.get('logical_cores', '?')} logical cores; int8 support: {cpu.get('int8_support', '?')}",
        f"ISA flags: {', '.join(cpu.get('flags') or []) or 'none of interest'}",
        f"GPUs: {gpu_text}",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()),
        f"OS: {env.get('os', '?')}, Python {env.get('python', '?')}; fingerprint `{results.fingerprint}`; "
        f"measured {results.created} with infership {results.infership}",
    ]


def write_report(
    results: BenchResults,
    out_dir: str | os.PathLike[str],
    *,
    comparison: Comparison | None = None,
    title: str | None = None,
) -> Path:
    """Write ``report.md``, ``report.html`` and the PNG plots into ``out_dir``.

    Args:
        results: What to report.
        out_dir: Directory (created if missing); existing report files are overwritten.
        comparison: A comparison with a baseline to include.
        title: Page title (default: from the model names).

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = sorted({r.model for r in results.runs}) or ["(no runs)"]
    title = title or f"Benchmark: {', '.join(models)}"
    plots = draw_plots(results, out)
    headers, rows = summary_table(results)

    md = [f"# {title}", "", *[f"- {line}" for line in environment_lines(results)], ""]
    if comparison is not None:
        ch, cr = comparison_table(comparison)
        verdict = EXIT_CODES.get(comparison.exit_code, str(comparison.exit_code))
        md += [f"## Comparison with the baseline: {verdict}", "", _md_table(ch, cr), ""]
    md += ["## Runs", "", _md_table(headers, rows), ""]
    md += [
        "Latencies are per query, timed by the harness with `perf_counter_ns`, warm-up excluded; `cold start` is "
        "`Predictor.load` + the first inference. `stable`: the last 3 measurement windows (with `--rounds`, "
        "the rounds) agreed within "
        f"{_tolerance(results):.0%}.",
        "",
    ]
    if line := overhead_line(results):
        md += [line, ""]
    if results.skipped:
        md += (
            ["## Skipped", ""] + [f"- {s.backend} {s.precision}: {s.reason}" for s in results.skipped] + [""]
        )
    for name, caption in plots:
        md += [f"![{caption}]({name})", ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    parts = [f"<h1>{html.escape(title)}</h1><ul>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in environment_lines(results)] + ["</ul>"]
    if comparison is not None:
        ch, cr = comparison_table(comparison)
        parts += [f"<h2>Comparison with the baseline: exit {comparison.exit_code}</h2>", _html_table(ch, cr)]
    parts += ["<h2>Runs</h2>", _html_table(headers, rows)]
    if line := overhead_line(results):
        parts.append(f"<p>{html.escape(line)}</p>")
    if results.skipped:
        parts += ["<h2>Skipped</h2><ul>"]
        parts += [
            f"<li>{html.escape(f'{s.backend} {s.precision}: {s.reason}')}</li>" for s in results.skipped
        ]
        parts.append("</ul>")
    parts += [f'<figure><img src="{n}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
              for n, c in plots]  # fmt: skip
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
    page += f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    (out / "report.html").write_text(page, encoding="utf-8")
    log.info("report written to %s", md_path)
    return md_path


def _tolerance(results: BenchResults) -> float:
    return results.runs[0].stability.tolerance if results.runs else 0.1


def _log_axis(axis: Any, set_scale: Any, formatter: Any) -> None:
    """Log scale with plain tick labels at 1, 2, 5 × 10^k (no overlapping minor labels)."""
    from matplotlib.ticker import LogLocator, NullFormatter

    set_scale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(NullFormatter())


def draw_plots(results: BenchResults, out: Path) -> list[tuple[str, str]]:
    """Draw the PNGs into ``out``; returns (file name, caption) for each one drawn."""
    if not results.runs:
        return []
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg is used for PNG

    drawn = []
    scenarios = list(dict.fromkeys(r.scenario for r in results.runs))
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    fig = Figure(figsize=(6.5 * len(scenarios), 4.2), layout="constrained")
    axes = fig.subplots(1, len(scenarios), squeeze=False)[0]
    overhead = results.overhead[0].latency_ms.p50 if results.overhead else None
    for ax, scenario in zip(axes, scenarios, strict=True):
        runs = [r for r in results.runs if r.scenario == scenario]
        batch = min(r.batch_size for r in runs)
        lo, hi = np.inf, 0.0
        for r in runs:
            if r.batch_size != batch:
                continue
            x = np.sort(np.asarray(r.samples_ms))
            ax.plot(x, np.arange(1, x.size + 1) / x.size, label=f"{run_label(r)} c{r.concurrency}", lw=1.4)
            lo, hi = min(lo, float(x[0])), max(hi, float(np.percentile(x, 99.9)))
        if overhead and overhead * 20 >= lo:  # drawn only where it is not negligible next to the model
            ax.axvline(overhead, color="grey", ls=":", lw=1, label="harness overhead p50")
            lo = min(lo, overhead)
        _log_axis(ax.xaxis, ax.set_xscale, plain)
        ax.set_xlim(lo / 1.2, hi * 1.2)  # up to p99.9: one outlier should not squash the curves
        ax.set_xlabel("latency per query (ms, log scale)")
        ax.set_ylabel("fraction of queries ≤ x")
        ax.axhline(0.99, color="grey", lw=0.6)
        ax.set_title(f"{scenario}, batch {batch}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(out / "latency_cdf.png", dpi=110)
    drawn.append(("latency_cdf.png", "Latency distribution (CDF) per backend; the grey line marks p99"))

    n = len(results.runs)
    fig = Figure(figsize=(9, 1.0 + 0.38 * n), layout="constrained")
    ax = fig.subplots()
    labels = [f"{run_label(r)} {r.scenario} b{r.batch_size} c{r.concurrency}" for r in results.runs]
    ax.boxplot([np.asarray(r.samples_ms) for r in results.runs], orientation="horizontal", whis=(1, 99),
               showfliers=False, tick_labels=labels)  # fmt: skip
    _log_axis(ax.xaxis, ax.set_xscale, plain)
    ax.set_xlabel("latency per query (ms, log scale); box p25–p75, whiskers p1–p99")
    ax.invert_yaxis()
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.savefig(out / "latency_box.png", dpi=110)
    drawn.append(("latency_box.png", "Latency spread of every run"))

    if len({r.batch_size for r in results.runs}) > 1:
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        series: dict[str, list[tuple[int, float]]] = {}
        for r in results.runs:
            series.setdefault(f"{run_label(r)} {r.scenario} c{r.concurrency}", []).append(
                (r.batch_size, r.throughput)
            )
        for label, points in series.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(plain)
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (items/s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.savefig(out / "throughput_vs_batch.png", dpi=110)
        drawn.append(("throughput_vs_batch.png", "Throughput against batch size"))
    return drawn
