"""Object detection: how detections are compared, scored against ground truth and decoded for users.

A detector artifact has flat, data-dependent outputs (:data:`OUTPUTS`): ``boxes [N, 4]`` (``x1, y1, x2, y2``
in the model input's pixels), ``scores [N]``, ``labels [N]`` (class indices) and ``batch_index [N]`` (which
image of the batch each detection belongs to). ``N`` is a symbolic dimension (:data:`DETECTIONS_DIM`): it
differs from image to image, so element-wise tolerances do not apply — the :class:`DetectionJudge` matches
detections instead.

- **Against a reference** (:meth:`DetectionJudge.compare`): the reference's detections scoring at least
  the compare threshold (:data:`SCORE_THRESHOLD`, or half the reference's best score when that is lower, so
  an unconfident model is still compared) are matched to the candidate's greedily, per label, highest score
  first, at IoU ≥ :data:`MATCH_IOU`. A candidate detection scoring a little under the threshold may still
  match (a score that crosses the threshold is not a different detection); one scoring a little above it
  and matching nothing counts as extra. Figures: ``detections_matched`` (matched pairs over reference
  detections plus extra candidate ones), ``box_iou_min`` / ``box_iou_mean`` of matched pairs,
  ``score_diff_max``, ``label_agreement`` (share of pairs matched regardless of label whose labels agree).
- **Against ground truth** (:meth:`DetectionJudge.score`, and ``compare`` with ``labels``): COCO-style mAP
  in percent — per class, 101-point interpolated precision over recall, averaged over classes that have
  ground truth; ``map50`` at IoU 0.5 and ``map50_95`` averaged over IoU 0.50:0.05:0.95. Ground truth is a
  list of per-image mappings ``{"boxes": [n, 4], "labels": [n]}``. ``accuracy`` is mAP@0.5.
- **For users** (:func:`detect`, behind ``Predictor.detect``): per-image :class:`Detections` with boxes in
  the original image's coordinates, undoing the artifact's recorded resize and crop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .figures import Agreement, accuracy_figures
from .preprocess import open_image
from .tasks import Task

Outputs = Mapping[str, np.ndarray]

#: The outputs of an exported detector, in order.
OUTPUTS = ("boxes", "scores", "labels", "batch_index")
#: The symbolic size of the detections axis in the manifest.
DETECTIONS_DIM = "detections"
#: Detections the reference scores at least this are compared (see the module docstring).
SCORE_THRESHOLD = 0.5
#: Share of the threshold by which a candidate score may miss it and still match, or exceed it unmatched
#: without counting as extra.
SCORE_MARGIN = 0.1
#: IoU at which two detections are the same object when comparing with a reference.
MATCH_IOU = 0.5
#: A score shared by more detections of one image than this, under :data:`SCORE_THRESHOLD`, marks an
#: untrained model's output: which of those detections it keeps, and in which order, is arbitrary.
MAX_TIED = 5  # such images are left out of the comparison (both sides)
#: IoU thresholds of COCO's mAP@0.5:0.95.
COCO_IOUS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class Detections:
    """One image's detections.

    Attributes:
        boxes: ``[n, 4]`` float32 ``x1, y1, x2, y2`` in pixels.
        scores: ``[n]`` float32, highest first as the model returned them.
        labels: ``[n]`` int64 class indices.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> Detections:
        """The detections scoring at least ``threshold``."""
        return self.where(self.scores >= threshold)

    def where(self, keep: np.ndarray) -> Detections:
        """The detections where ``keep`` is true."""
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])


def _untrained(d: Detections) -> bool:
    """Whether more than :data:`MAX_TIED` of ``d``'s detections share one score (to 5 decimals) under
    :data:`SCORE_THRESHOLD`: an untrained model's output, whose choice and order of boxes is arbitrary."""
    rounded = np.round(d.scores.astype(np.float64), 5)
    values, counts = np.unique(rounded, return_counts=True)
    return bool(np.any((counts > MAX_TIED) & (values < SCORE_THRESHOLD)))


# ---------------------------------------------------------------------------------------------- splitting
def _named(outputs: Outputs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    names = list(outputs)
    if all(n in outputs for n in OUTPUTS[:3]):
        picked = [outputs[n] for n in OUTPUTS[:3]] + [outputs.get("batch_index")]
    elif len(names) >= 3:  # outputs named otherwise: by position, in the exported order
        picked = [outputs[n] for n in names[:3]] + [outputs[names[3]] if len(names) > 3 else None]
    else:
        raise InvalidInputError(
            f"task 'detection' expects outputs {', '.join(OUTPUTS)}; the model has {names}"
        )
    boxes, scores, labels, index = (None if a is None else np.asarray(a) for a in picked)
    if (
        boxes.ndim != 2
        or boxes.shape[1] != 4
        or scores.shape != boxes.shape[:1]
        or labels.shape != scores.shape
    ):
        raise InvalidInputError(
            "task 'detection' expects boxes [N, 4], scores [N] and labels [N]; got "
            f"{list(boxes.shape)}, {list(scores.shape)}, {list(labels.shape)}"
        )
    if index is not None and index.shape != scores.shape:
        raise InvalidInputError(f"batch_index must be [N] like scores, got {list(index.shape)}")
    return boxes, scores, labels, index


def split_detections(outputs: Outputs, *, images: int | None = None) -> list[Detections]:
    """One batch's flat outputs → one :class:`Detections` per image.

    Args:
        outputs: A detector's outputs for one batch (see :data:`OUTPUTS`).
        images: Images in the batch (default: one more than the largest ``batch_index``, at least one).

    Returns:
        The detections of each image, in batch order.

    Raises:
        InvalidInputError: The outputs are not a detector's, or ``batch_index`` names an image beyond
            ``images``.
    """
    boxes, scores, labels, index = _named(outputs)
    if index is None:
        index = np.zeros(len(scores), np.int64)
    count = images if images is not None else (int(index.max()) + 1 if index.size else 1)
    if index.size and (index.min() < 0 or index.max() >= count):
        raise InvalidInputError(f"batch_index holds values outside 0..{count - 1}")
    boxes = boxes.astype(np.float32, copy=False)
    scores = scores.astype(np.float32, copy=False)
    labels = labels.astype(np.int64, copy=False)
    return [Detections(boxes[index == i], scores[index == i], labels[index == i]) for i in range(count)]


def offset_run(outputs: Outputs, *, start: int, images: int) -> dict[str, np.ndarray]:
    """One run of a batch split into runs, made ready to join the others: ``batch_index`` shifted by the
    run's first image ``start``, and the detections of padding images (``batch_index >= images``) dropped.
    Outputs other than :data:`OUTPUTS` pass unchanged."""
    out = dict(outputs)
    index = out.get("batch_index")
    if index is None:
        return out
    keep = np.asarray(index) < images
    for name in OUTPUTS:
        if name in out:
            out[name] = np.asarray(out[name])[keep]
    out["batch_index"] = out["batch_index"] + start
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` ``[n, 4]`` with every box in ``b`` ``[m, 4]`` (``x1, y1, x2, y2``): ``[n, m]``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    # Empty boxes (x1 == x2, which untrained detectors return) are the same box where they coincide.
    same = np.all(np.abs(a[:, None, :] - b[None, :, :]) <= 1e-3, axis=2)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), same.astype(np.float64))


def _greedy(ref: Detections, cand: Detections, *, per_label: bool, min_iou: float) -> list[tuple[int, int]]:
    """Pairs ``(ref index, cand index)``: reference detections by score, each taking its best free match."""
    iou = box_iou(ref.boxes, cand.boxes)
    if per_label:
        iou = np.where(ref.labels[:, None] == cand.labels[None, :], iou, 0.0)
    taken = np.zeros(len(cand), bool)
    pairs = []
    for i in np.argsort(-ref.scores, kind="stable"):
        if not len(cand):
            break
        row = np.where(taken, -1.0, iou[i])
        j = int(row.argmax())
        if row[j] >= min_iou:
            taken[j] = True
            pairs.append((int(i), j))
    return pairs


# ---------------------------------------------------------------------------------------------- mAP
def average_precision(
    predictions: Sequence[Detections],
    targets: Sequence[Mapping[str, Any]],
    *,
    iou_thresholds: Sequence[float] = (0.5,),
    max_detections: int = 100,
) -> float | None:
    """COCO-style mean average precision in percent.

    For each class with ground truth and each IoU threshold, every image's top ``max_detections``
    predictions are sorted by score over the whole set; each takes the unmatched ground-truth box of its
    class in its image with the highest IoU at or above the threshold (a true positive) or none (a false
    positive). Precision is made monotone (the best precision at any higher recall) and read at the 101
    recall points 0, 0.01, …, 1 (0 past the highest recall reached). AP is their mean; the result averages
    over classes and thresholds.

    Args:
        predictions: One :class:`Detections` per image.
        targets: One mapping ``{"boxes": [n, 4], "labels": [n]}`` per image.
        iou_thresholds: IoU thresholds to average over (``COCO_IOUS`` for mAP@0.5:0.95).
        max_detections: Highest-scoring detections kept per image (COCO: 100).

    Returns:
        mAP in percent; ``None`` when the ground truth holds no object.

    Raises:
        InvalidInputError: Different numbers of images, or a target without ``boxes``/``labels``.
    """
    if len(predictions) != len(targets):
        raise InvalidInputError(
            f"expected ground truth for each of the {len(predictions)} images, got {len(targets)}"
        )
    gts = []
    for i, t in enumerate(targets):
        if not isinstance(t, Mapping) or "boxes" not in t or "labels" not in t:
            raise InvalidInputError(
                f"ground truth of image {i}: expected a mapping with 'boxes' and 'labels'"
            )
        gts.append((np.asarray(t["boxes"], np.float64).reshape(-1, 4), np.asarray(t["labels"]).reshape(-1)))
    preds = []
    for p in predictions:
        order = np.argsort(-p.scores, kind="stable")[:max_detections]
        preds.append(Detections(p.boxes[order], p.scores[order], p.labels[order]))
    classes = sorted({int(c) for _, lab in gts for c in lab})
    if not classes:
        return None
    recall_points = np.linspace(0.0, 1.0, 101)
    aps = []
    for threshold in iou_thresholds:
        for c in classes:
            scores, hits, positives = [], [], 0
            for p, (gboxes, glabels) in zip(preds, gts, strict=True):
                g = gboxes[glabels == c]
                positives += len(g)
                mine = p.labels == c
                if not mine.any():
                    continue
                iou = box_iou(p.boxes[mine], g)
                free = np.ones(len(g), bool)
                for k in range(int(mine.sum())):  # already in descending score order within the image
                    row = np.where(free, iou[k], -1.0) if len(g) else np.zeros(0)
                    j = int(row.argmax()) if len(g) else -1
                    hit = len(g) > 0 and row[j] >= threshold
                    if hit:
                        free[j] = False
                    hits.append(hit)
                scores.extend(p.scores[mine].tolist())
            if not scores:
                aps.append(0.0)  # the class has ground truth and no prediction
                continue
            order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
            tp = np.cumsum(np.asarray(hits, bool)[order])
            fp = np.cumsum(~np.asarray(hits, bool)[order])
            recall = tp / positives
            precision = tp / np.maximum(tp + fp, 1)
            precision = np.maximum.accumulate(precision[::-1])[::-1]
            idx = np.searchsorted(recall, recall_points, side="left")
            sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
            aps.append(float(sampled.mean()))
    return round(100.0 * float(np.mean(aps)), 4)


# ---------------------------------------------------------------------------------------------- judge
def _images(outputs: Sequence[Outputs], count: int | None = None) -> list[Detections]:
    """Per-image detections of several batches; with ``count`` images over as many batches, one each."""
    per_batch = 1 if count is not None and count == len(outputs) else None
    out: list[Detections] = []
    for o in outputs:
        out += split_detections(o, images=per_batch)
    return out


def compare_threshold(reference: Sequence[Detections]) -> float:
    """The score from which reference detections are compared: :data:`SCORE_THRESHOLD`, or half the best
    reference score when that is lower (an unconfident model, such as one with random weights)."""
    best = max((float(d.scores.max()) for d in reference if len(d)), default=0.0)
    return min(SCORE_THRESHOLD, 0.5 * best) if best > 0 else SCORE_THRESHOLD


class DetectionJudge:
    """Detections matched by IoU against a reference, and mAP against ground truth."""

    task = Task.DETECTION

    def compare(
        self,
        reference: Sequence[Outputs],
        candidate: Sequence[Outputs],
        *,
        labels: Sequence[Mapping[str, Any]] | None = None,
    ) -> Agreement:
        refs = [reference] if isinstance(reference, Mapping) else list(reference)
        cands = [candidate] if isinstance(candidate, Mapping) else list(candidate)
        if len(refs) != len(cands):
            raise InvalidInputError(
                f"expected as many candidate batches as reference batches ({len(refs)}), got {len(cands)}"
            )
        if not refs:
            raise InvalidInputError("nothing to compare: no reference outputs given")
        ref_images, cand_images = [], []
        for r, c in zip(refs, cands, strict=True):
            rb, cb = split_detections(r), split_detections(c)
            n = max(len(rb), len(cb))
            rb = split_detections(r, images=n)
            cb = split_detections(c, images=n)
            ref_images += rb
            cand_images += cb
        threshold = compare_threshold(ref_images)
        low, high = threshold * (1 - SCORE_MARGIN), threshold * (1 + SCORE_MARGIN)
        matched = extra = reference_count = candidate_count = agnostic = same_label = 0
        ious: list[float] = []
        score_diff = 0.0
        nonfinite = 0
        for r, c in zip(ref_images, cand_images, strict=True):
            nonfinite += int(np.count_nonzero(~np.isfinite(c.boxes))) + int(
                np.count_nonzero(~np.isfinite(c.scores))
            )
            # Ties an untrained model makes (hundreds of equal scores) are left out on both sides.
            if _untrained(r):
                continue
            rr, cc = r.above(threshold), c.above(low)
            reference_count += len(rr)
            candidate_count += len(c.above(threshold))
            pairs = _greedy(rr, cc, per_label=True, min_iou=MATCH_IOU)
            matched += len(pairs)
            used = np.zeros(len(cc), bool)
            for i, j in pairs:
                used[j] = True
                ious.append(float(box_iou(rr.boxes[i], cc.boxes[j])[0, 0]))
                score_diff = max(score_diff, abs(float(rr.scores[i]) - float(cc.scores[j])))
            extra += int(np.count_nonzero(~used & (cc.scores >= high)))
            loose = _greedy(rr, cc, per_label=False, min_iou=MATCH_IOU)
            agnostic += len(loose)
            same_label += sum(int(rr.labels[i] == cc.labels[j]) for i, j in loose)
        compared = reference_count + extra
        figures: dict[str, Any] = {
            "task": self.task.value,
            "samples": len(ref_images),
            "nonfinite": nonfinite,
            "detections_reference": reference_count,
            "detections_candidate": candidate_count,
            # Nothing compared is not agreement: None fails the build check's min_matched (see validate.py).
            "detections_matched": round(matched / compared, 6) if compared else None,
            "box_iou_min": round(min(ious), 6) if ious else None,
            "box_iou_mean": round(float(np.mean(ious)), 6) if ious else None,
            "score_diff_max": round(score_diff, 6) if ious else None,
            "label_agreement": round(same_label / agnostic, 6) if agnostic else None,
            "score_threshold": round(threshold, 6),
        }
        if labels is not None:
            targets = list(labels)
            ref_map = average_precision(ref_images, targets)
            cand_map = average_precision(cand_images, targets)
            if ref_map is not None and cand_map is not None:
                figures.update(
                    accuracy_figures(ref_map, cand_map),
                    map50=cand_map,
                    map50_95=average_precision(cand_images, targets, iou_thresholds=COCO_IOUS),
                )
        return Agreement(**figures)

    def score(self, outputs: Sequence[Outputs], labels: Sequence[Mapping[str, Any]]) -> float | None:
        """mAP@0.5 in percent of ``outputs`` (one batch per image, or batches with ``batch_index``)."""
        if not outputs:
            raise InvalidInputError("nothing to score: no outputs given")
        targets = list(labels)
        return average_precision(_images(list(outputs), len(targets)), targets)

    def predictions(self, outputs: Outputs) -> np.ndarray | None:
        return None

    def summarise(self, outputs: Outputs, *, labels: Sequence[str] | None = None, top: int = 3) -> list[str]:
        lines = []
        for image in split_detections(outputs):
            best = np.argsort(-image.scores, kind="stable")[: max(1, top)]
            parts = [
                f"{labels[int(image.labels[k])] if labels and 0 <= image.labels[k] < len(labels) else int(image.labels[k])} "
                f"({image.scores[k]:.3g}) at [{', '.join(f'{v:.0f}' for v in image.boxes[k])}]"
                for k in best
            ]
            lines.append(f"{len(image)} detections" + (": " + ", ".join(parts) if parts else ""))
        return lines


# ---------------------------------------------------------------------------------------------- decoding
def input_geometry(height: int, width: int, pre: Any) -> tuple[float, float, float, float]:
    """How the recorded preprocessing maps an ``height × width`` image to the model input.

    Args:
        height: Original image height.
        width: Original image width.
        pre: The artifact's :class:`~infership.runtime.manifest.Preprocessing` (resize, crop).

    Returns:
        ``(scale_x, scale_y, left, top)``: a model-input point ``(x, y)`` is ``((x + left) / scale_x,
        (y + top) / scale_y)`` in the original image (the same arithmetic as the preprocessing itself).
    """
    rh, rw = height, width
    if pre is not None and pre.resize is not None:
        if isinstance(pre.resize, int):
            r = pre.resize
            rw, rh = (
                (r, max(1, int(r * height / width)))
                if width <= height
                else (max(1, int(r * width / height)), r)
            )
        else:
            rh, rw = int(pre.resize[0]), int(pre.resize[1])
    left = top = 0.0
    if pre is not None and pre.crop is not None:
        ch, cw = pre.crop
        left, top = float(round((rw - cw) / 2)), float(round((rh - ch) / 2))
    return rw / width, rh / height, left, top


def to_original(boxes: np.ndarray, height: int, width: int, pre: Any) -> np.ndarray:
    """Boxes in model-input pixels → the original ``height × width`` image's pixels, clipped to it."""
    sx, sy, left, top = input_geometry(height, width, pre)
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = np.clip((out[:, [0, 2]] + left) / sx, 0, width)
    out[:, [1, 3]] = np.clip((out[:, [1, 3]] + top) / sy, 0, height)
    return out


def detect(predictor: Any, images: Any, *, score_threshold: float = SCORE_THRESHOLD) -> list[Detections]:
    """Run a detector on images, one at a time, and return each image's detections in its own pixels.

    Args:
        predictor: A :class:`~infership.runtime.predictor.Predictor` of a detector artifact.
        images: One image or a list (paths, PIL images, HWC uint8 arrays), fed through the artifact's
            recorded preprocessing; or an already preprocessed float batch ``[n, C, H, W]`` (boxes are
            then in input pixels).
        score_threshold: Detections scoring under this are left out.

    Returns:
        One :class:`Detections` per image, boxes ``x1, y1, x2, y2`` in that image's pixels.

    Raises:
        InvalidInputError: The artifact is not a detector, or the images cannot be read.
    """
    manifest = predictor.manifest
    if manifest.task is not Task.DETECTION:
        raise InvalidInputError(
            f"detect() needs a detection artifact; this one's task is {manifest.task.value!r}"
        )
    pre = manifest.preprocessing
    if isinstance(images, np.ndarray) and images.dtype != np.uint8 and images.ndim == 4:
        return [
            split_detections(predictor.predict(images[i : i + 1]))[0].above(score_threshold)
            for i in range(len(images))
        ]
    items = images if isinstance(images, (list, tuple)) else [images]
    if pre is None:
        raise InvalidInputError("detect() on raw images needs the artifact's preprocessing (resize, scale)")
    out = []
    for item in items:
        # opened once (an unreadable item is an InvalidInputError before the model runs)
        img = open_image(item, pre)
        width, height = img.size  # PIL: (width, height)
        found = split_detections(predictor.predict([img]), images=1)[0].above(score_threshold)
        out.append(Detections(to_original(found.boxes, height, width, pre), found.scores, found.labels))
    return out
