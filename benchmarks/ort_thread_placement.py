"""How far apart identical ONNX Runtime sessions measure on a model that runs in tens of microseconds.

The script loads the same int8 file several times at ONNX Runtime's defaults (one intra-op thread per
physical core, pinned to cores), once with one explicit thread and once with two (not pinned), measures them
in interleaved blocks of calls (a rest before each) and prints every block's median. On the shared 2-vCPU
machine of docs/benchmarks.md every two-thread session — pinned or not — runs each block at one of two
levels (about 30 or 40 µs on the digits CNN), while one thread stays at about 37 µs — consistent with a
second core that is intermittently busy. It is why ``infership optimize`` keeps the runtime's
defaults unless another setting wins every block of its last round, and why a peer comparison at this
scale needs many blocks.

    .venv/bin/python benchmarks/ort_thread_placement.py [--artifact DIR] [--blocks 12] [--calls 8000]

Without ``--artifact`` it builds the digits CNN's int8 artifact from ``runs/digits/digits.pt`` (trained
first if missing) in a temporary folder. Writes ``runs/bench/ort_thread_placement.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"


def digits_int8(work: Path) -> Path:
    """The digits CNN as an artifact with an ONNX Runtime int8 variant (calibrated on its training split)."""
    from infership.convert import build_artifact

    from infership.optimize_checks import make_int8

    ckpt = ROOT / "runs" / "digits" / "digits.pt"
    if not ckpt.exists():
        sys.path.insert(0, str(DIGITS))
        from train import train  # examples/digits/train.py

        train(ckpt)
    root = work / "digits"
    build_artifact(ckpt, root, arch=f"{DIGITS / 'model.py'}:build_model", input_shapes=[(1, 1, 8, 8)],
                   task="classification", fp16=False, overwrite=True)  # fmt: skip
    make_int8(root, f"{DIGITS / 'data.py'}:train", budget=1.0)
    return root


def measure(root: Path, *, twins: int, blocks: int, calls: int) -> dict[str, Any]:
    from infership.runtime import Predictor
    from infership.runtime.timing import time_calls

    sides = {f"defaults #{i + 1}": {} for i in range(twins)}
    sides["1 thread"] = {"intra_op_threads": 1}
    sides["2 threads"] = {"intra_op_threads": 2}  # an explicit count: ONNX Runtime does not pin them
    loaded = {k: Predictor.load(root, backend="ort-cpu", precision="int8", **v) for k, v in sides.items()}
    try:
        spec = next(iter(loaded.values())).manifest.inputs[0]
        x = {spec.name: np.random.default_rng(0).normal(size=(1, 1, 8, 8)).astype(np.float32)}
        medians: dict[str, list[float]] = {k: [] for k in loaded}
        for _ in range(blocks):
            for k, p in loaded.items():
                samples = time_calls(lambda p=p: p.predict(x), runs=calls, warmup=2, rest_s=0.05)
                medians[k].append(round(float(np.median(samples)) * 1e3, 2))  # µs
    finally:
        for p in loaded.values():
            p.close()
    return {"block_medians_us": medians, "load_average": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path, help="an artifact with an onnx-int8 variant (default: digits)")
    ap.add_argument("--twins", type=int, default=3, help="identical default sessions (default 3)")
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--calls", type=int, default=8000, help="calls per block")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "ort_thread_placement.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="infership-placement-") as tmp:
        root = args.artifact or digits_int8(Path(tmp))
        result = measure(root, twins=args.twins, blocks=args.blocks, calls=args.calls)
    for k, v in result["block_medians_us"].items():
        print(f"{k:12s} " + " ".join(f"{m:5.1f}" for m in v) + f"   median {np.median(v):.1f} µs")
    print(f"load average {result['load_average']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), **result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
