"""``infership pipeline``: the main job in one command (see :mod:`infership.pipeline`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_pipeline(sub: Any) -> None:
    p = sub.add_parser(
        "pipeline",
        help="model → checked ONNX → fp16/int8/OpenVINO → accuracy → benchmark → report, resumable",
        description="Run the whole job: export and check, simplify, fp16, static int8 (ONNX Runtime and "
        "OpenVINO) with accuracy validation and repair, accuracy of every backend × precision on held-out "
        "data, a benchmark of each, and a report with plots. Steps whose inputs are unchanged (by hash) are "
        "skipped, so re-running is cheap and an interrupted run resumes. Options come from --config "
        "(TOML, [pipeline] table) and flags; flags win.",
    )
    p.add_argument(
        "model", nargs="?", help="model source, as for 'infership export' (or 'model' in --config)"
    )
    p.add_argument("-o", "--output", help="output directory (artifact/, bench.json, report/ ...)")
    p.add_argument("--config", help="TOML file with a [pipeline] table")
    p.add_argument(
        "--arch", help="architecture for a state_dict checkpoint (torchvision:NAME, module:fn, file.py:fn)"
    )
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-shape", help="example input shape, e.g. 1x3x224x224")
    p.add_argument("--preprocess", dest="preprocessing", help="preprocessing preset attached to the artifact")
    p.add_argument(
        "--task",
        metavar="TASK",
        help="what the model does, deciding how outputs are judged: tensor, classification, embedding, "
        "segmentation... (see `infership export --help`; default: inferred where obvious)",
    )
    p.add_argument(
        "--calibration",
        help="calibration data: a .npy/.npz file, an image folder, FILE.py:FUNCTION or SCHEME:... "
        "(e.g. examples/digits/data.py:train); without it no int8 variants are made",
    )
    p.add_argument(
        "--holdout",
        help="labelled held-out data for accuracy, in the same forms (default: a 20%% split of the "
        "calibration data; with neither, accuracy is not measured)",
    )
    p.add_argument(
        "--samples", dest="calibration_samples", type=int, help="calibration samples (default 256)"
    )
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--int8-targets", help="comma list of ort, openvino, torch (default ort,openvino)")
    p.add_argument("--max-accuracy-drop", type=float, help="int8 accuracy budget in points (default 0.5)")
    p.add_argument("--backends", help="comma list (default: torch,ort-cpu,openvino,ort-cuda,ort-trt)")
    p.add_argument("--precisions", help="comma list (default fp32,fp16,int8)")
    p.add_argument("--batch", dest="batch_sizes", help="comma list of benchmark batch sizes (default 1,16)")
    p.add_argument("--scenario", dest="scenarios", help="comma list (default single-stream,offline)")
    p.add_argument("--duration", dest="duration_s", type=float, help="seconds per benchmark run (default 3)")
    p.add_argument("--force", action="store_true", help="run every step even if it is up to date")
    p.set_defaults(func=_run_pipeline)


def _run_pipeline(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from infership.pipeline import PipelineConfig, run_pipeline
    from infership.pipeline_report import summary_table
    from infership.runtime.errors import InvalidInputError

    flags = {
        k: getattr(args, k)
        for k in (
            "model",
            "output",
            "arch",
            "num_classes",
            "preprocessing",
            "task",
            "calibration",
            "holdout",
            "calibration_samples",
            "method",
            "int8_targets",
            "max_accuracy_drop",
            "backends",
            "precisions",
            "batch_sizes",
            "scenarios",
            "duration_s",
        )
    }
    if args.input_shape:
        from infership.calibration import parse_shape

        flags["input_shape"] = parse_shape(args.input_shape, what="--input-shape")
    if args.config:
        config = PipelineConfig.from_toml(args.config, **flags)
    else:
        if not flags["model"] or not flags["output"]:
            raise InvalidInputError("give MODEL and -o OUTPUT, or --config FILE")
        config = PipelineConfig(**{k: v for k, v in flags.items() if v is not None})

    console = Console(stderr=True)

    def progress(step: str, message: str) -> None:
        style = "dim" if message == "up to date" else "bold"
        console.print(f"[{style}]{step:>9}[/] {message}", highlight=False)

    result = run_pipeline(config, force=args.force, progress=progress)
    out = Console()
    headers, body = summary_table(result.rows)
    table = Table(
        *headers,
        title=f"{result.artifact}",
        title_justify="left",
        caption_justify="left",
        caption=_ACC_CAPTION.get(_task_of(result.artifact), _ACC_CAPTION["classification"])
        + " · p50/p99: batch 1, single stream · speedup: torch fp32 p50 / p50 · items/s: best offline "
        "throughput",
    )
    for row in body:
        table.add_row(*row)
    out.print(table)
    for label, why in result.skipped:
        out.print(f"[dim]not run here: {label}: {why}[/]", highlight=False)
    out.print(f"report: {result.report}  ·  results: {config.output / 'bench.json'}", highlight=False)
    return 0


#: What the table's accuracy and agreement columns mean, per task.
_ACC_CAPTION = {
    "classification": "acc: top-1 on held-out data · agree: same top-1 as torch fp32",
    "segmentation": "acc: mIoU % on held-out masks · agree: pixels of the same class as torch fp32",
}


def _task_of(artifact: Any) -> str:
    from infership.runtime import Artifact

    return Artifact.load(artifact).manifest.task.value
