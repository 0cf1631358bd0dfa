"""``infership predict``: run an artifact on images or an array file and print each sample in the task's
terms (the top classes of a classifier, shapes of raw tensors)."""

from __future__ import annotations

import argparse
from typing import Any


def add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="run an artifact on images or a .npy/.npz file and print the result per sample",
        description="Run an artifact on image files (through the artifact's preprocessing) or on a .npy / "
        ".npz file, and print each sample as its task describes it (a classifier: the top classes).",
    )
    p.add_argument("artifact")
    p.add_argument("inputs", nargs="+", help="image files, or one .npy / .npz file")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default=None, choices=["fp32", "fp16", "int8"])
    p.add_argument("--device", default=None)
    p.add_argument("--top", type=int, default=3, help="classes to show per input (default 3)")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from rich.console import Console

    from infership.calibration import load_array_file
    from infership.calibration.arrays import ARRAY_SUFFIXES
    from infership.runtime import Predictor, judge_for
    from infership.runtime.errors import InvalidInputError

    console = Console()
    with Predictor.load(
        args.artifact, backend=args.backend, precision=args.precision, device=args.device
    ) as p:
        if len(args.inputs) == 1 and args.inputs[0].lower().endswith(ARRAY_SUFFIXES):
            arrays, _ = load_array_file(args.inputs[0], [s.name for s in p.inputs], what="predict")
            feeds: Any = arrays
            names = [args.inputs[0]]
        else:
            if p.manifest.preprocessing is None:
                raise InvalidInputError(
                    "this artifact has no preprocessing recorded, so it cannot take images; pass a .npy file"
                )
            feeds, names = list(args.inputs), list(args.inputs)
        out = p.predict(feeds)
        console.print(f"backend {p.backend} · variant {p.variant.id} · {p.placement.device}", highlight=False)
        lines = judge_for(p.manifest.task).summarise(out, labels=p.manifest.labels, top=args.top)
        for i, line in enumerate(lines):
            name = names[i] if i < len(names) else f"#{i}"
            console.print(f"{name}: {line}", highlight=False, markup=False)
    return 0
