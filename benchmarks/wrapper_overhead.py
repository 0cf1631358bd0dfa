"""How much does ``Predictor.predict`` cost over calling the raw runtime? (issue: ≤ 5 % or ≤ 20 µs)

Builds a tiny CNN artifact, then for each CPU backend alternates blocks of raw calls and Predictor calls on
the same inputs (so machine noise hits both alike) and reports medians. Run:

    .venv/bin/python benchmarks/wrapper_overhead.py [--reps 3000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time_block(fn, x, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn(x)
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out


def measure(raw, wrapped, x, reps: int, block: int = 100) -> tuple[float, float]:
    for _ in range(200):
        raw(x)
        wrapped(x)
    r, w = [], []
    gc.disable()
    try:
        for _ in range(max(1, reps // block)):
            r += _time_block(raw, x, block)
            w += _time_block(wrapped, x, block)
    finally:
        gc.enable()
    return statistics.median(r), statistics.median(w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3000)
    args = ap.parse_args()

    import onnxruntime as ort
    import openvino as ov
    import torch

    from infership import Predictor
    from tests.builders import build_artifact_for_tests, tiny_models

    model, example = tiny_models.cnn()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = build_artifact_for_tests(model, example, Path(tmp) / "tiny")
        x = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)

        sess = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])
        with Predictor.load(root, backend="ort-cpu") as p:
            rows.append(
                (
                    "ort-cpu",
                    "sess.run(None, {'x': x})",
                    *measure(lambda a: sess.run(None, {"x": a}), p.predict, x, args.reps),
                )
            )

        core = ov.Core()
        compiled = core.compile_model(
            str(root / "openvino" / "model.xml"), "CPU", {"PERFORMANCE_HINT": "LATENCY"}
        )
        req = compiled.create_infer_request()
        with Predictor.load(root, backend="openvino") as p:
            rows.append(
                (
                    "openvino",
                    "req.infer({'x': x})",
                    *measure(lambda a: req.infer({"x": a}), p.predict, x, args.reps),
                )
            )

        prog = torch.export.load(str(root / "model.pt2")).module()

        def raw_torch(a):
            with torch.inference_mode():
                return prog(torch.from_numpy(a)).numpy()

        with Predictor.load(root, backend="torch") as p:
            rows.append(
                ("torch", "module(torch.from_numpy(x))", *measure(raw_torch, p.predict, x, args.reps))
            )

    print(f"tiny CNN [1,3,16,16] → [1,5], batch 1, median of {args.reps} calls each, interleaved blocks")
    print(
        f"{'backend':10} {'raw call':32} {'raw µs':>8} {'predict µs':>11} {'overhead µs':>12} {'overhead %':>11}"
    )
    for name, what, raw_us, wrap_us in rows:
        d = wrap_us - raw_us
        print(f"{name:10} {what:32} {raw_us:8.1f} {wrap_us:11.1f} {d:12.1f} {100 * d / raw_us:10.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
