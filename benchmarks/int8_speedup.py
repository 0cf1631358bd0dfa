"""ResNet-50 at batch 1: int8 through the Predictor against torch eager fp32, all measured in one run.

Builds a ResNet-50 artifact (torchvision, ``weights=None``: nothing is downloaded), calibrates it on photos
bundled with scikit-image through the artifact's ImageNet preprocessing, adds ``onnx-int8``,
``openvino-int8`` and ``torch-int8`` with :func:`infership.convert.int8.quantize`, then times every
variant at batch 1 in interleaved rounds (each round runs a block of every candidate, so machine noise hits
them alike) and prints medians and speedups over torch eager fp32. Takes 2–4 minutes on 2 cores.

    .venv/bin/python benchmarks/int8_speedup.py [--rounds 30] [--block 5] [--workdir DIR] [--check]

``--check`` exits 1 unless ONNX Runtime int8 is ≥ 4.5× and OpenVINO int8 ≥ 7× torch eager fp32.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = {"ort int8": 4.5, "openvino int8": 7.0}
_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
    "colorwheel", "camera", "coins", "moon", "page", "grass", "gravel", "brick", "cell", "horse", "clock",
)  # fmt: skip


def write_photos(folder: Path) -> int:
    """scikit-image's bundled photos as PNG files (real images, no download)."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in _PHOTOS:
        arr = np.asarray(getattr(skimage.data, name)())
        if arr.dtype != np.uint8:
            arr = (255 * (arr.astype(np.float64) / max(1.0, float(arr.max())))).astype(np.uint8)
        Image.fromarray(arr).convert("RGB").save(folder / f"{name}.png")
    return len(_PHOTOS)


def build(workdir: Path):
    """The fp32 ResNet-50 artifact (ONNX + torch program, ImageNet preprocessing)."""
    import torch
    import torchvision
    from infership.convert.build import build_artifact

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    root = workdir / "resnet50"
    art = build_artifact(
        model,
        root,
        input_shapes=[(1, 3, 224, 224)],
        input_names=["x"],
        output_names=["logits"],
        fp16=False,
        openvino=False,
        preprocessing="imagenet",
        overwrite=True,
    )
    return model, art


def quantize_all(model, art, photos: Path):
    from infership.calibration import from_image_folder
    from infership.convert.int8 import quantize

    cset = from_image_folder(photos, art.manifest.preprocessing, batch_size=4)
    calib, holdout = cset.split(0.75)
    return quantize(
        art.root,
        calib,
        holdout=holdout,
        targets="all",
        samples=None,
        torch_model=model,
        latency_runs=5,
    )


def candidates(model, root: Path):
    import torch
    from infership.runtime import Predictor

    def eager(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    out = {"torch eager fp32": eager}
    for label, backend, precision in (
        ("torch int8 (FX, TorchScript)", "torch", "int8"),
        ("ort fp32", "ort-cpu", "fp32"),
        ("ort int8", "ort-cpu", "int8"),
        ("openvino fp32", "openvino", "fp32"),
        ("openvino int8", "openvino", "int8"),
    ):
        p = Predictor.load(root, backend=backend, precision=precision)
        out[label] = p.predict
    out.update(raw_candidates(root))
    return out


def raw_candidates(root: Path) -> dict:
    """The same int8 files through the runtimes' own APIs with default settings: the Predictor must not
    lose what the raw runtime gives."""
    import onnxruntime as ort
    import openvino as ov
    from infership.convert.int8 import Target
    from infership.runtime import Artifact

    m = Artifact.load(root).manifest
    onnx_path = root / m.variant(Target.ORT.variant_id).files[0].path
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    xml = next(f for f in m.variant(Target.OPENVINO.variant_id).files if f.path.endswith(".xml"))
    compiled = ov.Core().compile_model(str(root / xml.path), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    req = compiled.create_infer_request()
    return {
        "raw ort int8 (InferenceSession.run)": lambda x: sess.run(None, {name: x}),
        "raw openvino int8 (InferRequest.infer)": lambda x: req.infer({0: x}),
    }


def measure(
    fns: dict, inputs: list[np.ndarray], *, rounds: int, block: int, pause_s: float = 0.2
) -> dict[str, list[float]]:
    """Interleaved timing: each round runs ``block`` timed calls of every candidate, cycling through ``inputs``.

    Before each block the machine gets ``pause_s`` to settle and the candidate one untimed call: the
    runtimes' worker threads spin for a while after a call, and without the pause the previous candidate's
    spinning threads would be timed as part of the next one (a deployment runs one runtime, not six).
    """
    import itertools

    from infership.runtime.timing import time_calls

    for fn in fns.values():  # warm-up: first-run compilation, allocations, thread pools
        for x in inputs[:3]:
            fn(x)
    times: dict[str, list[float]] = {k: [] for k in fns}
    cycle = itertools.cycle(inputs)
    for _ in range(rounds):
        for name, fn in fns.items():
            # rest, one untimed call, then the block (the one latency timer does exactly this)
            times[name] += time_calls(lambda fn=fn: fn(next(cycle)), runs=block, warmup=1, rest_s=pause_s)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ResNet-50 batch-1 int8 speedups over torch eager fp32.")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    parser.add_argument("--block", type=int, default=5, help="calls per candidate per round (default 5)")
    parser.add_argument(
        "--pause", type=float, default=0.2, help="seconds of rest before each block (default 0.2)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the artifact here (default: a temporary directory)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a speedup target is missed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch
    from infership.runtime.hardware import cpu_info, library_versions
    from infership.runtime.timing import timed

    cpu = cpu_info()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        (model, art), build_ms = timed(lambda: build(work))
        n = write_photos(work / "photos")
        report, quant_ms = timed(lambda: quantize_all(model, art, work / "photos"))
        t_build, t_quant = build_ms / 1e3, quant_ms / 1e3
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal((1, 3, 224, 224), dtype=np.float32) for _ in range(8)]
        fns = candidates(model, art.root)
        times = measure(fns, inputs, rounds=args.rounds, block=args.block, pause_s=args.pause)

    base = statistics.median(times["torch eager fp32"])
    versions = library_versions()
    print(
        f"# int8 speedup, ResNet-50 (weights=None), batch 1 — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )
    print(
        f"CPU: {cpu.model}, {cpu.logical_cores} logical cores, int8 support: {cpu.int8_support}; "
        f"torch threads {torch.get_num_threads()}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "infership"))
    print(
        f"build {t_build:.0f} s · quantize (ORT + NNCF + torch FX, {n} photos: "
        f"{report.calibration['samples']} calibration / {report.holdout['samples']} held out) {t_quant:.0f} s · "
        f"{args.rounds} rounds × {args.block} calls each"
    )
    print()
    print("| candidate | median ms | p10 ms | p90 ms | speedup vs torch eager fp32 |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        q = np.percentile(ts, [10, 90])
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {q[0]:.2f} | {q[1]:.2f} | {base / med:.2f}× |")
    print()
    ok = True
    for name, want in TARGETS.items():
        got = base / statistics.median(times[name])
        verdict = "met" if got >= want else "MISSED"
        ok &= got >= want
        print(f"{name}: {got:.2f}× (target ≥ {want}×) {verdict}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
