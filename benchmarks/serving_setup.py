"""What ``benchmarks/serving.py`` measures with: the MobileNetV3-small artifact, real images cut from
scikit-image's photos, and the load generators (threads calling a function; one caller running batches).
Nothing is downloaded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.int8_speedup import write_photos


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def build(work: Path) -> Path:
    """MobileNetV3-small (10 classes) fp32 + ONNX Runtime and OpenVINO int8, calibrated on scikit-image photos."""
    root = work / "mobilenet_v3_small"
    from infership.calibration import from_image_folder
    from infership.convert.build import build_artifact
    from infership.convert.int8 import quantize
    from infership.runtime import Artifact

    photos = work / "photos"
    write_photos(photos)
    if (root / "manifest.json").exists():
        have = {v.id for v in Artifact.load(root).manifest.variants}
        if {"onnx-int8", "openvino-int8"} <= have:
            return root
    art = build_artifact(
        "torchvision:mobilenet_v3_small",
        root,
        input_shapes=[(1, 3, 224, 224)],
        input_names=["x"],
        output_names=["logits"],
        num_classes=10,
        fp16=False,
        openvino=False,
        preprocessing="imagenet",
        overwrite=True,
    )
    cset = from_image_folder(photos, art.manifest.preprocessing, batch_size=4)
    calib, holdout = cset.split(0.75)
    quantize(art.root, calib, holdout=holdout, targets=("ort", "openvino"), samples=None, latency_runs=5)
    return root


def images_tensor(work: Path, n: int) -> np.ndarray:
    """``n`` preprocessed real images [n, 3, 224, 224] (crops of the photos)."""
    from infership.runtime import Artifact
    from infership.runtime.preprocess import images_to_tensor

    m = Artifact.load(work / "mobilenet_v3_small").manifest
    return images_to_tensor(crops(work, n, save=False), m.preprocessing, m.inputs[0])


def crops(work: Path, n: int, *, save: bool) -> list:
    """``n`` random crops (96–320 px) of the scikit-image photos: arrays, or JPEG paths when ``save``."""
    from PIL import Image

    photos = sorted((work / "photos").glob("*.png"))
    if not photos:
        write_photos(work / "photos")
        photos = sorted((work / "photos").glob("*.png"))
    rng = np.random.default_rng(0)
    sources = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    folder = work / f"images{n}"
    folder.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        side = int(rng.integers(96, min(320, h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = np.ascontiguousarray(src[y : y + side, x : x + side])
        if save:
            path = folder / f"{i:04d}.jpg"
            if not path.exists():
                Image.fromarray(crop).save(path, quality=90)
            out.append(str(path))
        else:
            out.append(crop)
    return out


def callers(fn, inputs: list, *, n: int, seconds: float) -> float:
    """Calls per second of ``n`` threads each calling ``fn`` on rotating inputs for ``seconds``."""
    counts = [0] * n
    barrier = threading.Barrier(n + 1)
    stop = threading.Event()

    def loop(k: int) -> None:
        barrier.wait()
        i = k
        while not stop.is_set():
            fn(inputs[i % len(inputs)])
            counts[k] += 1
            i += n

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def offline_qps(predict, x: np.ndarray, batch: int, seconds: float) -> float:
    batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)]
    done, t0, i = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        predict(batches[i % len(batches)])
        done += batch
        i += 1
    return done / (time.perf_counter() - t0)
