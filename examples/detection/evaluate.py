"""fp32 against int8 on the held-out scenes: mAP with a bootstrap interval, agreement, batch-1 speed.

    python examples/detection/evaluate.py runs/detection/pipeline/artifact

For each backend (torch, ONNX Runtime, OpenVINO) and precision (fp32, int8) of the artifact: the held-out
mAP@0.5 and mAP@0.5:0.95 (infership's detection judge), the detections matched with torch fp32 and their
worst box IoU, the mAP@0.5 drop of int8 against fp32 of the same backend with a 95 % bootstrap interval
(scenes resampled with replacement), the median batch-1 latency over held-out scenes (every path measured
in interleaved blocks with rests), and — for ONNX Runtime — the share of run time spent in the backbone (and
FPN) against the rest (proposals, RoI heads, box decoding, NMS), from ONNX Runtime's profiler, with the
operator types that take the most time. Prints the load average before and after: timings on a busy machine
are noisy.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from infership.calibration import import_file
from infership.runtime import Artifact, Predictor, judge_for
from infership.runtime.backends.ort import disabled_optimizers
from infership.runtime.detection import (
    COCO_IOUS,
    Detections,
    average_precision,
    split_detections,
    to_original,
)
from infership.runtime.errors import ArtifactError, BackendUnavailable
from infership.runtime.timing import cycling, interleaved_medians

HERE = Path(__file__).resolve().parent


def _data():
    return import_file(HERE / "data.py")  # examples/ is not a package


def _loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown"


def bootstrap_drop(ref, cand, targets, *, rounds: int = 300, seed: int = 0) -> tuple[float, float]:
    """95 % interval of ``mAP@0.5(ref) - mAP@0.5(cand)`` in points, scenes resampled with replacement."""
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(rounds):
        idx = rng.integers(0, len(targets), len(targets))
        t = [targets[i] for i in idx]
        a = average_precision([ref[i] for i in idx], t)
        b = average_precision([cand[i] for i in idx], t)
        drops.append((a or 0.0) - (b or 0.0))
    lo, hi = np.percentile(drops, [2.5, 97.5])
    return float(lo), float(hi)


def backbone_share(model_path: Path, feed: dict[str, np.ndarray], runs: int = 20) -> dict[str, Any]:
    """Share of ONNX Runtime node time in the backbone and FPN (node names under ``/detector/backbone``),
    and the operator types taking the most time (``top_ops``: share of all node time, largest first)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        so.intra_op_num_threads = 1
        session = ort.InferenceSession(  # as infership's ort-cpu backend opens a detector
            str(model_path),
            so,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=disabled_optimizers("detection"),
        )
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    backbone = rest = 0
    by_op: dict[str, int] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if "backbone" in e["name"]:
            backbone += e["dur"]
        else:
            rest += e["dur"]
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] = by_op.get(op, 0) + e["dur"]
    total = backbone + rest
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
    return {
        "backbone": round(backbone / total, 3),
        "heads_and_postprocessing": round(rest / total, 3),
        "top_ops": {op: round(t / total, 3) for op, t in top},
    }


PATHS = [
    ("torch", "fp32"),
    ("ort-cpu", "fp32"),
    ("ort-cpu", "int8"),
    ("openvino", "fp32"),
    ("openvino", "int8"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--threshold", type=float, default=0.5, help="score threshold for matching")
    parser.add_argument(
        "--blocks", type=int, default=10, help="interleaved timing blocks per path (default 10)"
    )
    parser.add_argument("--calls", type=int, default=40, help="batch-1 calls per block (default 40)")
    parser.add_argument(
        "--timing-images", type=int, default=20, help="held-out scenes the timing cycles through"
    )
    args = parser.parse_args(argv)
    data = _data()
    before = _loadavg()
    judge = judge_for("detection")
    images, truth = data.load_scenes("holdout", data.HOLDOUT_SCENES)
    rows, found, raw = [], {}, {}
    opened: dict[tuple[str, str], tuple[Predictor, list[np.ndarray]]] = {}
    try:
        for backend, precision in PATHS:
            try:
                p = Predictor.load(args.artifact, backend=backend, precision=precision)
            except (BackendUnavailable, ArtifactError) as exc:
                rows.append({"backend": backend, "precision": precision, "skipped": str(exc).splitlines()[0]})
                continue
            pre = p.manifest.preprocessing
            feeds = [data.to_input(im, pre)[None] for im in images]
            outs = [p.predict(x) for x in feeds]
            key = (backend, precision)
            opened[key] = (p, feeds[: args.timing_images])
            raw[key] = outs
            height, width = images.shape[1:3]
            found[key] = [
                Detections(
                    to_original(d.boxes, height, width, pre), d.scores, d.labels
                )  # in the scenes' pixels
                for d in (split_detections(o, images=1)[0] for o in outs)
            ]
            row = {"backend": backend, "precision": precision, "variant": p.variant.id}
            row["map50"] = average_precision(found[key], truth)
            row["map50_95"] = average_precision(found[key], truth, iou_thresholds=COCO_IOUS)
            if key != ("torch", "fp32") and ("torch", "fp32") in raw:
                a = judge.compare(raw["torch", "fp32"], outs)
                row["vs_torch_fp32"] = {
                    k: getattr(a, k)
                    for k in ("detections_matched", "box_iou_min", "score_diff_max", "score_threshold")
                }
            if backend == "ort-cpu":
                art = Artifact.load(args.artifact)
                row["time_share"] = backbone_share(
                    art.path_of(p.variant.files[0]), {p.inputs[0].name: feeds[0]}
                )
            rows.append(row)
        ms = interleaved_medians(
            {k: cycling(p.predict, feeds) for k, (p, feeds) in opened.items()},
            blocks=args.blocks,
            runs=args.calls,
        )
    finally:
        for p, _ in opened.values():
            p.close()
    by_key = {(r["backend"], r["precision"]): r for r in rows if "skipped" not in r}
    for key, row in by_key.items():
        row["batch1_ms"] = round(ms[key], 3)
        backend, precision = key
        if precision == "int8" and (backend, "fp32") in by_key:
            fp32_row = by_key[backend, "fp32"]
            row["map50_drop"] = round(fp32_row["map50"] - row["map50"], 2)
            row["map50_drop_95ci"] = [
                round(v, 2) for v in bootstrap_drop(found[backend, "fp32"], found[key], truth)
            ]
            row["speedup_batch1"] = round(fp32_row["batch1_ms"] / row["batch1_ms"], 2)
    result = {
        "held_out_scenes": len(images),
        "held_out_digits": data.count_objects("holdout", data.HOLDOUT_SCENES),
        "rows": rows,
        "loadavg_before": before,
        "loadavg_after": _loadavg(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
