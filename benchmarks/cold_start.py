"""Cold start: ``Predictor.load`` against the raw ONNX Runtime session, on a ResNet-50 fp32 ONNX (≈ 94 MB).

Per round, interleaved, with a rest before each: the raw ``onnxruntime.InferenceSession(path)``; the same
preceded by hashing the file (what a load cost when it hashed before opening); ``Predictor.load(ART,
backend="ort-cpu", precision="fp32")`` on a freshly read artifact, so that its files are verified. Each is
followed by its first inference (load + first inference = the cold start). Medians over the rounds, and
the ratio of the Predictor's load to the raw session's (the target is ≤ 1.10).

    .venv/bin/python benchmarks/cold_start.py [--model resnet50] [--rounds 15] [--workdir DIR]

Prints a table with the load average and writes ``runs/bench/cold_start.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(model_name: str, work: Path) -> Path:
    import torch
    import torchvision
    from infership.convert import build_artifact

    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None).eval()
    root = work / model_name
    if not (root / "manifest.json").exists():
        build_artifact(model, root, input_shapes=[(1, 3, 224, 224)], input_names=["x"], output_names=["logits"],
                       fp16=False, openvino=False, torch_program=False, overwrite=True)  # fmt: skip
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet50", help="a torchvision architecture (weights=None)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--rest", type=float, default=0.3, help="seconds of rest before each measurement")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "cold_start.json")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    from infership.runtime import Artifact, Predictor
    from infership.runtime.integrity import sha256_file

    with tempfile.TemporaryDirectory(prefix="infership-cold-") as tmp:
        root = build(args.model, args.workdir or Path(tmp))
        art = Artifact.load(root)
        path = os.fspath(root / art.manifest.variant("onnx-fp32").files[0].path)
        x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
        size_mb = os.path.getsize(path) / 1e6

        def raw() -> tuple[float, float]:
            t0 = time.perf_counter()
            s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            t1 = time.perf_counter()
            s.run(None, {"x": x})
            return t1 - t0, time.perf_counter() - t1

        def hash_then_raw() -> tuple[float, float]:
            t0 = time.perf_counter()
            sha256_file(Path(path))
            s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            t1 = time.perf_counter()
            s.run(None, {"x": x})
            return t1 - t0, time.perf_counter() - t1

        def predictor() -> tuple[float, float]:
            t0 = time.perf_counter()
            p = Predictor.load(root, backend="ort-cpu", precision="fp32")  # reads and verifies afresh
            t1 = time.perf_counter()
            p.predict(x)
            t2 = time.perf_counter()
            p.close()
            return t1 - t0, t2 - t1

        sides = {"raw InferenceSession": raw, "hash, then InferenceSession": hash_then_raw,
                 "Predictor.load (ort-cpu)": predictor}  # fmt: skip
        for fn in sides.values():  # page cache warm, libraries loaded
            fn()
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
        load_start = os.getloadavg()
        for _ in range(args.rounds):
            for name, fn in sides.items():
                time.sleep(args.rest)
                times[name].append(fn())
        load_end = os.getloadavg()
    rows = {}
    for name, vals in times.items():
        load = statistics.median(v[0] for v in vals) * 1e3
        cold = statistics.median(v[0] + v[1] for v in vals) * 1e3
        rows[name] = {"load_ms": round(load, 1), "load_plus_first_ms": round(cold, 1)}
    base = rows["raw InferenceSession"]
    for r in rows.values():
        r["load_ratio"] = round(r["load_ms"] / base["load_ms"], 3)
        r["cold_ratio"] = round(r["load_plus_first_ms"] / base["load_plus_first_ms"], 3)
    print(f"{args.model}: {size_mb:.1f} MB fp32 ONNX, {args.rounds} interleaved rounds; load average "
          f"{load_start} -> {load_end}")  # fmt: skip
    print("| path | load ms | ×raw | load + first inference ms | ×raw |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['load_ms']} | {r['load_ratio']} | {r['load_plus_first_ms']} | {r['cold_ratio']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "size_mb": size_mb, "rounds": args.rounds, "rows": rows,
                                    "load_average": [load_start, load_end],
                                    "command": "benchmarks/cold_start.py " + " ".join(argv or sys.argv[1:])},
                                   indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
