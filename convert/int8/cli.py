"""The ``infership quantize`` subcommand: add validated static int8 variants to an artifact.

Only argparse is imported at module level; the runtimes load when the command runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

_EXAMPLES = """examples:
  infership quantize runs/digits/pipeline/artifact --calibration examples/digits/data.py:train \\
      --holdout examples/digits/data.py:test --max-accuracy-drop 0.5
  infership quantize out/resnet --calibration calib_images/ --samples 256 --target ort,openvino
  infership quantize out/resnet --calibration calib.npz --method percentile --preset tensorrt --target ort
  infership quantize runs/digits/pipeline/artifact --calibration examples/digits/data.py:train \\
      --holdout examples/digits/data.py:test --target all \\
      --torch-model examples/digits/model.py:build_model --torch-weights runs/digits/digits.pt
  infership quantize out/minilm --calibration sentences.txt --holdout held_out.txt --max-accuracy-drop 3

CALIBRATION / --holdout: a .npy/.npz file (or a directory of them), an image folder (flat, or one
subfolder per class for labels) read through the artifact's preprocessing, a .txt file of texts (one per
line) or .tsv file (label<TAB>text) read through the artifact's tokenizer, a registered SCHEME:ARGUMENT
source (numpy:PATH, images:FOLDER, text:PATH, ...), or FILE.py:FUNCTION returning the data.
Text models (exported from hf:PATH) default to --target ort-dynamic,openvino,openvino-weights and NNCF's
transformer preset;
with --max-accuracy-drop, the int8 variants that meet it are timed at sequence lengths 8..512 and
Predictor.load(ARTIFACT, precision='int8') routes each batch to the fastest for its length.
Exit status: 0 written (with --keep-passing: the targets within budget); 1 error, or the accuracy budget was
missed (nothing written).
"""

_ORT_PRESETS = ("cpu-vnni", "cpu-avx2", "tensorrt", "transformer")
_NNCF_PRESETS = ("cpu", "accurate", "transformer")


def add_quantize(sub: Any) -> None:
    """Register the ``quantize`` subcommand on ``sub`` (the ``infership`` command's subparsers)."""
    from infership.runtime.tasks import Task

    from .types import HOLDOUT_FRACTION

    p = sub.add_parser(
        "quantize",
        help="add validated static int8 variants (ONNX Runtime QDQ, OpenVINO/NNCF, PyTorch) to an artifact",
        description="Calibrate and quantize an artifact's fp32 ONNX model to int8 for ONNX Runtime and OpenVINO "
        "(and PyTorch as a peer), validate each against fp32 on held-out data, and repair a model that misses "
        "--max-accuracy-drop by keeping its worst layers in float. Load the result with "
        "Predictor.load(ARTIFACT, precision='int8').",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact directory with an onnx-fp32 variant")
    p.add_argument("--calibration", required=True, metavar="SOURCE", help="calibration data (see below)")
    p.add_argument(
        "--holdout", metavar="SOURCE", help="validation data (default: split off the calibration data)"
    )
    p.add_argument(
        "--target",
        help="ort, openvino, torch, ort-tensor (quantize_static's per-tensor recipe), ort-dynamic, "
        "openvino-ir (NNCF on the graph openvino.convert_model makes), openvino-weights, comma-separated, or all (ort, openvino, torch); default ort,openvino, or "
        "ort-dynamic,openvino,openvino-weights for text models",
    )
    p.add_argument(
        "--method",
        choices=["minmax", "entropy", "percentile"],
        help="calibration method for both runtimes (default minmax)",
    )
    p.add_argument("--samples", type=int, default=128, help="calibration samples (default 128; 0 = all)")
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=HOLDOUT_FRACTION,
        help=f"share held out without --holdout (default {HOLDOUT_FRACTION})",
    )
    p.add_argument("--holdout-samples", type=int, help="cap on held-out samples (default: all)")
    p.add_argument("--batch-size", type=int, default=16, help="calibration batch size (default 16)")
    p.add_argument(
        "--task",
        type=_task,
        metavar="|".join(t.value for t in Task),
        help="set the artifact's task before judging (recorded with the new variants): classification "
        "for top-1 agreement, accuracy and a budget; embedding for cosine and nearest-neighbour agreement "
        "(the budget: nearest-neighbour disagreement in points); tensor for element-wise figures only "
        "(default: the artifact's task, see `infership info`)",
    )

    g = p.add_argument_group("accuracy budget and repair")
    g.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="POINTS",
        help="fail (and write nothing) if int8 loses more accuracy than this, in points (top-1 "
        "disagreement without labels)",
    )
    g.add_argument(
        "--no-repair", action="store_true", help="do not exclude culprit layers to meet the budget"
    )
    g.add_argument(
        "--max-repair-steps", type=int, default=5, help="most exclusion steps per target (default 5)"
    )
    g.add_argument(
        "--keep-passing",
        action="store_true",
        help="write the targets that meet the budget when others miss it (default: write nothing)",
    )

    g = p.add_argument_group("ONNX Runtime")
    g.add_argument(
        "--preset",
        choices=_ORT_PRESETS,
        help="ONNX Runtime static preset (default cpu-vnni; transformer for text models)",
    )
    g.add_argument(
        "--per-tensor", action="store_true", help="one scale per weight tensor instead of per channel"
    )
    g.add_argument("--percentile", type=float, help="percentile for --method percentile (default 99.999)")
    g.add_argument("--num-bins", type=int, help="histogram bins for entropy/percentile")
    g.add_argument(
        "--exclude-nodes", default="", metavar="A,B", help="ONNX nodes to keep in float (both runtimes)"
    )
    g.add_argument(
        "--exclude-op-types", default="", metavar="T,U", help="ONNX op types to keep in float (ONNX Runtime)"
    )

    g = p.add_argument_group("ONNX Runtime dynamic (target ort-dynamic, transformers)")
    g.add_argument(
        "--dynamic-mode",
        choices=["mixed", "blockwise", "per-channel"],
        default="mixed",
        help="mixed: per-channel where one scale per activation tensor keeps the MatMul input's SQNR "
        "(--mixed-sqnr-db), blockwise elsewhere; blockwise: MatMulNBits int8 with activations quantized per "
        "block (accurate, slower on short inputs); per-channel: quantize_dynamic, one scale per activation "
        "tensor (Optimum's recipe). Default mixed",
    )
    g.add_argument("--block-size", type=int, default=128, help="blockwise block size (default 128)")
    g.add_argument(
        "--mixed-sqnr-db",
        type=float,
        default=30.0,
        metavar="DB",
        help="mixed mode: MatMuls whose input SQNR under one scale per tensor is below DB go blockwise "
        "(default 30)",
    )
    g.add_argument(
        "--no-smooth",
        action="store_true",
        help="mixed and per-channel modes: quantize the MatMul inputs as they are, without first moving part "
        "of their outlier channels into the weights (smoothing, one strength per node; on by default)",
    )
    g.add_argument(
        "--no-dynamic-attention",
        action="store_true",
        help="keep fused Attention in float: slower, but every row's result independent of the other rows "
        "of its batch (QAttention quantizes the whole batch's hidden states with one dynamic scale)",
    )
    g.add_argument(
        "--no-routes",
        action="store_true",
        help="do not time the variants by sequence length nor record routes (text models)",
    )

    g = p.add_argument_group("OpenVINO / NNCF")
    g.add_argument(
        "--nncf-preset",
        choices=_NNCF_PRESETS,
        help="NNCF preset (default cpu; transformer for text models)",
    )
    g.add_argument(
        "--nncf-ignored-types", default="", metavar="T,U", help="OpenVINO op types to keep in float (NNCF)"
    )
    g.add_argument(
        "--smooth-quant-alpha",
        type=float,
        default=None,
        metavar="A",
        help="SmoothQuant strength for MatMuls, 0-1 (default: for a transformer with a budget, NNCF's 0.95, "
        "then 0.8, 0.7, 0.6, 0.5 are tried before anything is kept in float)",
    )

    g = p.add_argument_group("PyTorch int8 (target torch)")
    g.add_argument(
        "--torch-model", metavar="MODEL", help="the fp32 model: module:callable, file.py:callable, ..."
    )
    g.add_argument("--torch-weights", metavar="FILE", help="state_dict checkpoint to load into --torch-model")

    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_quantize)


def _task(text: str) -> Any:
    """``--task``: a task name or one of its aliases (argparse reports the message)."""
    from infership.runtime.tasks import Task

    try:
        return Task.parse(text)
    except ValueError as exc:  # InvalidInputError is a ValueError: argparse makes it a usage error
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _configs(args: argparse.Namespace, *, text: bool = False) -> tuple[Any, Any]:
    from .openvino import NNCF_RANGE_FOR_METHOD, NncfQuantConfig
    from .ort import OrtQuantConfig

    changes: dict[str, Any] = {}
    if args.method:
        changes["method"] = args.method
    if args.per_tensor:
        changes["per_channel"] = False
    if args.percentile is not None:
        changes["percentile"] = args.percentile
    if args.num_bins is not None:
        changes["num_bins"] = args.num_bins
    changes["exclude_nodes"] = _split(args.exclude_nodes)
    changes["exclude_op_types"] = _split(args.exclude_op_types)
    ort_factory = {
        "cpu-vnni": OrtQuantConfig.cpu_vnni,
        "cpu-avx2": OrtQuantConfig.cpu_avx2,
        "tensorrt": OrtQuantConfig.tensorrt,
        "transformer": OrtQuantConfig.transformer,
    }
    ort_config = ort_factory[args.preset or ("transformer" if text else "cpu-vnni")](**changes)

    nncf_changes: dict[str, Any] = {
        "ignored_nodes": _split(args.exclude_nodes),
        "ignored_types": _split(args.nncf_ignored_types),
        "activation_range": NNCF_RANGE_FOR_METHOD[ort_config.method],
        "smooth_quant_alpha": args.smooth_quant_alpha,
    }
    nncf_factory = {
        "cpu": NncfQuantConfig.cpu,
        "accurate": NncfQuantConfig.accurate,
        "transformer": NncfQuantConfig.transformer_model,
    }
    preset = args.nncf_preset or ("transformer" if text else "cpu")
    if preset == "transformer" and not args.method:
        del nncf_changes["activation_range"]  # the transformer type picks its ranges (SmoothQuant)
    return ort_config, nncf_factory[preset](**nncf_changes)


def torch_model_from_args(args: argparse.Namespace) -> Any:
    """The fp32 ``nn.Module`` named by ``--torch-model`` (and ``--torch-weights``), or ``None``; shared by
    the commands that take these flags."""
    if args.torch_model is None:
        if args.torch_weights:
            from infership.runtime.errors import InvalidInputError

            raise InvalidInputError(
                "--torch-weights needs --torch-model (the architecture to load them into)"
            )
        return None
    from ..source import load_model_source

    if args.torch_weights:
        return load_model_source(args.torch_weights, arch=args.torch_model).model
    return load_model_source(args.torch_model).model


def _run_quantize(args: argparse.Namespace) -> int:
    from infership.calibration import from_spec
    from infership.runtime.artifact import Artifact
    from infership.runtime.text import encoder_for
    from rich.console import Console

    from .transformer import OrtDynamicConfig
    from .types import AccuracyBudgetError, Target
    from .workflow import is_transformer_text, quantize

    console = Console()
    art = Artifact.load(args.artifact)
    m = art.manifest

    encoder = encoder_for(m, art.root)

    def source(spec: str) -> Any:
        return from_spec(
            spec,
            preprocessing=m.preprocessing,
            class_names=m.labels,
            batch_size=args.batch_size,
            tokenizer=encoder,
        )

    text = is_transformer_text(m)
    targets = Target.parse(args.target) if args.target else None
    ort_config, nncf_config = _configs(args, text=text)
    dynamic = {
        "mixed": OrtDynamicConfig.mixed,
        "blockwise": OrtDynamicConfig.blockwise,
        "per-channel": OrtDynamicConfig.per_channel,
    }
    extra = {"mixed_sqnr_db": args.mixed_sqnr_db} if args.dynamic_mode == "mixed" else {}
    dynamic_config = dynamic[args.dynamic_mode](
        block_size=args.block_size,
        attention=not args.no_dynamic_attention,
        smooth=not args.no_smooth,
        **extra,
    )
    try:
        report = quantize(
            art,
            source(args.calibration),
            targets=targets,
            ort_config=ort_config,
            nncf_config=nncf_config,
            dynamic_config=dynamic_config,
            routes=not args.no_routes,
            keep_passing=args.keep_passing,
            samples=args.samples or None,
            holdout=source(args.holdout) if args.holdout else None,
            holdout_fraction=args.holdout_fraction,
            holdout_samples=args.holdout_samples,
            max_accuracy_drop=args.max_accuracy_drop,
            repair=not args.no_repair,
            max_repair_steps=args.max_repair_steps,
            task=args.task,
            torch_model=torch_model_from_args(args) if targets and Target.TORCH in targets else None,
            progress=not args.no_progress and not args.json,
        )
    except AccuracyBudgetError as exc:
        _show(console, exc.report, args.json)
        console.print(f"[bold red]failed:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    _show(console, report, args.json)
    return 0


def _show(console: Any, report: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    from rich.table import Table

    outlook = report.outlook
    style = {"fast": "green", "limited": "yellow", "slow": "red"}[outlook.verdict]
    console.print(
        f"int8 on this CPU: [{style}]{outlook.verdict}[/] ({outlook.int8_support}) — {' '.join(outlook.notes)}",
        highlight=False,
    )
    cal, held = report.calibration, report.holdout
    console.print(
        f"calibration: {cal.get('kind')} · {cal.get('samples')} samples   held out: {held.get('kind')} · "
        f"{held.get('samples')} samples",
        highlight=False,
    )
    table = Table(
        "variant",
        "ran on",
        "accuracy fp32→int8",
        "drop",
        "top-1 agree",
        "cos mean",
        "SQNR dB",
        "ms int8",
        "ms fp32",
        "speedup",
        "excluded",
        "ok",
    )
    for t in report.targets:
        mt = t.metrics
        acc = "-"
        if mt.accuracy_reference is not None and mt.accuracy is not None:
            acc = f"{mt.accuracy_reference:.2f} → {mt.accuracy:.2f}"
        table.add_row(
            t.variant_id,
            t.backend,
            acc,
            _num(mt.loss_points, "{:.2f}"),
            "-" if mt.top1_agreement is None else f"{100 * mt.top1_agreement:.2f}%",
            _num(mt.cosine_mean, "{:.5f}"),
            _num(mt.sqnr_db, "{:.1f}"),
            f"{t.latency_ms:.3f}",
            "-" if t.fp32_latency_ms is None else f"{t.fp32_latency_ms:.3f}",
            "-" if t.speedup is None else f"{t.speedup:.2f}×",
            str(len(t.excluded_nodes)),
            "[green]yes[/]" if t.passed else "[red]no[/]",
        )
    console.print(table)
    for t in report.targets:
        if t.repair is None or len(t.repair.steps) < 2:
            continue
        rt = Table(
            "step",
            "excluded ONNX nodes",
            "tensor (channel SQNR dB)",
            "drop",
            "ms",
            title=f"repair of {t.variant_id}: {t.repair.stopped}",
            title_justify="left",
        )
        for s in t.repair.steps:
            tensor = "-" if s.tensor is None else f"{s.tensor} ({s.channel_sqnr_db:.1f})"
            drop = _num(s.metrics.loss_points, "{:.2f}")
            rt.add_row(str(s.step), ", ".join(s.excluded) or "-", tensor, drop, f"{s.latency_ms:.3f}")
        console.print(rt)
    if report.routes:
        routes = ", ".join(
            f"≤{r['max']}: {r['variant']}" if r["max"] is not None else f"longer: {r['variant']}"
            for r in report.routes["routes"]
        )
        console.print(f"int8 routes by {report.routes['symbol']} length: {routes}", highlight=False)
    if report.committed:
        console.print(
            f"written to {report.artifact}: " + ", ".join(t.variant_id for t in report.targets if t.passed),
            highlight=False,
        )
        missed = [t.variant_id for t in report.targets if not t.passed]
        if missed:
            console.print(f"[yellow]left out (over budget):[/] {', '.join(missed)}", highlight=False)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
