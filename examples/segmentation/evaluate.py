"""fp32 against int8 on the held-out scenes: mIoU with a bootstrap interval, mask agreement, batch-1 speed.

    python examples/segmentation/evaluate.py runs/segmentation/pipeline/artifact

For each backend (ONNX Runtime, OpenVINO) and precision (fp32, int8) of the artifact: the held-out mIoU
(background and ten digits, infership's segmentation judge), the share of pixels whose class agrees with
torch fp32, the mIoU drop of int8 against fp32 of the same backend with a 95 % bootstrap interval (scenes
resampled with replacement), and the median batch-1 latency (every path measured in interleaved blocks with
rests, so a change in the machine's load falls on all alike). Prints the load average before and after:
timings on a busy machine are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from infership.calibration import import_file
from infership.runtime import Predictor, judge_for
from infership.runtime.errors import ArtifactError, BackendUnavailable
from infership.runtime.timing import interleaved_medians

HERE = Path(__file__).resolve().parent


def _data():
    return import_file(HERE / "data.py")  # examples/ is not a package


def _loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown"


def confusions(maps: np.ndarray, masks: np.ndarray, classes: int) -> np.ndarray:
    """One ``classes × classes`` confusion matrix per scene (rows: truth; 255 not counted)."""
    out = np.zeros((len(maps), classes, classes), np.int64)
    for i, (m, t) in enumerate(zip(maps, masks, strict=True)):
        keep = t != 255
        out[i] = np.bincount(
            t[keep].astype(np.int64) * classes + m[keep], minlength=classes * classes
        ).reshape(classes, classes)
    return out


def miou(confusion: np.ndarray) -> float:
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    return float((inter[union > 0] / union[union > 0]).mean())


def bootstrap_drop(a: np.ndarray, b: np.ndarray, *, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of ``miou(a) - miou(b)`` in points, scenes resampled with replacement."""
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(rounds):
        idx = rng.integers(0, len(a), len(a))
        drops.append(100.0 * (miou(a[idx].sum(0)) - miou(b[idx].sum(0))))
    lo, hi = np.percentile(drops, [2.5, 97.5])
    return float(lo), float(hi)


def fastest_paths(batch1_ms: dict[tuple[str, str], float]) -> dict[str, Any]:
    """The fastest fp32 and int8 deployment paths (torch eager is the reference, not one) and int8's speedup
    over fp32 between them, whatever their backends: what a deployment that picks its best path for each
    precision gains."""
    out: dict[str, Any] = {"fastest_fp32": None, "fastest_int8": None, "fastest_int8_speedup": None}
    for precision in ("fp32", "int8"):
        paths = [
            (ms, backend)
            for (backend, prec), ms in batch1_ms.items()
            if prec == precision and backend != "torch"
        ]
        if paths:
            ms, backend = min(paths)
            out[f"fastest_{precision}"] = {"backend": backend, "batch1_ms": ms}
    if out["fastest_fp32"] and out["fastest_int8"]:
        ratio = out["fastest_fp32"]["batch1_ms"] / out["fastest_int8"]["batch1_ms"]
        out["fastest_int8_speedup"] = round(ratio, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--blocks", type=int, default=10, help="interleaved timing blocks per path (default 10)"
    )
    parser.add_argument("--calls", type=int, default=40, help="batch-1 calls per block (default 40)")
    args = parser.parse_args(argv)
    data = _data()
    before = _loadavg()
    judge = judge_for("segmentation")
    images, masks = data.load_scenes("holdout", data.HOLDOUT_SCENES)
    digits = data.count_objects("holdout", data.HOLDOUT_SCENES)
    rows, maps, conf = [], {}, {}
    opened: dict[tuple[str, str], tuple[Predictor, np.ndarray]] = {}
    with contextlib.ExitStack() as stack:
        for backend, precision in [("torch", "fp32"), ("ort-cpu", "fp32"), ("ort-cpu", "int8"),
                                   ("openvino", "fp32"), ("openvino", "int8")]:  # fmt: skip
            try:
                p = stack.enter_context(Predictor.load(args.artifact, backend=backend, precision=precision))
            except (BackendUnavailable, ArtifactError) as exc:
                rows.append({"backend": backend, "precision": precision, "skipped": str(exc).splitlines()[0]})
                continue
            pre = p.manifest.preprocessing
            x = np.stack([data.to_input(im, pre) for im in images])
            outs = [p.predict(x[i : i + 16]) for i in range(0, len(x), 16)]
            opened[backend, precision] = (p, x[:1])
            key = (backend, precision)
            maps[key] = np.concatenate([judge.predictions(o) for o in outs])
            classes = int(next(iter(outs[0].values())).shape[1])
            conf[key] = confusions(maps[key], masks, classes)
            row = {"backend": backend, "precision": precision, "variant": p.variant.id}
            row["miou"] = round(100.0 * miou(conf[key].sum(0)), 2)
            row["pixels_agree_with_torch_fp32"] = round(float(np.mean(maps[key] == maps["torch", "fp32"])), 5)
            rows.append(row)
        ms = interleaved_medians(
            {k: (lambda p=p, one=one: p.predict(one)) for k, (p, one) in opened.items()},
            blocks=args.blocks,
            runs=args.calls,
        )
    by_key = {(r["backend"], r["precision"]): r for r in rows if "skipped" not in r}
    for key, row in by_key.items():
        row["batch1_ms"] = round(ms[key], 3)
        backend, precision = key
        if precision == "int8" and (backend, "fp32") in by_key:
            ref = conf[backend, "fp32"]
            row["miou_drop"] = round(100.0 * (miou(ref.sum(0)) - miou(conf[key].sum(0))), 2)
            row["miou_drop_95ci"] = [round(v, 2) for v in bootstrap_drop(ref, conf[key])]
            row["speedup_batch1"] = round(by_key[backend, "fp32"]["batch1_ms"] / row["batch1_ms"], 2)
    fastest = fastest_paths({key: row["batch1_ms"] for key, row in by_key.items()})
    result = {
        "held_out_scenes": len(images),
        "held_out_digits": digits,
        "rows": rows,
        **fastest,
        "loadavg_before": before,
        "loadavg_after": _loadavg(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
