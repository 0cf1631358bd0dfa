"""examples/scenes.py: deterministic digit-on-photo scenes whose boxes, labels and masks agree."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "examples" / "scenes.py"


def _load():
    name = "infership_example_scenes"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


scenes = _load()


def test_scene_shapes_and_types() -> None:
    scene = scenes.make_scene(0, size=(96, 128))
    assert scene.image.shape == (96, 128, 3) and scene.image.dtype == np.uint8
    assert scene.mask.shape == (96, 128) and scene.mask.dtype == np.uint8
    n = len(scene.labels)
    assert 1 <= n <= 4
    assert scene.boxes.shape == (n, 4) and scene.boxes.dtype == np.float32
    assert scene.labels.dtype == np.int64
    assert ((scene.labels >= 1) & (scene.labels <= 10)).all()


@pytest.mark.parametrize("split", ["train", "holdout"])
def test_boxes_contain_their_mask_pixels(split: str) -> None:
    for scene in scenes.make_scenes(12, size=128, split=split, ignore_rim=True):
        covered = np.zeros(scene.mask.shape, bool)
        for box, label in zip(scene.boxes, scene.labels, strict=True):
            x1, y1, x2, y2 = box.astype(int)
            assert 0 <= x1 < x2 <= scene.mask.shape[1] and 0 <= y1 < y2 <= scene.mask.shape[0]
            inside = scene.mask[y1:y2, x1:x2]
            assert (inside == label).any(), "each digit has mask pixels inside its box"
            covered[y1:y2, x1:x2] = True
        # Every digit or ignore pixel lies in some box; no digit pixel outside all boxes.
        assert not (scene.mask[~covered] != 0).any()
        present = set(np.unique(scene.mask)) - {0, scenes.IGNORE}
        assert present == set(scene.labels.tolist())


def test_scenes_are_deterministic_and_splits_differ() -> None:
    a = scenes.make_scene(3, size=96, split="train")
    b = scenes.make_scene(3, size=96, split="train")
    c = scenes.make_scene(3, size=96, split="holdout")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    assert np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)


def test_digits_are_visible_against_the_photo() -> None:
    # The strokes are drawn dark on bright ground and bright on dark: ink differs from its surroundings.
    for scene in scenes.make_scenes(6, size=128):
        gray = scene.image.astype(np.float32).mean(axis=2)
        for box, label in zip(scene.boxes, scene.labels, strict=True):
            x1, y1, x2, y2 = box.astype(int)
            ink = scene.mask[y1:y2, x1:x2] == label
            ground = scene.mask[y1:y2, x1:x2] == 0
            if ink.sum() > 5 and ground.sum() > 5:
                assert abs(gray[y1:y2, x1:x2][ink].mean() - gray[y1:y2, x1:x2][ground].mean()) > 15


def test_stack_and_bad_options() -> None:
    images, targets, masks = scenes.stack(scenes.make_scenes(3, size=64, start=5))
    assert images.shape == (3, 64, 64, 3) and masks.shape == (3, 64, 64) and len(targets) == 3
    assert set(targets[0]) == {"boxes", "labels"}
    with pytest.raises(ValueError, match="split"):
        scenes.make_scene(0, split="test")
    with pytest.raises(ValueError, match="size"):
        scenes.make_scene(0, size=16)
