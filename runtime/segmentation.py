"""Semantic segmentation: per-pixel class scores judged as class maps, and masks at the image's own size.

A segmenter's main output holds class scores for every pixel, ``[batch, classes, H, W]`` (a torchvision
segmenter's ``out``; its auxiliary head ``aux`` is training-only and not judged). Its class map is the
class with the highest score at each pixel (:func:`infership.runtime.tasks.class_map`).

- :class:`SegmentationJudge` compares a candidate with a reference: the element-wise figures of every output,
  plus ``pixel_agreement`` (share of pixels whose class agrees) and ``miou_agreement`` (the mean over classes
  of the IoU between the two class maps). Against ground-truth masks ``[batch, H, W]`` of integer classes it
  scores the mean IoU in percent, over the whole set (one confusion matrix, as torchvision's reference
  scripts do); pixels labelled :data:`IGNORE_INDEX` (255, VOC's "void") are not counted, and classes absent
  from both prediction and truth are left out of the mean.
- :func:`segment` (``Predictor.segment``) turns raw images into one class mask per image at the image's
  original size, undoing the artifact's recorded resize and crop (bilinear on the class scores, then argmax,
  the way torchvision's segmenters upsample their own logits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .figures import Agreement, accuracy_figures
from .manifest import Preprocessing
from .preprocess import open_image
from .tasks import Task, _elementwise, class_map

Outputs = Mapping[str, np.ndarray]

#: Ground-truth label of pixels that are not scored (VOC's boundary / "void" pixels).
IGNORE_INDEX = 255
#: Names of auxiliary outputs that are never the main class scores (torchvision's training-only head).
AUX_OUTPUTS = ("aux",)
#: Rows of a mask computed at once when resizing class scores (bounds memory on large photos).
_ROW_BLOCK = 256


def main_output(outputs: Outputs) -> str:
    """The name of the output holding the class scores: ``out`` when there is one, else the first output of
    rank 4 that is not auxiliary.

    Raises:
        InvalidInputError: No output is ``[batch, classes, H, W]`` with at least two classes.
    """
    names = list(outputs)
    candidates = (["out"] if "out" in outputs else []) + [n for n in names if n not in AUX_OUTPUTS]
    for name in candidates:
        shape = np.shape(outputs[name])
        if len(shape) == 4 and shape[1] >= 2:
            return name
    shapes = {n: list(np.shape(v)) for n, v in outputs.items()}
    raise InvalidInputError(
        f"task 'segmentation' expects class scores [batch, classes, H, W] (two classes or more) in an output, "
        f"got {shapes}; a binary model with one logit channel can return torch.cat([-x, x], 1) instead"
    )


class SegmentationJudge:
    """Per-pixel class scores ``[batch, classes, H, W]`` in the main output (see :func:`main_output`)."""

    task = Task.SEGMENTATION

    def compare(
        self,
        reference: Sequence[Outputs],
        candidate: Sequence[Outputs],
        *,
        labels: np.ndarray | None = None,
    ) -> Agreement:
        refs = [reference] if isinstance(reference, Mapping) else list(reference)
        cands = [candidate] if isinstance(candidate, Mapping) else list(candidate)
        base = _elementwise(refs, cands, self.task)
        name = main_output(refs[0])
        classes = int(np.shape(refs[0][name])[1])
        agree = total = 0
        versus = np.zeros((classes, classes), np.int64)
        truth_ref = np.zeros_like(versus)
        truth_cand = np.zeros_like(versus)
        row = 0
        for r, c in zip(refs, cands, strict=True):
            map_ref, map_cand = class_map(r[name]), class_map(c[name])
            agree += int(np.count_nonzero(map_ref == map_cand))
            total += map_ref.size
            versus += _confusion(map_ref, map_cand, classes)
            if labels is not None:
                masks = _masks(labels, row, map_ref.shape, classes)
                truth_ref += _confusion(masks, map_ref, classes)
                truth_cand += _confusion(masks, map_cand, classes)
            row += len(map_ref)
        if labels is not None and row != len(labels):
            raise InvalidInputError(f"expected {row} masks (one per sample), got {len(labels)}")
        figures: dict[str, Any] = {
            "pixel_agreement": round(agree / max(total, 1), 6),
            "miou_agreement": round(_miou(versus), 6),
        }
        if labels is not None:
            acc_ref, acc = 100.0 * _miou(truth_ref), 100.0 * _miou(truth_cand)
            figures.update(accuracy_figures(acc_ref, acc))
        return replace(base, **figures)

    def score(self, outputs: Sequence[Outputs], labels: np.ndarray) -> float | None:
        """Mean IoU in percent of the class maps against ground-truth masks ``[samples, H, W]``."""
        if not outputs:
            raise InvalidInputError("nothing to score: no outputs given")
        name = main_output(outputs[0])
        classes = int(np.shape(outputs[0][name])[1])
        confusion = np.zeros((classes, classes), np.int64)
        row = 0
        for o in outputs:
            pred = class_map(o[name])
            confusion += _confusion(_masks(labels, row, pred.shape, classes), pred, classes)
            row += len(pred)
        if row != len(labels):
            raise InvalidInputError(f"expected {row} masks (one per sample), got {len(labels)}")
        return round(100.0 * _miou(confusion), 4)

    def predictions(self, outputs: Outputs) -> np.ndarray:
        """The class map of each sample, ``[batch, H, W]``."""
        return class_map(outputs[main_output(outputs)])

    def summarise(self, outputs: Outputs, *, labels: Sequence[str] | None = None, top: int = 3) -> list[str]:
        maps = self.predictions(outputs)
        classes = int(np.shape(outputs[main_output(outputs)])[1])
        lines = []
        for m in maps:
            share = np.bincount(m.reshape(-1), minlength=classes) / max(m.size, 1)
            best = np.argsort(-share, kind="stable")[: max(1, top)]
            lines.append(
                ", ".join(f"{labels[j] if labels else j} ({100 * share[j]:.1f}% of pixels)" for j in best)
            )
        return lines


def _masks(labels: np.ndarray, start: int, shape: tuple[int, ...], classes: int) -> np.ndarray:
    """The ground-truth masks of one batch (rows ``start`` onwards), checked against the class maps."""
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise InvalidInputError(f"expected integer class masks, got dtype {lab.dtype}")
    if lab.ndim != 3 or lab.shape[1:] != tuple(shape[1:]):
        raise InvalidInputError(
            f"expected masks [samples, {shape[1]}, {shape[2]}] (the class maps' size), got {list(lab.shape)}"
        )
    part = lab[start : start + shape[0]]
    if len(part) != shape[0]:
        raise InvalidInputError(f"expected at least {start + shape[0]} masks, got {len(lab)}")
    bad = (part != IGNORE_INDEX) & ((part < 0) | (part >= classes))
    if bad.any():
        raise InvalidInputError(
            f"expected mask values in [0, {classes}) or {IGNORE_INDEX} (ignored), got {np.unique(part[bad])[:8]}"
        )
    return part


def _confusion(truth: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """``classes × classes`` pixel counts, rows by ``truth`` (pixels at :data:`IGNORE_INDEX` left out)."""
    t = np.asarray(truth).reshape(-1).astype(np.int64)
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    keep = t != IGNORE_INDEX
    return np.bincount(t[keep] * classes + p[keep], minlength=classes * classes).reshape(classes, classes)


def _miou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in truth or prediction; 1.0 when there is nothing at all."""
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 1.0


# ---------------------------------------------------------------------------------------------- masks
def segment(
    predictor: Any,
    images: Any,
    *,
    output: str | None = None,
    batch_size: int = 8,
    unseen: int = 0,
) -> list[np.ndarray]:
    """One class mask per raw image, at the image's original size.

    The images go through the artifact's recorded preprocessing; the class scores are resized back to the
    original image (undoing the recorded resize, and the crop: pixels the model never saw get ``unseen``)
    with bilinear interpolation, then each pixel takes its highest-scoring class.

    Args:
        predictor: A :class:`~infership.runtime.predictor.Predictor` of a segmentation artifact with image
            preprocessing.
        images: An image or a list of them: file paths, PIL images or HW/HWC uint8 arrays.
        output: The output holding the class scores; default :func:`main_output`.
        batch_size: Images run together at most (consecutive images with the same input size).
        unseen: Class given to pixels cropped away before the model saw them.

    Returns:
        A ``[height, width]`` mask per image, ``uint8`` when the classes fit in it (else ``int32``).

    Raises:
        InvalidInputError: The artifact records no preprocessing, an item is not an image, or the model
            has no ``[batch, classes, H, W]`` output.
    """
    pre = predictor.manifest.preprocessing
    if pre is None:
        raise InvalidInputError(
            "segment() needs the artifact's image preprocessing (export with --preprocess / preprocessing=); "
            "use predict() with tensors instead"
        )
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    masks: list[np.ndarray] = []
    batch: list[Any] = []
    shapes: list[_Geometry] = []

    def flush() -> None:
        out = predictor.predict(batch)
        name = output or main_output(out)
        if name not in out:
            raise InvalidInputError(f"segment(output={name!r}): the model's outputs are {sorted(out)}")
        scores = np.asarray(out[name])
        if scores.ndim != 4:
            raise InvalidInputError(
                f"segment(output={name!r}) expects class scores [batch, classes, H, W], got {list(scores.shape)}"
            )
        masks.extend(_to_original(scores[i], g, unseen) for i, g in enumerate(shapes))
        batch.clear()
        shapes.clear()

    # Images are opened batch by batch (a long list never sits decoded in memory at once); a batch holds
    # images of one input geometry, up to batch_size.
    for item in items:
        img = open_image(item, pre)
        geo = _geometry(img.size, pre)
        if batch and (len(batch) >= batch_size or geo.input != shapes[0].input):
            flush()
        batch.append(img)
        shapes.append(geo)
    if batch:
        flush()
    return masks


class _Geometry:
    """Where the model's input sits in the original image: resized to ``resized`` (h, w), then cropped at
    ``top``/``left`` to ``input`` (h, w)."""

    def __init__(self, original: tuple[int, int], resized: tuple[int, int], top: int, left: int, crop: tuple):
        self.original, self.resized, self.top, self.left = original, resized, top, left
        self.input = crop


def _geometry(size: tuple[int, int], pre: Preprocessing) -> _Geometry:
    """The same arithmetic as :func:`infership.runtime.preprocess.preprocess_image`."""
    w, h = size
    if pre.resize is None:
        rh, rw = h, w
    elif isinstance(pre.resize, int):
        r = pre.resize
        rw, rh = (r, max(1, int(r * h / w))) if w <= h else (max(1, int(r * w / h)), r)
    else:
        rh, rw = int(pre.resize[0]), int(pre.resize[1])
    if pre.crop is None:
        return _Geometry((h, w), (rh, rw), 0, 0, (rh, rw))
    ch, cw = pre.crop
    return _Geometry((h, w), (rh, rw), round((rh - ch) / 2), round((rw - cw) / 2), (ch, cw))


def _to_original(scores: np.ndarray, g: _Geometry, unseen: int) -> np.ndarray:
    """``[classes, oh, ow]`` class scores → the ``[h, w]`` class mask of the original image."""
    classes, oh, ow = scores.shape
    (h, w), (rh, rw) = g.original, g.resized
    wy, seen_y = _weights(h, rh, g.top, g.input[0], oh)
    wx, seen_x = _weights(w, rw, g.left, g.input[1], ow)
    dtype = np.uint8 if classes <= 256 else np.int32
    mask = np.empty((h, w), dtype)
    flat = scores.astype(np.float32, copy=False)
    for y0 in range(0, h, _ROW_BLOCK):
        rows = np.einsum("yi,cij->cyj", wy[y0 : y0 + _ROW_BLOCK], flat)
        block = rows @ wx.T  # [classes, rows, w]
        mask[y0 : y0 + _ROW_BLOCK] = class_map(block[None])[0]
    if not (seen_y.all() and seen_x.all()):
        mask[~(seen_y[:, None] & seen_x[None, :])] = unseen
    return mask


def _weights(n: int, resized: int, offset: int, crop: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights ``[n, out]`` from the model's ``out`` score positions to ``n`` original pixels
    (half-pixel centres, clamped at the edges, like ``F.interpolate(..., align_corners=False)``), and which
    original pixels fall inside the crop the model saw."""
    centre = (np.arange(n) + 0.5) * (resized / n) - offset  # in the cropped input's pixels
    seen = (centre >= 0) & (centre < crop)
    src = np.clip(centre * (out / crop) - 0.5, 0.0, out - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, out - 1)
    frac = (src - lo).astype(np.float32)
    weights = np.zeros((n, out), np.float32)
    rows = np.arange(n)
    np.add.at(weights, (rows, lo), 1.0 - frac)
    np.add.at(weights, (rows, hi), frac)
    return weights, seen
