"""CLI subcommands of the benchmark harness: ``bench``, ``compare``, ``report``.

Only argparse is imported at module level; the harness, numpy and matplotlib load when a command runs.
``compare`` lives in :mod:`infership.bench.compare_cli`; the options ``bench`` shares with
``compare --rerun`` in :mod:`infership.bench.cli_options`.
"""

from __future__ import annotations

import argparse
from typing import Any

from .cli_options import (
    SCENARIOS,
    add_measure_options,
    config_from_args,
    fraction,
    resolve_unnamed_inputs,
)
from .cli_options import console as _console
from .compare_cli import add_compare

__all__ = ["add_bench", "add_compare", "add_report"]


def add_bench(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark an artifact: scenarios × backends × precisions × batch sizes × concurrency",
        description="Measure latency percentiles and throughput with MLPerf LoadGen-style scenarios "
        f"({SCENARIOS}). Warm-up is excluded, cold start (load + first inference) is reported separately, "
        "distinct inputs rotate, and each run reports whether its last measurement windows were stable. "
        "Lists take comma-separated values (--batch 1,8,32).",
    )
    p.add_argument("artifact", help="artifact directory or .onnx file")
    add_measure_options(
        p,
        duration=10.0,
        duration_help="seconds to measure each run at least (default: 10)",
        max_duration_help="extend unstable runs up to this many seconds (default: 2× --duration)",
    )
    p.add_argument(
        "--url",
        metavar="URL",
        help="benchmark a served model ('infership serve') at URL: the same as --backend http --device URL",
    )
    p.add_argument("--count", type=int, help="stop each run after this many queries")
    p.add_argument(
        "--min-queries", type=int, default=20, help="never stop before this many queries (default: 20)"
    )
    p.add_argument(
        "--stability", type=fraction, default=0.10, help="allowed spread between windows (default: 10%%)"
    )
    p.add_argument(
        "--no-overhead", action="store_true", help="skip measuring the harness overhead (fake backend)"
    )
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="skip timing the reference workload before each round (compare uses it to allow for the machine's "
        "speed differing between jobs)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each run in N rounds spread over the sweep (round-robin); compare then accounts for "
        "the machine's drift between rounds (use 3-5 on noisy CI runners)",
    )
    p.add_argument("--json", metavar="OUT", help="write the results JSON here")
    p.add_argument("--report", metavar="OUT_DIR", help="write a Markdown/HTML report with plots here")
    p.set_defaults(func=_run_bench)


def _config_from_args(args: argparse.Namespace) -> Any:
    return config_from_args(args)


def _run_bench(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .config import plan_runs
    from .harness import run_sweep
    from .results import save_results

    config = resolve_unnamed_inputs(config_from_args(args))
    console = _console(stderr=True)
    total = len(plan_runs(config))
    with Progress(
        TextColumn("[bold]bench[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("loading", total=total)

        def progress(done: int, total: int, description: str) -> None:
            bar.update(task, completed=done, description=description)

        results = run_sweep(config, progress=progress)
    _print_results(results)
    if args.json:
        path = save_results(results, args.json)
        console.print(f"results: {path}", highlight=False)
    if args.report:
        from .report import write_report

        console.print(f"report: {write_report(results, args.report)}", highlight=False)
    if not results.runs:
        console.print("[bold red]error:[/] no configuration could run (see Skipped above)")
        return 1
    return 0


def _print_results(results: Any) -> None:
    from rich.table import Table

    from .report import overhead_line, summary_table

    console = _console()
    headers, rows = summary_table(results)  # a text encoder's runs are labelled by their shape bucket
    table = Table(*headers, title=f"infership bench · fingerprint {results.fingerprint}")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if line := overhead_line(results):
        console.print(line, highlight=False)
    for s in results.skipped:
        console.print(f"[yellow]skipped[/] {s.backend} {s.precision}: {s.reason}", highlight=False)
    unstable = [r.key for r in results.runs if not r.stability.met]
    if unstable:
        console.print(
            f"[yellow]{len(unstable)} run(s) did not stabilise[/] (figures less trustworthy; try a longer "
            "--duration or a quieter machine)",
            highlight=False,
        )


def add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write a Markdown/HTML report with plots from a results JSON",
        description="Render report.md, report.html and PNG plots (latency CDF per backend, latency spread, "
        "throughput against batch size) from a results file; with --baseline, include the comparison.",
    )
    p.add_argument("results", help="results JSON written by 'infership bench --json'")
    p.add_argument("--out", default="bench-report", help="output directory (default: bench-report)")
    p.add_argument("--baseline", help="baseline results JSON to compare with")
    p.add_argument("--force", action="store_true", help="with --baseline: compare across environments")
    p.add_argument("--title", help="page title")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from .compare import compare_results
    from .report import write_report
    from .results import load_results

    results = load_results(args.results)
    comparison = None
    if args.baseline:
        comparison = compare_results(load_results(args.baseline), results, force=args.force)
    path = write_report(results, args.out, comparison=comparison, title=args.title)
    _console().print(f"report: {path}", highlight=False)
    return 0
