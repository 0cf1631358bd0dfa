"""``infership compare``: the CI gate, over stored results files or (``--rerun``) over two artifacts
measured interleaved in this job.

Exit codes (:mod:`infership.bench.rule`): 0 no regression, 1 regression (or a baseline run missing),
2 not comparable, 3 inconclusive (the run's noise was too large to decide), 4 error (a bad argument, an
unreadable file, a model that cannot load). The command maps every error to 4 itself, usage errors
included, so a CI job never reads a broken invocation as "not comparable" or "regression".
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from .cli_options import add_measure_options, config_from_args, console, fraction, fraction_or_off

#: ``compare``'s exit code for errors (the same as :data:`infership.bench.rule.EXIT_ERROR`; repeated here so
#: building the parser imports nothing but argparse).
EXIT_ERROR = 4

#: A/B defaults (seconds): measured per side at least, and the budget per side within which a noisy run
#: extends itself (chosen from benchmarks/gate_study.py; see docs/bench.md).
RERUN_DURATION_S = 10.0
RERUN_BUDGET_FACTOR = 4


def add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="the CI gate: compare with a baseline (stored results, or --rerun both artifacts in this job); "
        "exit 0 ok, 1 regression, 2 not comparable, 3 inconclusive, 4 error",
        description="Compare CURRENT with BASELINE and exit with the verdict. Without --rerun, both are results "
        "files written by 'infership bench --json'; runs are matched by key and the median and p99 ratios get "
        "bootstrap intervals. With --rerun, both are artifacts, measured now in alternating blocks (with a "
        "rest before each) so drift hits both alike, and judged from the paired block differences; the run "
        "extends itself while too noisy to decide, up to --max-duration per side. A statistic regresses when "
        "its ratio exceeds the threshold and its interval excludes 1; every verdict states the smallest "
        "slowdown the run could have detected, and a run that could not see a slowdown of the threshold's "
        "size is inconclusive. Validation figures are compared by their declared unit and direction: "
        "quality figures (accuracy, accuracy_drop, top-1 agreement...) regress when worse by more than "
        "--max-accuracy-drop points; any rise of nonfinite (NaN/Inf outputs) is a regression. Exit 0: no "
        "regression; 1: regression or a baseline run missing; 2: not comparable (other environment unless "
        "--force, no run in common, sides resolved to different backends or variants); 3: inconclusive; "
        "4: error (bad argument, unreadable or foreign file, a model that cannot load).",
    )
    p.add_argument("baseline", help="baseline results JSON (with --rerun: the baseline artifact)")
    p.add_argument("current", help="current results JSON (with --rerun: the candidate artifact)")
    p.add_argument(
        "--rerun",
        action="store_true",
        help="BASELINE and CURRENT are artifacts: measure both now, interleaved, and judge the paired blocks",
    )
    p.add_argument(
        "--max-slowdown", type=fraction, default=0.10, help="tolerated median slowdown (default: 10%%)"
    )
    p.add_argument(
        "--max-p99-slowdown",
        type=fraction_or_off,
        help="tolerated p99 slowdown (default: 2.5× --max-slowdown); 'off' reports p99 without gating it",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        help="tolerated worsening of a quality figure in points, in its declared direction (default: 1)",
    )
    p.add_argument(
        "--confidence", type=float, default=0.95, help="confidence level of the intervals (default: 0.95)"
    )
    p.add_argument("--force", action="store_true", help="compare even if the environment fingerprints differ")
    p.add_argument(
        "--job-drift",
        type=fraction,
        default=None,
        help="stored results: how far one job's machine speed may sit from another's (one standard deviation; "
        "default: 10%%, measured on a shared 2-core runner); the intervals allow for it, as samples from one job "
        "cannot show it. 0 for a runner an A/A of two jobs showed quiet. --rerun measures both in one job",
    )
    p.add_argument("--json", metavar="OUT", help="write the comparison as JSON")
    p.add_argument("--report", metavar="OUT_DIR", help="write a report of CURRENT with the comparison")
    p.add_argument("--junit", metavar="FILE", help="write the verdicts as JUnit XML (one case per statistic)")
    p.add_argument(
        "--summary",
        metavar="FILE",
        help="write a Markdown summary for a pull-request comment (also appended to $GITHUB_STEP_SUMMARY when set)",
    )
    ab = p.add_argument_group("A/B in one job (with --rerun)")
    ab_actions = add_measure_options(
        ab,  # type: ignore[arg-type]  # an argument group takes add_argument like a parser
        duration=RERUN_DURATION_S,
        duration_help=f"seconds measured per side at least (default: {RERUN_DURATION_S:g})",
        max_duration_help=f"budget per side: extend a run too noisy to decide up to this many seconds "
        f"(default: {RERUN_BUDGET_FACTOR}× --duration), then call it inconclusive",
    )
    ab_actions += [
        ab.add_argument("--block", type=float, default=0.5, help="seconds per block (default: 0.5)"),
        ab.add_argument(
            "--rest", type=float, default=0.1, help="pause before every block, seconds (default: 0.1)"
        ),
        ab.add_argument(
            "--save-runs", metavar="DIR", help="write each side's results (baseline.json, candidate.json)"
        ),
    ]
    p.set_defaults(func=_run_compare, _ab_actions=tuple(ab_actions))
    # Usage errors exit 4 like every other error of this command, not argparse's 2 ("not comparable"):
    # this parser reports its own errors, unknown arguments included (which argparse would otherwise hand
    # to the top-level parser).
    p.error = lambda message: _usage_error(p, message)  # type: ignore[method-assign]
    known = p.parse_known_args

    def strict(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = known(args, namespace)
        if extras:
            p.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras

    p.parse_known_args = strict  # type: ignore[method-assign]


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_ERROR)


def _rerun_only(args: argparse.Namespace) -> list[str]:
    """A/B options given without --rerun (they would be silently ignored)."""
    return [a.option_strings[0] for a in args._ab_actions if getattr(args, a.dest) != a.default]


def _run_compare(args: argparse.Namespace) -> int:
    from infership.runtime.errors import InfershipError

    from .compare import NotComparableError
    from .rule import EXIT_NOT_COMPARABLE

    err = console(stderr=True)
    try:
        return _compare(args)
    except NotComparableError as exc:
        err.print(f"[bold red]not comparable:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_NOT_COMPARABLE
    except (InfershipError, OSError) as exc:
        # A bad file, option or model: the gate could not run, which is neither a regression nor "not
        # comparable". The facade's handler would return 1 for these, so they are caught here.
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_ERROR


def _compare(args: argparse.Namespace) -> int:
    from infership.runtime.errors import InvalidInputError

    from .compare import compare_results
    from .results import load_results
    from .rule import Thresholds

    drift = {} if args.job_drift is None or args.rerun else {"job_drift": args.job_drift}
    thresholds = Thresholds(
        max_slowdown=args.max_slowdown,
        max_p99_slowdown=args.max_p99_slowdown,
        max_accuracy_drop=args.max_accuracy_drop,
        confidence=args.confidence,
        **drift,
    )
    if args.rerun:
        if args.force or args.job_drift is not None:
            raise InvalidInputError("--force and --job-drift apply to stored results, not to --rerun")
        outcome = _rerun(args, thresholds)
        comparison, current = outcome.comparison, outcome.candidate
    else:
        given = _rerun_only(args)
        if given:
            raise InvalidInputError(
                f"{', '.join(given)}: apply only with --rerun (BASELINE and CURRENT artifacts)"
            )
        baseline, current = load_results(args.baseline), load_results(args.current)
        comparison = compare_results(baseline, current, thresholds=thresholds, force=args.force)
        from dataclasses import replace

        comparison = replace(comparison, baseline=args.baseline, current=args.current)
    _print(comparison)
    _write_outputs(args, comparison, current)
    return comparison.exit_code


def _rerun(args: argparse.Namespace, thresholds: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .ab import ABConfig, run_ab
    from .cli_options import resolve_unnamed_inputs
    from .results import save_results

    sweep = resolve_unnamed_inputs(config_from_args(args, artifact=args.current))
    if args.max_duration is None:
        from dataclasses import replace

        sweep = replace(sweep, max_duration_s=RERUN_BUDGET_FACTOR * (sweep.duration_s or 0.0))
    config = ABConfig(
        baseline=args.baseline, sweep=sweep, block_s=args.block, rest_s=args.rest, validation=args.validation
    )
    with Progress(
        TextColumn("[bold]compare --rerun[/]"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
        console=console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("loading", total=None)

        def progress(done: int, total: int, description: str) -> None:
            bar.update(task, completed=done, total=total, description=description)

        outcome = run_ab(config, thresholds=thresholds, progress=progress)
    if args.save_runs:
        from pathlib import Path

        out = Path(args.save_runs)
        save_results(outcome.baseline, out / "baseline.json")
        save_results(outcome.candidate, out / "candidate.json")
    return outcome


def _print(comparison: Any) -> None:
    from rich.table import Table

    from .report import comparison_table
    from .rule import EXIT_CODES

    out = console()
    headers, rows = comparison_table(comparison)
    style = {"REGRESSION": "bold red", "MISSING": "bold red", "IMPROVEMENT": "green", "NEW": "cyan",
             "INCONCLUSIVE": "yellow", "NOT-COMPARABLE": "bold yellow"}  # fmt: skip
    how = "A/B in this job" if comparison.mode == "rerun" else "stored results"
    # The reasons go under the table, one line per run: a narrow column would wrap them beyond reading.
    table = Table(
        *headers[:-1], title=f"infership compare ({how}) · {comparison.baseline} → {comparison.current}"
    )
    for row in rows:
        table.add_row(*row[:-1], style=style.get(row[1]))
    out.print(table)
    for row in rows:
        if row[-1]:
            out.print(
                f"[{style.get(row[1]) or 'default'}]{row[1].lower()}[/] {row[0]}: {row[-1]}",
                highlight=False,
                soft_wrap=True,
            )
    for diff in comparison.environment_differences:
        out.print(f"[yellow]environment differs (--force):[/] {diff}", highlight=False)
    code = comparison.exit_code
    colour = {0: "green", 1: "bold red", 2: "bold yellow", 3: "yellow"}.get(code, "bold red")
    failures = comparison.failures
    detail = (
        f"{len(failures)} regression(s) beyond the thresholds: " + ", ".join(r.key for r in failures)
        if failures
        else EXIT_CODES[code]
    )
    if not failures and code == 0:
        detail = "no regression beyond the thresholds"
    out.print(f"[{colour}]{detail}[/] (exit {code})", highlight=False)


def _write_outputs(args: argparse.Namespace, comparison: Any, current: Any) -> None:
    import json

    from .ci import junit_xml, markdown_summary, write_step_summary, write_text

    out = console()
    if args.json:
        write_text(args.json, json.dumps(comparison.to_dict(), indent=1) + "\n")
    if args.junit:
        out.print(f"junit: {write_text(args.junit, junit_xml(comparison))}", highlight=False)
    summary = markdown_summary(comparison)
    if args.summary:
        out.print(f"summary: {write_text(args.summary, summary)}", highlight=False)
    step = write_step_summary(summary)
    if step is not None:
        out.print(f"summary appended to $GITHUB_STEP_SUMMARY ({step})", highlight=False)
    if args.report:
        from .report import write_report

        out.print(f"report: {write_report(current, args.report, comparison=comparison)}", highlight=False)
