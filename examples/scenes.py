"""Offline scenes for detection and segmentation: handwritten digits pasted onto real photos.

Every scene is built from data that ships with the installed packages, so nothing is downloaded:
the background is a random crop of one of scikit-image's sample photos (``skimage.data``), and one to
four handwritten digits from scikit-learn's bundled digits (``sklearn.datasets.load_digits``) are
upscaled and drawn onto it as dark or bright strokes, their opacity following the digit's ink.

A scene gives what both tasks need:

* ``image`` — ``HxWx3`` uint8;
* ``boxes`` — ``[n, 4]`` float32 ``x1, y1, x2, y2`` in pixels (``x2``/``y2`` exclusive, torchvision's
  convention), the extent of each digit's visible ink;
* ``labels`` — ``[n]`` int64, the digit plus one (``0`` is the background class);
* ``mask`` — ``HxW`` uint8: ``0`` background, ``digit + 1`` where a digit's ink is opaque, and, when asked
  for, ``255`` (ignore) on the faint rim of each stroke.

Scenes are deterministic: scene ``i`` of a split is the same on every machine. The two splits differ in
their random streams *and* in the handwriting: ``"train"`` draws digits from the first 1,437 digits of
scikit-learn's set, ``"holdout"`` from the last 360, so held-out scenes show writers never seen in
training. Example::

    from scenes import make_scenes

    train = make_scenes(200, size=160, split="train")
    holdout = make_scenes(100, size=160, split="holdout")
    scene = holdout[0]
    scene.image.shape, scene.boxes, scene.labels
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "holdout")
IGNORE = 255
NUM_CLASSES = 11  # background + digits 0..9
CLASS_NAMES = ("background", *(str(d) for d in range(10)))

# Sample photos that ship inside scikit-image (no download), colour and grayscale.
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "colorwheel",
    "camera",
    "coins",
    "brick",
    "grass",
    "gravel",
    "moon",
    "page",
    "text",
)

_SPLIT_STREAM = {"train": 0, "holdout": 1}
_HOLDOUT_DIGITS = 360  # the last 360 of 1,797 digits are held-out handwriting
_MASK_ALPHA = 0.5  # ink at least this opaque is the digit in the mask
_BOX_ALPHA = 0.2  # ink at least this opaque is inside the digit's box


@dataclass(frozen=True)
class Scene:
    """One scene: a photo with digits, their boxes, labels and mask.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        boxes: ``[n, 4]`` float32 ``x1, y1, x2, y2`` (pixels; ``x2``/``y2`` exclusive).
        labels: ``[n]`` int64 class indices, digit + 1.
        mask: ``[H, W]`` uint8 class per pixel (0 background, digit + 1, 255 ignore when asked for).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    mask: np.ndarray

    def target(self) -> dict[str, np.ndarray]:
        """The ground truth as a detection target ``{"boxes", "labels"}``.

        Returns:
            The scene's boxes and labels.
        """
        return {"boxes": self.boxes, "labels": self.labels}


@functools.cache
def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


@functools.cache
def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    cut = len(labels) - _HOLDOUT_DIGITS
    if split == "train":
        return images[:cut], labels[:cut]
    return images[cut:], labels[cut:]


def _resize(array: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((width, height), Image.BILINEAR))
    resized = Image.fromarray(array.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    photo = _photo(PHOTOS[int(rng.integers(len(PHOTOS)))])
    ph, pw = photo.shape[:2]
    # A crop covering 30–100 % of the photo's area, with the scene's aspect ratio where it fits.
    area = rng.uniform(0.3, 1.0) * ph * pw
    ratio = width / height
    ch = int(min(ph, max(16, round(np.sqrt(area / ratio)))))
    cw = int(min(pw, max(16, round(ch * ratio))))
    y0 = int(rng.integers(0, ph - ch + 1))
    x0 = int(rng.integers(0, pw - cw + 1))
    crop = photo[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _resize(np.ascontiguousarray(crop), height, width)


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]], gap: int) -> bool:
    x1, y1, x2, y2 = box
    for a1, b1, a2, b2 in placed:
        if x1 < a2 + gap and a1 < x2 + gap and y1 < b2 + gap and b1 < y2 + gap:
            return True
    return False


def make_scene(
    seed: int,
    *,
    size: int | tuple[int, int] = 160,
    split: str = "train",
    max_digits: int = 4,
    digit_scale: tuple[float, float] = (0.18, 0.45),
    ignore_rim: bool = False,
) -> Scene:
    """One deterministic scene.

    Args:
        seed: The scene's number within its split; the same seed and options give the same scene.
        size: ``H`` (square) or ``(H, W)`` in pixels.
        split: ``"train"`` or ``"holdout"``: separate random streams and separate handwriting.
        max_digits: At most this many digits (at least one); digits never overlap.
        digit_scale: A digit's side as a share of the scene's shorter side, drawn uniformly in this range.
        ignore_rim: Mark the faint rim of each stroke ``255`` (ignore) in the mask instead of background.

    Returns:
        The scene.

    Raises:
        ValueError: ``split`` is unknown, ``size`` is under 32 pixels or ``max_digits`` is under 1.
    """
    if split not in SPLITS:
        raise ValueError(f"scene split: expected one of {', '.join(SPLITS)}, got {split!r}")
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(height, width) < 32:
        raise ValueError(f"scene size: at least 32 pixels a side, got {height}x{width}")
    if max_digits < 1:
        raise ValueError(f"max_digits: at least 1, got {max_digits}")
    rng = np.random.default_rng(np.random.SeedSequence([_SPLIT_STREAM[split], int(seed)]))
    image = _background(rng, height, width).astype(np.float32)
    mask = np.zeros((height, width), np.uint8)
    digit_images, digit_labels = _digits(split)

    boxes: list[list[float]] = []
    labels: list[int] = []
    placed: list[tuple[int, int, int, int]] = []
    short = min(height, width)
    for _ in range(int(rng.integers(1, max_digits + 1))):
        index = int(rng.integers(len(digit_labels)))
        side = int(round(rng.uniform(*digit_scale) * short))
        dh = max(12, side)
        dw = max(10, int(round(side * rng.uniform(0.7, 1.0))))  # digits are a little taller than wide
        for _attempt in range(20):
            y0 = int(rng.integers(0, height - dh + 1))
            x0 = int(rng.integers(0, width - dw + 1))
            if not _overlaps((x0, y0, x0 + dw, y0 + dh), placed, gap=2):
                break
        else:
            continue  # no room left for this one
        alpha = np.clip(_resize(digit_images[index], dh, dw), 0.0, 1.0)
        ink = alpha >= _BOX_ALPHA
        if not ink.any():
            continue
        region = image[y0 : y0 + dh, x0 : x0 + dw]
        # Dark strokes on bright ground, bright strokes on dark ground, so every digit stays visible.
        luminance = float(region.mean())
        base = rng.uniform(0, 40) if luminance > 127 else rng.uniform(215, 255)
        colour = np.clip(base + rng.uniform(-15, 15, size=3), 0, 255).astype(np.float32)
        region[...] = (1.0 - alpha[:, :, None]) * region + alpha[:, :, None] * colour
        digit = int(digit_labels[index])
        sub = mask[y0 : y0 + dh, x0 : x0 + dw]
        sub[alpha >= _MASK_ALPHA] = digit + 1
        if ignore_rim:
            sub[(alpha >= _BOX_ALPHA) & (alpha < _MASK_ALPHA)] = IGNORE
        rows = np.flatnonzero(ink.any(axis=1))
        cols = np.flatnonzero(ink.any(axis=0))
        boxes.append([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1])
        labels.append(digit + 1)
        placed.append((x0, y0, x0 + dw, y0 + dh))

    return Scene(
        image=np.clip(np.round(image), 0, 255).astype(np.uint8),
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64),
        mask=mask,
    )


def make_scenes(
    count: int,
    *,
    size: int | tuple[int, int] = 160,
    split: str = "train",
    start: int = 0,
    **options: object,
) -> list[Scene]:
    """``count`` scenes of a split, numbered from ``start``.

    Args:
        count: How many scenes.
        size: ``H`` (square) or ``(H, W)`` in pixels.
        split: ``"train"`` or ``"holdout"``.
        start: The first scene's number (scenes ``start .. start + count - 1``).
        **options: Passed to :func:`make_scene` (``max_digits``, ``digit_scale``, ``ignore_rim``).

    Returns:
        The scenes, in order.
    """
    return [make_scene(start + i, size=size, split=split, **options) for i in range(count)]  # type: ignore[arg-type]


def stack(scenes: list[Scene]) -> tuple[np.ndarray, list[dict[str, np.ndarray]], np.ndarray]:
    """Scenes of one size as arrays: images ``[n, H, W, 3]`` uint8, targets and masks ``[n, H, W]``.

    Args:
        scenes: Scenes of the same size.

    Returns:
        ``(images, targets, masks)``; ``targets`` is a list of ``{"boxes", "labels"}`` per image.
    """
    images = np.stack([s.image for s in scenes])
    masks = np.stack([s.mask for s in scenes])
    return images, [s.target() for s in scenes], masks
