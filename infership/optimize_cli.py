"""The ``infership optimize`` and ``infership explain`` subcommands.

Only argparse is imported at module level; the runtimes load when a command runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

_OPTIMIZE_EXAMPLES = """examples:
  infership optimize runs/digits/pipeline/artifact --time-budget 60
  infership optimize out/resnet --calibration calib_images/ --objective throughput --peers
  infership optimize out/resnet --objective latency-budget --latency-budget-ms 20
  infership optimize out/encoder --shape input_ids=1x128 --shape attention_mask=1x128

The chosen path is stored in the artifact as its deployment profile for this machine: Predictor.load(ARTIFACT)
then opens it (placement.details["selection"] == "from profile"). Exit status: 0 a path was chosen; 1 error
or no candidate ran within the accuracy budget.
"""


def add_optimize(sub: Any) -> None:
    """Register the ``optimize`` subcommand on ``sub`` (the ``infership`` command's subparsers)."""
    p = sub.add_parser(
        "optimize",
        help="measure backend × variant × settings × batch here and store the fastest correct path",
        description="Search the ways to run an artifact on this machine (backends, fp32/int8/bf16 variants, "
        "runtime settings, batch) by successive halving within a time budget, keep the fastest within the "
        "accuracy budget for the objective, and store it as the artifact's deployment profile.",
        epilog=_OPTIMIZE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact directory")
    p.add_argument(
        "--objective",
        choices=["latency", "throughput", "latency-budget"],
        default="latency",
        help="latency: batch-1 p50; throughput: offline items/s; latency-budget: the most items/s with "
        "p99 <= --latency-budget-ms (default latency)",
    )
    p.add_argument("--time-budget", type=float, default=300.0, metavar="SECONDS", help="default 300")
    p.add_argument("--latency-budget-ms", type=float, metavar="MS", help="the p99 bound of latency-budget")
    p.add_argument(
        "--calibration",
        metavar="SOURCE",
        help="make the int8 variants the artifact lacks from this data first (its held-out part judges "
        "unvalidated candidates)",
    )
    p.add_argument(
        "--no-quantize",
        action="store_true",
        help="make no int8 variants; --calibration only judges candidates",
    )
    p.add_argument("--validation", metavar="SOURCE", help="judge unvalidated candidates on this data instead")
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="accuracy budget in points of the task's loss (default 1.0)",
    )
    p.add_argument("--backend", metavar="A,B", help="only these backends (default: all that run here)")
    p.add_argument("--batch", metavar="1,8,32", help="batch sizes for the throughput objectives")
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=SHAPE",
        help="shape of an input with dynamic axes besides the batch (repeatable); the profile's shape bucket",
    )
    p.add_argument("--device", help="cpu or cuda (default: the GPU when one is visible)")
    p.add_argument("--no-write", action="store_true", help="measure and report only; store no profile")
    p.add_argument(
        "--peers",
        action="store_true",
        help="also measure torch eager, raw ONNX Runtime int8, raw OpenVINO/NNCF int8 and torch FX int8, "
        "interleaved with the chosen path",
    )
    p.add_argument(
        "--torch-model",
        metavar="MODEL",
        help="the fp32 model for the torch peers: module:callable, file.py:callable...",
    )
    p.add_argument("--torch-weights", metavar="FILE", help="state_dict checkpoint to load into --torch-model")
    p.add_argument("--no-explain", action="store_true", help="skip the explanation of the figures")
    p.add_argument("--top", type=int, default=15, help="table rows (default 15; 0 = all)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.set_defaults(func=_run_optimize)


def add_explain(sub: Any) -> None:
    """Register the ``explain`` subcommand on ``sub``."""
    p = sub.add_parser(
        "explain",
        help="why it is not faster here: int8 vs fp32 measured, int8 share, top operators, threads, ISA",
        description="Measure and explain the speed of an artifact on this machine: int8 vs fp32 as measured, "
        "the share of operator time running in int8 (from the runtime's profiler), the top operators, "
        "thread scaling and the CPU's int8 support.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact directory")
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=SHAPE",
        help="shape of an input with dynamic axes besides the batch (repeatable), e.g. input_ids=1x128",
    )
    p.add_argument("--json", metavar="FILE", help="write the explanation as JSON")
    p.set_defaults(func=_run_explain)


def _shapes(texts: list[str]) -> dict[str, tuple[int, ...]]:
    """``--shape NAME=SHAPE`` options as a mapping."""
    from infership.calibration import parse_named_shape

    shapes = {}
    for text in texts:
        name, shape = parse_named_shape(text, what="--shape", require_name=True)
        shapes[str(name)] = shape
    return shapes


def _run_optimize(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from infership.convert.int8.cli import torch_model_from_args
    from infership.optimizer import optimize

    shapes = _shapes(args.shape)
    console = Console(width=max(Console().width, 132))  # the table needs the width; piped output too
    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("optimize", total=args.time_budget)

        def progress(elapsed: float, total: float, what: str) -> None:
            bar.update(task, completed=elapsed, description=what[:70])

        report = optimize(
            args.artifact, objective=args.objective, time_budget_s=args.time_budget,
            latency_budget_ms=args.latency_budget_ms, calibration=args.calibration, quantize=not args.no_quantize,
            validation=args.validation,
            max_accuracy_drop=args.max_accuracy_drop,
            backends=[b.strip() for b in args.backend.split(",")] if args.backend else None,
            batch_sizes=[int(b) for b in args.batch.split(",")] if args.batch else None,
            shapes=shapes, device=args.device, write=not args.no_write, peers=args.peers,
            torch_model=torch_model_from_args(args), explain=not args.no_explain, progress=progress,
        )  # fmt: skip
    print_report(console, report, top=args.top)
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.chosen is not None else 1


def print_report(console: Any, report: Any, *, top: int = 15) -> None:
    """The table of candidates, the choice, the peers and the explanation."""
    from rich.table import Table

    for q in report.quantized:
        console.print(f"int8 {q['target']}: {q['status']} ({q['detail']})", highlight=False)
    t = Table(title=f"{report.objective}: {len(report.trials)} candidates, {report.rounds} rounds")
    for col in TRIAL_COLUMNS:
        t.add_column(col, justify="left" if col in ("candidate", "status", "accuracy") else "right")
    rows = report.trials if top <= 0 else report.trials[:top]
    for tr in rows:
        t.add_row(*trial_row(tr.to_dict()))
    console.print(t)
    if len(rows) < len(report.trials):
        console.print(f"... {len(report.trials) - len(rows)} more (--top 0 shows all)")
    console.print(
        f"{report.elapsed_s:.1f} s of the {report.time_budget_s:.0f} s budget (search {report.search_s:.1f} s, "
        f"accuracy checks {report.validation_s:.1f} s); peers and explanation {report.extras_s:.1f} s more",
        highlight=False,
    )
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    if report.chosen is not None:
        f = report.chosen.figures()
        where = "stored as the deployment profile" if report.committed else "not stored"
        console.print(
            f"[bold]chosen:[/] {report.chosen.candidate.describe()} — p50 {_f(f['p50_ms'])} ms, p99 "
            f"{_f(f['p99_ms'])} ms, {_f(f['throughput'], 1)} items/s; cold start {_f(f['load_ms'], 1)} ms load + "
            f"{_f(f['first_inference_ms'])} ms first inference ({where})",
            highlight=False,
        )
    if report.peers is not None:
        _print_peers(console, report.peers)
    if report.explanation is not None:
        console.print("[bold]why it is as fast as it is here:[/]")
        for line in report.explanation.lines:
            console.print(f"  {line}", highlight=False)


def _print_peers(console: Any, peers: Any) -> None:
    from rich.table import Table

    t = Table(title=f"peers, interleaved in this run (batch {peers.batch_size}; load {peers.load_average})")
    for col in ("path", "p50 ms", "items/s", "loss points", "counts"):
        t.add_column(col, justify="left" if col == "path" else "right")
    for r in (peers.chosen, *peers.peers):
        d = r.to_dict()
        t.add_row(d["name"], _f(d["p50_ms"]), _f(d["throughput"], 1), _f(d["loss_points"], 2),
                  "yes" if d["counts"] else f"no: {d['note'][:50]}")  # fmt: skip
    console.print(t)
    if peers.ratio is not None:
        console.print(f"chosen path: {peers.ratio:.2f}x the best peer ({peers.best_peer})", highlight=False)


def _run_explain(args: argparse.Namespace) -> int:
    from rich.console import Console

    from infership.explain import explain

    e = explain(args.artifact, shapes=_shapes(args.shape))
    console = Console()
    for line in e.lines:
        console.print(line, highlight=False)
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(e.to_dict(), indent=2) + "\n")
    return 0


TRIAL_COLUMNS = (
    "candidate",
    "status",
    "rounds",
    "p50 ms",
    "p99 ms",
    "items/s",
    "load ms",
    "first ms",
    "accuracy",
)


def trial_row(d: dict[str, Any]) -> list[str]:
    """One candidate's cells, in :data:`TRIAL_COLUMNS` order (``d`` is ``Trial.to_dict()``)."""
    acc = d["accuracy"] + (f" {d['loss_points']:.2f}" if isinstance(d["loss_points"], float) else "")
    status = d["status"] if not d["error"] else f"failed: {d['error'][:40]}"
    return [
        d["candidate"], status, str(d["rounds"]), _f(d["p50_ms"]), _f(d["p99_ms"]), _f(d["throughput"], 1),
        _f(d["load_ms"], 1), _f(d["first_inference_ms"], 2), acc,
    ]  # fmt: skip


def _f(v: Any, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"
