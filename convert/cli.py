"""The ``infership export`` subcommand: a PyTorch model → a validated artifact directory.

Only argparse is imported at module level; torch and the converters load when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

_EXAMPLES = """examples:
  infership export torchvision:resnet18 --num-classes 10 -o out/resnet18 --input-shape 1x3x224x224 --preprocess imagenet
  infership export checkpoint.pt --arch torchvision:resnet18 -o out/r18 --input-shape 1x3x224x224
  infership export model.pt2 -o out/m --input-shape 1x3x224x224
  infership export my_pkg.models:build -o out/m --input-shape 1x3x64x64 --input-shape 1x4 --input-name image --input-name extra
  infership export net.py:make_model -o out/m --input-shape 1x3x256x256 --dynamic-axis x:2:height --dynamic-axis x:3:width
  infership export hf:models/all-MiniLM-L6-v2 --task feature-extraction -o out/minilm
  infership export hf:models/my-classifier --task text-classification -o out/clf --max-length 256
"""


def add_export(sub: Any) -> None:
    from infership.runtime.tasks import Task

    p = sub.add_parser(
        "export",
        help="export a PyTorch model to a validated artifact (ONNX, fp16, OpenVINO IR, torch program)",
        description="Export a PyTorch model to ONNX, check it against PyTorch, simplify it, and add fp16 and "
        "OpenVINO IR variants and the PyTorch program, each checked against PyTorch. MODEL is "
        "'torchvision:NAME', 'module:callable', 'file.py:callable', a TorchScript file, a torch.export "
        ".pt2 program, a state_dict checkpoint (with --arch), or 'hf:PATH': a Hugging Face text model "
        "saved on disk (never downloaded), exported with its tokenizer so the artifact takes text.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="the model source (see above)")
    p.add_argument(
        "-o", "--output", required=True, metavar="ARTIFACT_DIR", help="artifact directory to create"
    )
    p.add_argument("--force", action="store_true", help="replace ARTIFACT_DIR if it exists")
    p.add_argument("--name", help="artifact name (default: the directory name)")

    g = p.add_argument_group("model source")
    g.add_argument(
        "--arch", help="architecture for a state_dict checkpoint: torchvision:NAME or module:callable"
    )
    g.add_argument("--num-classes", type=int, help="num_classes for torchvision builders and factories")
    g.add_argument(
        "--allow-pickle",
        action="store_true",
        help="let torch.load unpickle arbitrary objects (runs code from the file: trusted files only)",
    )

    g = p.add_argument_group("inputs and outputs")
    g.add_argument(
        "--input-shape",
        action="append",
        metavar="SHAPE",
        help="example input shape, e.g. 1x3x224x224; repeat for each input (not for hf: text models, "
        "whose inputs come from their tokenizer)",
    )
    g.add_argument(
        "--input-dtype", action="append", metavar="DTYPE", help="dtype per input (default float32)"
    )
    g.add_argument("--input-name", action="append", metavar="NAME", help="input name; repeat for each input")
    g.add_argument(
        "--output-name", action="append", metavar="NAME", help="output name; repeat for each output"
    )
    g.add_argument("--static-batch", action="store_true", help="keep the batch size fixed (default: dynamic)")
    g.add_argument(
        "--dynamic-axis",
        action="append",
        default=[],
        metavar="INPUT:AXIS[:SYMBOL]",
        help="make another input axis dynamic, e.g. x:2:height; repeat as needed",
    )

    g = p.add_argument_group("text models (hf:PATH)")
    g.add_argument(
        "--pooling",
        choices=["mean", "cls"],
        help="embeddings: pool the tokens' states by their mean or take the first token's (default: the "
        "model folder's sentence-transformers setting, else mean)",
    )
    g.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="embeddings: L2-normalise (default: the folder's setting, else yes)",
    )
    g.add_argument(
        "--max-length",
        type=int,
        metavar="TOKENS",
        help="longest input in tokens (default: the tokenizer's and the model's limit)",
    )

    g = p.add_argument_group("export")
    g.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    g.add_argument(
        "--exporter",
        choices=["auto", "dynamo", "torchscript"],
        default="auto",
        help="auto: torch.onnx dynamo exporter, TorchScript-based one as recorded fallback (default)",
    )
    g.add_argument("--simplifier", choices=["auto", "onnxslim", "onnxsim", "none"], default="auto")
    g.add_argument("--no-simplify", action="store_true", help="same as --simplifier none")
    g.add_argument("--no-fp16", action="store_true", help="skip the onnx-fp16 variant")
    g.add_argument(
        "--no-optimize",
        action="store_true",
        help="text models: skip onnx-fp32-fused (ONNX Runtime's transformer fusions)",
    )
    g.add_argument("--no-openvino", action="store_true", help="skip the OpenVINO IR variants")
    g.add_argument("--no-torch", action="store_true", help="do not keep the PyTorch program")
    g.add_argument(
        "--strict",
        action="store_true",
        help="fail if any requested variant fails (default: leave it out, recorded)",
    )

    g = p.add_argument_group("checking against PyTorch")
    g.add_argument(
        "--task",
        type=_task,
        metavar="|".join(t.value for t in Task),
        help="what the model does, recorded in the manifest; decides how outputs are compared "
        "(classification adds top-1 agreement; embedding adds nearest-neighbour agreement; segmentation "
        "adds pixel agreement and mIoU of the class maps of [batch, classes, H, W] scores; tensor: "
        "element-wise only); Hugging Face names such as feature-extraction and text-classification are "
        "accepted. Default: embedding for hf: models; classification for one [batch, N] output with N "
        "--labels, or with --preprocess; segmentation for a [batch, N, H, W] output with N --labels; "
        "else tensor",
    )
    g.add_argument("--samples", type=int, default=4, help="random input batches to check on (default 4)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--validate-with",
        nargs="+",
        default=[],
        metavar="FILE",
        help="real inputs to check on too: .npy/.npz files, or images (uses the preprocessing)",
    )
    g.add_argument("--atol", type=float, default=1e-4, help="fp32 absolute tolerance (default 1e-4)")
    g.add_argument(
        "--rtol", type=float, default=1e-3, help="fp32 tolerance relative to the output scale (default 1e-3)"
    )
    g.add_argument(
        "--min-cosine", type=float, default=0.9999, help="fp32 minimum cosine similarity (default 0.9999)"
    )
    g.add_argument(
        "--min-top1",
        type=float,
        help="minimum top-1 agreement (classification task; default: not gated)",
    )
    g.add_argument(
        "--fp16-atol",
        type=float,
        help="tolerances for fp16 variants (default: by the precision they execute in;"
        " fp16: atol 1e-3, rtol 5e-2, cosine 0.999; bf16: atol 1e-2, rtol 0.2, cosine 0.99)",
    )
    g.add_argument("--fp16-rtol", type=float)
    g.add_argument("--fp16-min-cosine", type=float)

    g = p.add_argument_group("preprocessing and labels (lets Predictor take raw images)")
    g.add_argument(
        "--preprocess", choices=["imagenet", "unit", "centered"], help="preset for the image input"
    )
    g.add_argument("--resize", metavar="N|HxW", help="resize the short side to N, or to exactly HxW")
    g.add_argument("--crop", metavar="N|HxW", help="center crop after resizing (N: a square)")
    g.add_argument("--mean", type=float, nargs="+", help="per-channel mean (after scaling to [0, 1])")
    g.add_argument("--std", type=float, nargs="+", help="per-channel std")
    g.add_argument("--scale", type=float, help="multiplier for raw pixel values (default 1/255)")
    g.add_argument("--channels", choices=["RGB", "BGR", "L"])
    g.add_argument("--layout", choices=["NCHW", "NHWC"])
    g.add_argument("--interpolation", choices=["bilinear", "bicubic", "nearest"])
    g.add_argument("--invert", action="store_true", default=None, help="invert pixel values (255 - v) first")
    g.add_argument(
        "--labels", metavar="FILE", help="class names: one per line, or a JSON list / index→name object"
    )
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from infership.calibration import parse_hw, parse_shape
    from infership.calibration.arrays import ARRAY_SUFFIXES
    from infership.runtime import InvalidInputError
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .build import build_artifact
    from .hf import is_hf_source
    from .preprocessing import PreprocessingRequest
    from .validate import Tolerance

    if not args.input_shape and not is_hf_source(args.model):
        raise InvalidInputError("--input-shape is required (one per input), except for hf: text models")
    shapes = [parse_shape(s, what="--input-shape") for s in args.input_shape] if args.input_shape else None
    dynamic_axes = _parse_dynamic_axes(args.dynamic_axis)
    fields = {
        "resize": _parse_resize(args.resize) if args.resize else None,
        "crop": parse_hw(args.crop, what="--crop") if args.crop else None,
        "mean": tuple(args.mean) if args.mean else None,
        "std": tuple(args.std) if args.std else None,
        "scale": args.scale,
        "channels": args.channels,
        "layout": args.layout,
        "interpolation": args.interpolation,
        "invert": args.invert,
    }
    pre = None
    if args.preprocess or any(v is not None for v in fields.values()):
        pre = PreprocessingRequest(preset=args.preprocess, **fields)  # type: ignore[arg-type]
    if (
        args.validate_with
        and pre is None
        and any(Path(f).suffix.lower() not in ARRAY_SUFFIXES for f in args.validate_with)
    ):
        raise InvalidInputError(
            "--validate-with images need preprocessing (--preprocess or --resize/--crop/...)"
        )
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("export", total=None)

        def progress(description: str, done: int, total: int) -> None:
            bar.update(task, description=description, completed=done, total=total)

        artifact = build_artifact(
            args.model,
            args.output,
            input_shapes=shapes,
            input_dtypes=args.input_dtype,
            input_names=args.input_name,
            output_names=args.output_name,
            dynamic_batch=False if args.static_batch else None,
            dynamic_axes=dynamic_axes or None,
            opset=args.opset,
            exporter=args.exporter,
            arch=args.arch,
            num_classes=args.num_classes,
            allow_pickle=args.allow_pickle,
            tolerance=Tolerance(
                atol=args.atol, rtol=args.rtol, min_cosine=args.min_cosine, min_top1=args.min_top1
            ),
            fp16_tolerance=_fp16_tolerance(args),
            samples=args.samples,
            validation_data=args.validate_with or None,
            seed=args.seed,
            simplify="none" if args.no_simplify else args.simplifier,
            fp16=not args.no_fp16,
            optimize=not args.no_optimize,
            openvino=not args.no_openvino,
            torch_program=not args.no_torch,
            preprocessing=pre,
            labels=args.labels,
            task=args.task,
            pooling=args.pooling,
            normalize=args.normalize,
            max_length=args.max_length,
            name=args.name,
            overwrite=args.force,
            strict=args.strict,
            progress=progress,
        )
    _print_summary(Console(), artifact)
    return 0


def _print_summary(console: Any, artifact: Any) -> None:
    from rich.markup import escape
    from rich.table import Column, Table

    m = artifact.manifest
    ins = ", ".join(f"{s.name} {s.dtype}{s.shape_str()}" for s in m.inputs)
    outs = ", ".join(f"{s.name} {s.dtype}{s.shape_str()}" for s in m.outputs)
    console.print(f"[bold]{escape(m.name)}[/] → {escape(str(artifact.root))}", highlight=False)
    console.print(f"  inputs: {ins}\n  outputs: {outs}", highlight=False, markup=False)
    console.print(f"  task: {m.task.value}", highlight=False, markup=False)
    table = Table(Column("variant", no_wrap=True), "size", "checked on", "max_rel_err", "cosine_min", "agree")
    for v in m.variants:
        val = v.validation or {}
        table.add_row(
            v.id,
            f"{v.size / 1e6:.1f} MB",
            str(val.get("backend", "-")),
            _fmt(val.get("max_rel_err")),
            _fmt(val.get("cosine_min"), 6),
            # the task's agreement: top-1 (classification), pixels (segmentation), detections matched
            _fmt(next((val[k] for k in _AGREEMENT if val.get(k) is not None), None)),
        )
    console.print(table)
    for s in m.extra.get("skipped", ()):
        console.print(
            f"[yellow]left out {s['variant']}:[/] {escape(s['reason'])}", highlight=False, soft_wrap=True
        )
    console.print(f"details: infership info {artifact.root}", highlight=False, soft_wrap=True)


#: Validation figures shown in the export table's "agree" column, the first one a record has.
_AGREEMENT = ("top1_agreement", "pixel_agreement", "detections_matched")


def _task(text: str) -> Any:
    """``--task``: a task name or one of its aliases (argparse reports the InvalidInputError's message)."""
    from infership.runtime.tasks import Task

    try:
        return Task.parse(text)
    except ValueError as exc:  # InvalidInputError is a ValueError: argparse turns it into a usage error
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _fp16_tolerance(args: argparse.Namespace) -> Any:
    """None (the build picks fp16 or bf16 defaults per variant) unless an --fp16-* flag was given."""
    from .validate import Tolerance

    given = {"atol": args.fp16_atol, "rtol": args.fp16_rtol, "min_cosine": args.fp16_min_cosine}
    if all(v is None for v in given.values()):
        return None
    base = Tolerance.fp16().to_dict()
    return Tolerance(**{**base, **{k: v for k, v in given.items() if v is not None}})


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _parse_dynamic_axes(items: list[str]) -> dict[str, dict[int, str]]:
    from infership.runtime import InvalidInputError

    out: dict[str, dict[int, str]] = {}
    for item in items:
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            raise InvalidInputError(
                f"--dynamic-axis {item!r}: expected INPUT:AXIS or INPUT:AXIS:SYMBOL, e.g. x:2:height"
            )
        name, axis = parts[0], int(parts[1])
        out.setdefault(name, {})[axis] = parts[2] if len(parts) == 3 else f"{name}_{axis}"
    return out


def _parse_resize(text: str) -> int | tuple[int, int]:
    """``N`` resizes the short side (an int); ``HxW`` is an exact size."""
    from infership.calibration import parse_hw

    if text.strip().isdigit():
        return int(text)
    return parse_hw(text, what="--resize")
