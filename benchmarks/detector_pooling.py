"""Region pooling's merge in an exported detector: torchvision's per-level scatter against one gather.

    .venv/bin/python benchmarks/detector_pooling.py [--checkpoint runs/detection/detector.pt] [--blocks 12]

Exports the detection example's Faster R-CNN (``examples/detection/model.py`` with the weights ``train.py``
wrote) twice with the TorchScript-based exporter, as ``build_artifact`` does: once with torchvision's traced
merge of the pooled regions (one ``ScatterElements`` of every pooled feature per pyramid level) and once
with infership's (:func:`infership.convert.detection.merge_levels_by_gather`). Checks that both graphs give
identical detections on the held-out scenes, then times both on ONNX Runtime (fp32, 2 threads, batch 1)
in interleaved blocks over the same scenes and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "detection"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "runs" / "detection" / "detector.pt")
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--scenes", type=int, default=20)
    args = ap.parse_args(argv)
    if not args.checkpoint.is_file():
        sys.exit(
            f"no checkpoint at {args.checkpoint}: run examples/detection/train.py first (make demo-detection)"
        )
    import data
    import model
    import onnxruntime as ort
    import torch
    from infership.convert import detection
    from infership.runtime.backends.ort import disabled_optimizers
    from infership.runtime.timing import cycling, interleaved_medians

    det = model.build_model()
    det.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
    wrapped = detection.DetectorExport(det.eval()).eval()
    images, _ = data.load_scenes("holdout", args.scenes)
    feeds = [data.to_input(im, None)[None] for im in images]
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, gather in (("scatter (torchvision)", False), ("gather (infership)", True)):
            path = Path(tmp) / f"{name.split()[0]}.onnx"
            # torchvision's own merge: infership's swap itself swapped out while tracing
            swap = (
                contextlib.nullcontext()
                if gather
                else detection._swapped(detection, "_merge_levels_by_gather", contextlib.nullcontext)
            )
            with swap, torch.no_grad():
                torch.onnx.export(
                    wrapped, (torch.from_numpy(feeds[0]),), str(path), input_names=["images"],
                    output_names=["boxes", "scores", "labels", "batch_index"], opset_version=detection.OPSET,
                    dynamo=False,
                )  # fmt: skip
            so = ort.SessionOptions()
            so.intra_op_num_threads = 2
            sessions[name] = ort.InferenceSession(
                str(path),
                so,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=disabled_optimizers("detection"),
            )
    (a, sa), (b, sb) = sessions.items()
    for f in feeds:
        if not all(
            np.array_equal(x, y)
            for x, y in zip(sa.run(None, {"images": f}), sb.run(None, {"images": f}), strict=True)
        ):
            sys.exit("the two graphs disagree")
    print(f"identical detections on {len(feeds)} held-out scenes")

    ms = interleaved_medians(
        {k: cycling(lambda f, s=s: s.run(None, {"images": f}), feeds) for k, s in sessions.items()},
        blocks=args.blocks,
        runs=2 * len(feeds),
    )
    for k, v in ms.items():
        print(f"{k}: {v:.3f} ms")
    print(f"scatter / gather: {ms[a] / ms[b]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
