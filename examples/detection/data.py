"""The detection example's data: handwritten digits on photos (``examples/scenes.py``), with their boxes.

Each scene is a crop of one of scikit-image's sample photos with one to four of scikit-learn's handwritten
digits drawn on it; its ground truth is one box per digit, labelled ``d + 1`` for digit ``d`` (``0`` is the
background class of torchvision's detectors). Training scenes use the first 1,437 handwritten digits,
held-out scenes the last 360 (writers never seen in training).

The sets plug into infership as ``FILE.py:FUNCTION`` sources (``data.py:calibration`` and
``data.py:holdout`` in ``pipeline.toml``): a ``CalibrationSet`` of one image per batch (the exported
detector takes one image at a time) whose labels are per-image ground truth ``{"boxes", "labels"}`` (an
object array), judged by the detection task (mAP).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from infership.calibration import CalibrationSet, import_file
from infership.runtime import Preprocessing
from infership.runtime.detection import input_geometry
from infership.runtime.preprocess import preprocess_image

SIZE = 160  # scene and model input side, pixels
CALIBRATION_SCENES = 128
HOLDOUT_SCENES = 130  # held-out scenes: 320 digits
CACHE = Path(__file__).resolve().parents[2] / "runs" / "detection" / "scenes"


scenes = import_file(Path(__file__).resolve().parents[1] / "scenes.py")  # examples/ is not a package
CLASS_NAMES: tuple[str, ...] = tuple(scenes.CLASS_NAMES)


@functools.lru_cache(maxsize=8)
def load_scenes(
    split: str, count: int, *, size: int = SIZE, start: int = 0
) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """``count`` scenes of ``split`` as ``(images [n, H, W, 3] uint8, targets)``, a target per image.

    Made once and kept in ``runs/detection/scenes/`` (deterministic: the same on every machine).
    """
    path = CACHE / f"{split}-{start}-{count}-{size}.npz"
    if not path.is_file():
        made = scenes.make_scenes(count, size=size, split=split, start=start)
        images, targets, _ = scenes.stack(made)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        counts = np.asarray([len(t["labels"]) for t in targets])
        np.savez_compressed(
            tmp,
            images=images,
            counts=counts,
            boxes=np.concatenate([t["boxes"] for t in targets]),
            labels=np.concatenate([t["labels"] for t in targets]),
        )
        tmp.replace(path)
    with np.load(path) as f:
        images, counts, boxes, labels = f["images"], f["counts"], f["boxes"], f["labels"]
    ends = np.cumsum(counts)
    starts = ends - counts
    targets = [{"boxes": boxes[a:b], "labels": labels[a:b]} for a, b in zip(starts, ends, strict=True)]
    return images, targets


def count_objects(split: str, count: int, *, size: int = SIZE, start: int = 0) -> int:
    """How many digits the scenes of :func:`load_scenes` hold."""
    return sum(len(t["labels"]) for t in load_scenes(split, count, size=size, start=start)[1])


def to_input(image: np.ndarray, pre: Preprocessing | None) -> np.ndarray:
    """One ``HxWx3`` uint8 scene → the model's ``[3, H, W]`` float input in [0, 1] (the artifact's
    preprocessing, or plain scaling when there is none yet, e.g. in training)."""
    if pre is not None:
        return preprocess_image(image, pre)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


class SceneSource:
    """Scenes as model inputs with their ground truth (an object array of ``{"boxes", "labels"}``)."""

    def __init__(
        self, images: np.ndarray, targets: list[dict[str, np.ndarray]], pre: Preprocessing | None, what: str
    ) -> None:
        self._images, self._pre, self._what = images, pre, what
        self._targets = np.empty(len(targets), dtype=object)
        self._targets[:] = targets

    def __len__(self) -> int:
        return len(self._images)

    @property
    def has_labels(self) -> bool:
        return True

    def read(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        idx = list(indices)
        feeds = np.stack([to_input(self._images[i], self._pre) for i in idx])
        name = self._pre.input if self._pre is not None else "images"
        targets = np.empty(len(idx), dtype=object)
        targets[:] = [self._in_input_pixels(i) for i in idx]
        return {name: feeds}, targets

    def _in_input_pixels(self, i: int) -> dict[str, np.ndarray]:
        """Scene ``i``'s ground truth in the model input's pixels (the detector's outputs are in those)."""
        target = self._targets[i]
        if self._pre is None:
            return target
        height, width = self._images.shape[1:3]
        sx, sy, left, top = input_geometry(height, width, self._pre)
        boxes = np.asarray(target["boxes"], np.float32).copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * sx - left
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * sy - top
        return {"boxes": boxes, "labels": target["labels"]}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "scenes",
            "set": self._what,
            "samples": len(self),
            "size": list(self._images.shape[1:3]),
        }


def calibration(preprocessing: Preprocessing | None = None, **_: Any) -> CalibrationSet:
    """Training scenes for int8 calibration (never the held-out ones), one per batch."""
    images, targets = load_scenes("train", CALIBRATION_SCENES, start=100_000)
    return CalibrationSet(SceneSource(images, targets, preprocessing, "calibration"), batch_size=1)


def holdout(preprocessing: Preprocessing | None = None, **_: Any) -> CalibrationSet:
    """Held-out scenes (unseen handwriting) with their boxes, for accuracy (mAP), one per batch."""
    images, targets = load_scenes("holdout", HOLDOUT_SCENES)
    return CalibrationSet(SceneSource(images, targets, preprocessing, "holdout"), batch_size=1)
