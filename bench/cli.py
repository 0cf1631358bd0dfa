"""CLI subcommands of the benchmark harness: ``bench``, ``compare``, ``report``.

Only argparse is imported at module level; the harness, numpy and matplotlib load when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

_SCENARIOS = "single-stream, multi-stream, server, offline"


def _fraction(text: str) -> float:
    """``"10%"`` → 0.10; ``"0.1"`` → 0.1. A bare number above 1 is refused (write ``10%``)."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a percentage like 10% or a fraction like 0.1, got {text!r}"
        ) from None
    if not t.endswith("%") and value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is ambiguous: write {value:g}% or {value / 100:g}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative value, got {text!r}")
    return value


def _fraction_or_off(text: str) -> float:
    """Like :func:`_fraction`; ``off`` disables the check (an infinite threshold)."""
    if text.strip().lower() in ("off", "none"):
        return float("inf")
    return _fraction(text)


def _hw(text: str) -> tuple[int, int]:
    """``--image-size``: ``"256"`` or ``"256x192"`` (height × width), read by the calibration data layer."""
    from infership.calibration import parse_hw
    from infership.runtime.errors import InvalidInputError

    try:
        return parse_hw(text, what="--image-size")
    except InvalidInputError as exc:
        # argparse shows an ArgumentTypeError's message; any other error becomes "invalid _hw value"
        raise argparse.ArgumentTypeError(str(exc)) from None


def _console(*, stderr: bool = False) -> Any:
    """A rich console; at least 160 columns when not a terminal (CI logs), so tables are not squashed."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal and console.width < 160:
        console = Console(stderr=stderr, width=160)
    return console


def add_bench(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark an artifact: scenarios × backends × precisions × batch sizes × concurrency",
        description="Measure latency percentiles and throughput with MLPerf LoadGen-style scenarios "
        f"({_SCENARIOS}). Warm-up is excluded, cold start (load + first inference) is reported separately, "
        "distinct inputs rotate, and each run reports whether its last measurement windows were stable. "
        "Lists take comma-separated values (--batch 1,8,32).",
    )
    p.add_argument("artifact", help="artifact directory or .onnx file")
    p.add_argument(
        "--backend",
        default="auto",
        help="backends, e.g. ort-cpu,openvino (default: auto, the first that can run here in the Predictor's "
        "fixed preference order: an order, not a measurement)",
    )
    p.add_argument("--precision", default="fp32", help="variant precisions, e.g. fp32,int8 (default: fp32)")
    p.add_argument("--batch", default="1", help="batch sizes (default: 1)")
    p.add_argument(
        "--concurrency",
        default="1",
        help="parallel callers / streams (default: 1; single-stream is always 1)",
    )
    p.add_argument(
        "--scenario", default="single-stream", help=f"scenarios: {_SCENARIOS} (default: single-stream)"
    )
    p.add_argument(
        "--duration", type=float, default=10.0, help="seconds to measure each run at least (default: 10)"
    )
    p.add_argument(
        "--max-duration",
        type=float,
        help="extend unstable runs up to this many seconds (default: 2× --duration)",
    )
    p.add_argument("--count", type=int, help="stop each run after this many queries")
    p.add_argument(
        "--min-queries", type=int, default=20, help="never stop before this many queries (default: 20)"
    )
    p.add_argument("--warmup", type=int, default=10, help="warm-up calls per caller (default: 10)")
    p.add_argument(
        "--warmup-seconds", type=float, help="warm up at least this long (default: 10%% of --duration, ≤ 2 s)"
    )
    p.add_argument(
        "--stability", type=_fraction, default=0.10, help="allowed spread between windows (default: 10%%)"
    )
    p.add_argument("--device", help="device for every backend (cpu, cuda, cuda:1, an OpenVINO device)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the runtime's)")
    p.add_argument("--inter-op-threads", type=int, help="inter-op threads")
    p.add_argument("--streams", type=int, help="OpenVINO streams (default: chosen by the hint)")
    p.add_argument(
        "--hint", choices=("latency", "throughput"), help="performance hint (default: throughput for offline)"
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:DxDx..",
        help="shape for dynamic axes, repeatable",
    )
    p.add_argument("--inputs", action="append", default=[], metavar="[NAME=]FILE.npy",
                   help="real inputs, axis 0 = samples; with --include-preprocessing, uint8 images [N,H,W(,C)]")  # fmt: skip
    p.add_argument(
        "--include-preprocessing",
        action="store_true",
        help="feed raw uint8 images through the artifact's preprocessing",
    )
    p.add_argument(
        "--image-size",
        type=_hw,
        help="raw random image size HxW (or N for a square) with --include-preprocessing",
    )
    p.add_argument("--pool", type=int, default=16, help="distinct inputs to rotate (default: 16)")
    p.add_argument(
        "--target-qps", type=float, help="server scenario arrival rate (default: half the warm-up throughput)"
    )
    p.add_argument("--latency-bound-ms", type=float, help="server scenario p99 bound to judge")
    p.add_argument(
        "--no-overhead", action="store_true", help="skip measuring the harness overhead (fake backend)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each run in N rounds spread over the sweep (round-robin); compare then accounts for "
        "the machine's drift between rounds (use 3-5 on noisy CI runners)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for inputs and arrival times")
    p.add_argument("--json", metavar="OUT", help="write the results JSON here")
    p.add_argument("--report", metavar="OUT_DIR", help="write a Markdown/HTML report with plots here")
    p.set_defaults(func=_run_bench)


def _config_from_args(args: argparse.Namespace) -> Any:
    from infership.calibration import parse_named_shape

    from .config import BenchConfig, parse_list
    from .scenarios import Scenario

    scenarios = parse_list(args.scenario, cast=Scenario.parse)
    shapes = dict(parse_named_shape(s, what="--shape", require_name=True) for s in args.shape)
    inputs: dict[str, str] = {}
    for item in args.inputs:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        inputs[name] = path
    return BenchConfig(
        artifact=args.artifact,
        backends=parse_list(args.backend),
        precisions=parse_list(args.precision),
        batch_sizes=parse_list(args.batch, cast=int),
        concurrency=parse_list(args.concurrency, cast=int),
        scenarios=scenarios,
        device=args.device,
        duration_s=args.duration if args.duration > 0 else None,
        max_duration_s=args.max_duration,
        min_queries=args.min_queries,
        max_queries=args.count,
        stability_tolerance=args.stability,
        warmup_queries=args.warmup,
        warmup_s=args.warmup_seconds,
        intra_op_threads=args.threads,
        inter_op_threads=args.inter_op_threads,
        num_streams=args.streams,
        hint=args.hint,
        shapes=shapes,
        inputs=inputs,
        include_preprocessing=args.include_preprocessing,
        image_size=args.image_size,
        pool_size=args.pool,
        target_qps=args.target_qps,
        latency_bound_ms=args.latency_bound_ms,
        measure_overhead=not args.no_overhead,
        rounds=args.rounds,
        seed=args.seed,
    )


def _resolve_unnamed_inputs(config: Any) -> Any:
    """``--inputs FILE.npy`` without a name means the single input (or the preprocessed one)."""
    if "" not in config.inputs:
        return config
    from dataclasses import replace

    from infership.runtime.artifact import Artifact
    from infership.runtime.errors import InvalidInputError

    manifest = Artifact.load(config.artifact).manifest
    if config.include_preprocessing and manifest.preprocessing is not None:
        name = manifest.preprocessing.input
    elif len(manifest.inputs) == 1:
        name = manifest.inputs[0].name
    else:
        names = [s.name for s in manifest.inputs]
        raise InvalidInputError(
            f"--inputs FILE without NAME=: the model has {len(names)} inputs {names}; use NAME=FILE"
        )
    inputs = dict(config.inputs)
    inputs[name] = inputs.pop("")
    return replace(config, inputs=inputs)


def _run_bench(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .config import plan_runs
    from .harness import run_sweep
    from .results import save_results

    config = _resolve_unnamed_inputs(_config_from_args(args))
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
    headers, rows = summary_table(results)
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


def add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare results with a baseline; exit 0 (ok), 1 (regression) or 2 (not comparable)",
        description="Match runs by key and decide with bootstrap confidence intervals on the median and p99 "
        "ratios: a statistic regresses when its ratio exceeds the threshold and the interval excludes 1. "
        "The variants' validation figures are compared by their declared unit and direction: quality "
        "figures (accuracy, accuracy_drop, top-1 agreement...) regress when worse by more than "
        "--max-accuracy-drop points; any rise of nonfinite (NaN/Inf outputs) is a regression. Exit 0: no "
        "regression; 1: regression or a baseline run missing; 2: the files cannot be compared (other "
        "environment, unless --force; no run in common; malformed or foreign file).",
    )
    p.add_argument("baseline", help="baseline results JSON")
    p.add_argument("current", help="current results JSON")
    p.add_argument(
        "--max-slowdown", type=_fraction, default=0.10, help="tolerated median slowdown (default: 10%%)"
    )
    p.add_argument(
        "--max-p99-slowdown",
        type=_fraction_or_off,
        help="tolerated p99 slowdown (default: 2.5× --max-slowdown); 'off' reports p99 without gating it",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        help="tolerated worsening of a quality figure in points, in its declared direction (default: 1)",
    )
    p.add_argument(
        "--confidence", type=float, default=0.95, help="bootstrap confidence level (default: 0.95)"
    )
    p.add_argument("--force", action="store_true", help="compare even if the environment fingerprints differ")
    p.add_argument("--json", metavar="OUT", help="write the comparison as JSON")
    p.add_argument("--report", metavar="OUT_DIR", help="write a report of CURRENT with the comparison")
    p.set_defaults(func=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from .compare import EXIT_NOT_COMPARABLE, NotComparableError, Thresholds, compare_results
    from .report import comparison_table
    from .results import ResultsError, load_results

    err = _console(stderr=True)
    try:
        baseline = load_results(args.baseline)
        current = load_results(args.current)
        thresholds = Thresholds(
            max_slowdown=args.max_slowdown,
            max_p99_slowdown=args.max_p99_slowdown,
            max_accuracy_drop=args.max_accuracy_drop,
            confidence=args.confidence,
        )
        comparison = compare_results(baseline, current, thresholds=thresholds, force=args.force)
    except (ResultsError, NotComparableError) as exc:
        err.print(f"[bold red]not comparable:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_NOT_COMPARABLE
    console = _console()
    headers, rows = comparison_table(comparison)
    style = {"REGRESSION": "bold red", "MISSING": "bold red", "IMPROVEMENT": "green", "NEW": "cyan"}
    table = Table(*headers, title=f"infership compare · {args.baseline} → {args.current}")
    for row in rows:
        s = style.get(row[1])
        table.add_row(*row, style=s)
    console.print(table)
    for diff in comparison.environment_differences:
        console.print(f"[yellow]environment differs (--force):[/] {diff}", highlight=False)
    failures = comparison.failures
    if failures:
        console.print(f"[bold red]{len(failures)} regression(s)[/] beyond the thresholds: "
                      + ", ".join(r.key for r in failures), highlight=False)  # fmt: skip
    else:
        console.print("[green]no regression[/] beyond the thresholds", highlight=False)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(comparison.to_dict(), f, indent=1)
    if args.report:
        from .report import write_report

        console.print(f"report: {write_report(current, args.report, comparison=comparison)}", highlight=False)
    return comparison.exit_code


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
