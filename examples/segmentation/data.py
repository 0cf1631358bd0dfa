"""The segmentation example's data: handwritten digits on photos (``examples/scenes.py``), with masks.

Each scene is a crop of one of scikit-image's sample photos with one to four of scikit-learn's handwritten
digits drawn on it; its mask gives every pixel its class: ``0`` background, ``d + 1`` for digit ``d``.
Training scenes use the first 1,437 handwritten digits, held-out scenes the last 360 (writers never seen in
training). Scenes are made at the model's input size, so masks and class maps line up pixel for pixel.

The sets plug into infership as ``FILE.py:FUNCTION`` sources (``data.py:calibration`` and
``data.py:holdout`` in ``pipeline.toml``): a ``CalibrationSet`` whose labels are the masks
``[n, H, W]``, judged by the segmentation task (mIoU).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from infership.calibration import CalibrationSet, import_file
from infership.runtime import Preprocessing
from infership.runtime.preprocess import preprocess_image

SIZE = 96  # scene and model input side, pixels
CALIBRATION_SCENES = 256
HOLDOUT_SCENES = 300  # held-out scenes: about 750 digits
CACHE = Path(__file__).resolve().parents[2] / "runs" / "segmentation" / "scenes"


scenes = import_file(Path(__file__).resolve().parents[1] / "scenes.py")  # examples/ is not a package
CLASS_NAMES: tuple[str, ...] = tuple(scenes.CLASS_NAMES)


@functools.lru_cache(maxsize=8)
def load_scenes(split: str, count: int, *, size: int = SIZE, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes of ``split`` as ``(images [n, H, W, 3] uint8, masks [n, H, W] uint8)``.

    Made once and kept in ``runs/segmentation/scenes/`` (deterministic: the same on every machine).
    """
    path = CACHE / f"{split}-{start}-{count}-{size}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["images"], f["masks"]
    made = scenes.make_scenes(count, size=size, split=split, start=start)
    images, _, masks = scenes.stack(made)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    objects = np.asarray([len(s.labels) for s in made])
    np.savez_compressed(tmp, images=images, masks=masks, objects=objects)
    tmp.replace(path)
    return images, masks


def count_objects(split: str, count: int, *, size: int = SIZE, start: int = 0) -> int:
    """How many digits the scenes of :func:`load_scenes` hold."""
    load_scenes(split, count, size=size, start=start)
    with np.load(CACHE / f"{split}-{start}-{count}-{size}.npz") as f:
        if "objects" in f:
            return int(f["objects"].sum())
    made = scenes.make_scenes(count, size=size, split=split, start=start)
    return sum(len(s.labels) for s in made)


class SceneSource:
    """Scenes as model inputs (through the artifact's preprocessing) with their masks as labels."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, pre: Preprocessing | None, what: str) -> None:
        self._images, self._masks, self._pre, self._what = images, masks, pre, what

    def __len__(self) -> int:
        return len(self._images)

    @property
    def has_labels(self) -> bool:
        return True

    def read(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        idx = list(indices)
        feeds = np.stack([to_input(self._images[i], self._pre) for i in idx])
        name = self._pre.input if self._pre is not None else ""
        return {name: feeds}, self._masks[idx].astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "scenes",
            "set": self._what,
            "samples": len(self),
            "size": list(self._images.shape[1:3]),
        }


def to_input(image: np.ndarray, pre: Preprocessing | None) -> np.ndarray:
    """One ``HxWx3`` uint8 scene → the model's ``[3, H, W]`` float input (the artifact's preprocessing, or
    scaling to [0, 1] like the ``unit`` preset when there is none yet, e.g. in training)."""
    if pre is not None:
        return preprocess_image(image, pre)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def calibration(preprocessing: Preprocessing | None = None, batch_size: int = 16) -> CalibrationSet:
    """Training scenes for int8 calibration (never the held-out ones)."""
    images, masks = load_scenes("train", CALIBRATION_SCENES, start=100_000)
    return CalibrationSet(SceneSource(images, masks, preprocessing, "calibration"), batch_size=batch_size)


def holdout(preprocessing: Preprocessing | None = None, batch_size: int = 16) -> CalibrationSet:
    """Held-out scenes (unseen handwriting) with their masks, for accuracy (mIoU)."""
    images, masks = load_scenes("holdout", HOLDOUT_SCENES)
    return CalibrationSet(SceneSource(images, masks, preprocessing, "holdout"), batch_size=batch_size)
