"""Tasks: what a model's outputs mean, and so how they are compared, scored and summarised.

The manifest records a :class:`Task`; every place that judges outputs — build checks, int8 validation and
repair, the pipeline's accuracy step, the CI gate — asks :func:`judge_for` instead of guessing from shapes.
Adding a task is one :class:`Judge` here and one :class:`Task` member.

- ``tensor``: raw tensors, judged element-wise only (max error, cosine, SQNR, non-finite values).
- ``classification``: the first output holds class scores ``[batch, classes]`` (logits or probabilities):
  element-wise figures plus top-1 agreement, confident top-1 agreement, top-5 containment, and accuracy
  against integer class labels.
- ``embedding``: the first output holds one vector per sample ``[batch, dim]`` (sentence or image
  embeddings): element-wise figures, the cosine of each sample's vectors, and retrieval agreement over the
  whole compared set — ``neighbour_agreement`` (also reported as ``top1_agreement``, which budgets read) is
  the share of samples whose nearest other sample (by cosine) is the same one under the candidate as under
  the reference, ``top5_containment`` the share whose reference nearest neighbour is among the candidate's
  five nearest.

- ``segmentation``: per-pixel class scores ``[batch, classes, H, W]`` (a torchvision segmenter's ``out``;
  ``aux`` is ignored): element-wise figures plus pixel agreement and mIoU of the class maps against the
  reference, and mIoU in percent against ground-truth masks (:mod:`infership.runtime.segmentation`).

- ``detection``: flat, data-dependent detections ``boxes [N, 4]``, ``scores [N]``, ``labels [N]``,
  ``batch_index [N]`` (an exported torchvision detector): detections matched by IoU against the reference,
  and mAP against ground-truth boxes (:mod:`infership.runtime.detection`).

Hugging Face's task names are accepted as aliases (:data:`TASK_ALIASES`: ``feature-extraction`` is
``embedding``, ``text-classification`` is ``classification``...).
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from .errors import InvalidInputError
from .figures import CONFIDENT, Agreement, accuracy_figures, sqnr_db, worst_of
from .spec import TensorSpec

Outputs = Mapping[str, np.ndarray]


class Task(str, enum.Enum):
    """What a model does; decides how its outputs are judged."""

    TENSOR = "tensor"
    CLASSIFICATION = "classification"
    EMBEDDING = "embedding"
    SEGMENTATION = "segmentation"
    DETECTION = "detection"

    @classmethod
    def parse(cls, value: str | Task) -> Task:
        """``"classification"`` (any case), or an alias such as ``"feature-extraction"`` → the task.

        Raises:
            InvalidInputError: An unknown task name (the message lists the known ones and the aliases).
        """
        if isinstance(value, Task):
            return value
        text = str(value).strip().lower().replace("_", "-")
        try:
            return cls(TASK_ALIASES.get(text, text))
        except ValueError as exc:
            known = ", ".join(t.value for t in cls)
            raise InvalidInputError(
                f"unknown task {value!r}; expected one of: {known} (or {', '.join(TASK_ALIASES)})"
            ) from exc


#: Other names of the tasks (Hugging Face's pipeline tasks), → the task's value.
TASK_ALIASES: Mapping[str, str] = {
    "feature-extraction": "embedding",
    "sentence-similarity": "embedding",
    "sentence-embedding": "embedding",
    "embeddings": "embedding",
    "text-classification": "classification",
    "sequence-classification": "classification",
    "sentiment-analysis": "classification",
    "image-classification": "classification",
    "image-segmentation": "segmentation",
    "semantic-segmentation": "segmentation",
    "object-detection": "detection",
}


def infer_task(
    outputs: Sequence[TensorSpec], *, labels: Sequence[str] | None = None, images: bool = False
) -> Task:
    """The task where it is obvious, else ``tensor`` (set it explicitly otherwise: ``--task``).

    Classification when the first output is ``[batch, classes]`` (a fixed number ≥ 2) and either class names
    are given (as many as classes) or the model takes images (``images``: it has image preprocessing) and has
    that one output. Segmentation when the first output is ``[batch, classes, H, W]`` and class names are
    given, one per channel (without them a ``[batch, C, H, W]`` map may be an image or features: set the task).
    A ``[batch, N]`` output alone is not enough: an embedding has that shape too, and judging
    it by its argmax would be meaningless.
    """
    if not outputs:
        return Task.TENSOR
    first = outputs[0]
    if labels is not None and first.rank == 4 and first.shape[1] == len(labels) and len(labels) >= 2:
        return Task.SEGMENTATION  # class names for the channels of a [batch, classes, H, W] map
    classes = first.shape[1] if first.rank == 2 and isinstance(first.shape[1], int) else None
    if classes is None or classes < 2:
        return Task.TENSOR
    if labels is not None and classes == len(labels):
        return Task.CLASSIFICATION
    if images and len(outputs) == 1:
        return Task.CLASSIFICATION
    return Task.TENSOR


class Judge(Protocol):
    """How one task compares, scores and summarises outputs."""

    task: Task

    def compare(
        self,
        reference: Sequence[Outputs],
        candidate: Sequence[Outputs],
        *,
        labels: np.ndarray | None = None,
    ) -> Agreement:
        """Figures of ``candidate`` against ``reference``, batch by batch (and against ``labels``)."""
        ...

    def score(self, outputs: Sequence[Outputs], labels: np.ndarray) -> float | None:
        """Task accuracy in percent against ``labels``; ``None`` when the task has no such score."""
        ...

    def predictions(self, outputs: Outputs) -> np.ndarray | None:
        """Per-sample predictions (class indices...) of one batch; ``None`` when the task has none."""
        ...

    def summarise(self, outputs: Outputs, *, labels: Sequence[str] | None = None, top: int = 3) -> list[str]:
        """One line per sample of one batch, in the user's terms (top classes with their scores...)."""
        ...


# ---------------------------------------------------------------------------------------------- tensor
class TensorJudge:
    """Element-wise figures on every output; the aggregate is the worst output's figure."""

    task = Task.TENSOR

    def compare(
        self,
        reference: Sequence[Outputs],
        candidate: Sequence[Outputs],
        *,
        labels: np.ndarray | None = None,
    ) -> Agreement:
        if labels is not None:
            raise InvalidInputError(
                "labels were given, but task 'tensor' has no score against labels "
                "(set the artifact's task, e.g. classification)"
            )
        return _elementwise(reference, candidate, self.task)

    def score(self, outputs: Sequence[Outputs], labels: np.ndarray) -> float | None:
        return None

    def predictions(self, outputs: Outputs) -> np.ndarray | None:
        return None

    def summarise(self, outputs: Outputs, *, labels: Sequence[str] | None = None, top: int = 3) -> list[str]:
        arrays = {k: np.asarray(v) for k, v in outputs.items()}
        rows = min((len(a) for a in arrays.values() if a.ndim), default=0)
        return [
            " · ".join(
                f"{k}: {list(a[i].shape)} {a.dtype} mean {float(np.mean(a[i])):.4g}"
                for k, a in arrays.items()
            )
            for i in range(rows)
        ]


# ---------------------------------------------------------------------------------------------- classification
class ClassificationJudge:
    """Class scores in the first output, ``[batch, classes]``."""

    task = Task.CLASSIFICATION

    def compare(
        self,
        reference: Sequence[Outputs],
        candidate: Sequence[Outputs],
        *,
        labels: np.ndarray | None = None,
    ) -> Agreement:
        base = _elementwise(reference, candidate, self.task)
        name = next(iter(reference[0]))
        ref = _scores(np.concatenate([np.asarray(r[name]) for r in reference]), name)
        cand = _scores(np.concatenate([np.asarray(c[name]) for c in candidate]), name)
        top_ref, top_cand = ref.argmax(1), cand.argmax(1)
        agree = top_ref == top_cand
        confident = _probabilities(ref.astype(np.float64)).max(1) > CONFIDENT
        k = min(5, ref.shape[1])
        top5 = np.argsort(-cand, axis=1, kind="stable")[:, :k]
        figures: dict[str, Any] = {
            "top1_agreement": round(float(agree.mean()), 6),
            "confident_top1_agreement": round(float(agree[confident].mean()), 6) if confident.any() else None,
            "confident_samples": int(confident.sum()),
            "top5_containment": round(float(np.mean(np.any(top5 == top_ref[:, None], axis=1))), 6),
            "expected_disagreement": expected_disagreement(ref, cand),
        }
        if labels is not None:
            lab = _labels(labels, len(ref), ref.shape[1])
            acc_ref = float((top_ref == lab).mean() * 100.0)
            acc = float((top_cand == lab).mean() * 100.0)
            figures.update(accuracy_figures(acc_ref, acc))
        return replace(base, **figures)

    def score(self, outputs: Sequence[Outputs], labels: np.ndarray) -> float | None:
        if not outputs:
            raise InvalidInputError("nothing to score: no outputs given")
        pred = np.concatenate([self.predictions(o) for o in outputs])
        first = outputs[0][next(iter(outputs[0]))]
        return round(float((pred == _labels(labels, len(pred), np.shape(first)[1])).mean() * 100.0), 4)

    def predictions(self, outputs: Outputs) -> np.ndarray:
        name = next(iter(outputs))
        return _scores(np.asarray(outputs[name]), name).argmax(axis=1)

    def summarise(self, outputs: Outputs, *, labels: Sequence[str] | None = None, top: int = 3) -> list[str]:
        name = next(iter(outputs))
        scores = _scores(np.asarray(outputs[name]), name)
        lines = []
        for row in scores:
            best = np.argsort(-row, kind="stable")[: max(1, top)]
            lines.append(", ".join(f"{labels[j] if labels else j} ({row[j]:.3g})" for j in best))
        return lines


def expected_disagreement(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Top-1 disagreement expected on other samples of the same kind, from every pair of samples.

    Counting flips over a few hundred samples says little: whether a sample flips depends on how close its
    top two classes were, and the few near-ties a set happens to hold decide the count. Here each sample
    ``i`` gives its reference margin ``m_i`` (top class over runner-up) and each sample ``j`` the change
    ``d_j`` of that margin under the candidate; the estimate is the share of all ``(i, j)`` pairs with
    ``m_i + d_j < 0`` — the candidate's margin errors applied to the set's margins, assuming the error does
    not depend on the margin. It looks at the runner-up only (a flip to a third class counts in the
    observed disagreement). ``None`` for fewer than two classes or non-finite scores.
    """
    n, classes = reference.shape
    if n == 0 or classes < 2 or not (np.isfinite(reference).all() and np.isfinite(candidate).all()):
        return None
    rows = np.arange(n)
    ref = reference.astype(np.float64)
    top = ref.argmax(1)
    masked = ref.copy()
    masked[rows, top] = -np.inf
    runner = masked.argmax(1)
    margin = ref[rows, top] - ref[rows, runner]
    change = (candidate[rows, top].astype(np.float64) - candidate[rows, runner]) - margin
    below = np.searchsorted(np.sort(change), -margin, side="left")  # per i: how many d_j < -m_i
    return round(float(below.sum()) / (n * n), 6)


# ---------------------------------------------------------------------------------------------- embedding
class EmbeddingJudge:
    """One vector per sample in the first output, ``[batch, dim]``: judged by cosine and by retrieval.

    Retrieval agreement is what a search index built on the vectors would notice: for every sample, its
    nearest other sample of the compared set by cosine similarity, under the reference and under the
    candidate. ``neighbour_agreement`` (and ``top1_agreement``) is the share of samples whose nearest
    neighbour is the same, and
    ``top5_containment`` the share whose reference nearest neighbour is among the candidate's five nearest.
    Compare at least a few hundred samples: with few, neighbours are far apart and agreement says little.
    """

    task = Task.EMBEDDING

    def compare(
        self,
        reference: Sequence[Outputs],
        candidate: Sequence[Outputs],
        *,
        labels: np.ndarray | None = None,
    ) -> Agreement:
        if labels is not None:
            raise InvalidInputError(
                "labels were given, but task 'embedding' has no score against labels (its figures are "
                "cosine and nearest-neighbour agreement with the reference)"
            )
        base = _elementwise(reference, candidate, self.task)
        refs = [reference] if isinstance(reference, Mapping) else list(reference)
        cands = [candidate] if isinstance(candidate, Mapping) else list(candidate)
        name = next(iter(refs[0]))
        ref = _vectors(np.concatenate([np.asarray(r[name]) for r in refs]), name)
        cand = _vectors(np.concatenate([np.asarray(c[name]) for c in cands]), name)
        if len(ref) < 2 or not (np.isfinite(ref).all() and np.isfinite(cand).all()):
            return base
        near_ref, near_cand = _neighbours(ref, 1)[:, 0], _neighbours(cand, min(5, len(ref) - 1))
        agree = round(float(np.mean(near_ref == near_cand[:, 0])), 6)
        return replace(
            base,
            neighbour_agreement=agree,
            top1_agreement=agree,
            top5_containment=round(float(np.mean(np.any(near_cand == near_ref[:, None], axis=1))), 6),
        )

    def score(self, outputs: Sequence[Outputs], labels: np.ndarray) -> float | None:
        return None

    def predictions(self, outputs: Outputs) -> np.ndarray | None:
        return None

    def summarise(self, outputs: Outputs, *, labels: Sequence[str] | None = None, top: int = 3) -> list[str]:
        name = next(iter(outputs))
        vectors = _vectors(np.asarray(outputs[name]), name)
        return [
            f"{name}: [{vectors.shape[1]}] norm {float(np.linalg.norm(row)):.4g} · "
            + " ".join(f"{v:.3g}" for v in row[: max(1, top)])
            + " …"
            for row in vectors
        ]


def _vectors(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim != 2 or a.shape[1] < 1:
        raise InvalidInputError(
            f"task 'embedding' expects one vector per sample [batch, dim] in output {name!r}, "
            f"got shape {list(a.shape)}"
        )
    return a.astype(np.float64, copy=False)


def _neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` nearest other rows by cosine similarity, nearest first."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    out = np.empty((len(unit), k), dtype=np.int64)
    for start in range(0, len(unit), 1024):  # blocks of rows: memory stays bounded on large sets
        sims = unit[start : start + 1024] @ unit.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf
        out[start : start + len(sims)] = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return out


_JUDGES: dict[Task, Judge] = {
    Task.TENSOR: TensorJudge(),
    Task.CLASSIFICATION: ClassificationJudge(),
    Task.EMBEDDING: EmbeddingJudge(),
}

#: Judges living in their own module, ``"module:Class"``: imported on first use (they import this module).
_JUDGE_MODULES: dict[Task, str] = {
    Task.SEGMENTATION: "infership.runtime.segmentation:SegmentationJudge",
    Task.DETECTION: "infership.runtime.detection:DetectionJudge",
}


def judge_for(task: Task | str) -> Judge:
    """The :class:`Judge` of ``task``."""
    wanted = Task.parse(task)
    if wanted not in _JUDGES:
        module, _, name = _JUDGE_MODULES[wanted].partition(":")
        _JUDGES[wanted] = getattr(importlib.import_module(module), name)()
    return _JUDGES[wanted]


def class_map(scores: np.ndarray) -> np.ndarray:
    """The class index at every position of class scores laid out ``[batch, classes, ...]`` (logits of a
    segmenter: ``[batch, classes, H, W]`` → ``[batch, H, W]``); ties go to the lower class."""
    return np.asarray(scores).argmax(axis=1)


def _scores(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim != 2 or a.shape[1] < 2:
        raise InvalidInputError(
            f"task 'classification' expects class scores [batch, classes] in output {name!r}, "
            f"got shape {list(a.shape)}"
        )
    return a


def _labels(labels: np.ndarray, n: int, classes: int) -> np.ndarray:
    lab = np.asarray(labels).reshape(-1)
    if lab.shape != (n,):
        raise InvalidInputError(f"expected {n} labels (one per sample), got shape {list(np.shape(labels))}")
    if lab.dtype.kind not in "iu":
        raise InvalidInputError(f"expected integer class labels, got dtype {lab.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() >= classes):
        raise InvalidInputError(
            f"expected class labels in [0, {classes}), got values from {lab.min()} to {lab.max()}"
        )
    return lab


def _probabilities(x: np.ndarray) -> np.ndarray:
    """Rows that already are probabilities (non-negative, summing to 1) as they are; logits through softmax."""
    if x.size and (x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
        return x
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------- element-wise
def _elementwise(reference: Sequence[Outputs], candidate: Sequence[Outputs], task: Task) -> Agreement:
    refs = [reference] if isinstance(reference, Mapping) else list(reference)
    cands = [candidate] if isinstance(candidate, Mapping) else list(candidate)
    if len(refs) != len(cands):
        raise InvalidInputError(
            f"expected as many candidate batches as reference batches ({len(refs)}), got {len(cands)}"
        )
    if not refs:
        raise InvalidInputError("nothing to compare: no reference outputs given")
    per_output: dict[str, Agreement] = {}
    for name in refs[0]:
        acc = _Accumulator()
        for i, (r, c) in enumerate(zip(refs, cands, strict=True)):
            if name not in c:
                raise InvalidInputError(f"batch {i}: candidate has no output {name!r}; it has {sorted(c)}")
            ra, ca = np.asarray(r[name]), np.asarray(c[name])
            if ra.shape != ca.shape:
                raise InvalidInputError(
                    f"batch {i}, output {name!r}: reference shape {list(ra.shape)}, candidate {list(ca.shape)}"
                )
            if ra.ndim and ra.shape[0] == 0:
                continue  # an empty batch adds nothing
            acc.add(ra, ca)
        if not acc.rows:
            raise InvalidInputError(f"nothing to compare for output {name!r}: every batch is empty")
        if acc.elements and not acc.compared:
            raise InvalidInputError(
                f"nothing to compare for output {name!r}: the reference holds no finite value (NaN/Inf only)"
            )
        per_output[name] = acc.figures(task)
    return worst_of(per_output, task.value)


class _Accumulator:
    """Running element-wise figures for one output over several batches."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.scale = 0.0
        self.cosines: list[np.ndarray] = []
        self.signal = 0.0
        self.noise = 0.0
        self.rows = 0
        self.nonfinite = 0
        self.elements = 0
        self.compared = 0
        self.bad = False

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = ref.astype(np.float64, copy=False)
        c = cand.astype(np.float64, copy=False)
        finite_ref, finite_cand = np.isfinite(r), np.isfinite(c)
        self.nonfinite += int(np.count_nonzero(finite_ref & ~finite_cand))
        mask = finite_ref & finite_cand
        self.elements += int(r.size)
        self.compared += int(np.count_nonzero(finite_ref))
        # Non-finite values agree only where both sides hold the same one (masked logits of -inf...).
        same_nonfinite = ~finite_ref & ((np.isnan(r) & np.isnan(c)) | (r == c))
        if not (mask | same_nonfinite).all():
            self.bad = True
        r, c = np.where(mask, r, 0.0), np.where(mask, c, 0.0)
        diff = np.abs(r - c)
        if diff.size:
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.scale = max(self.scale, float(np.abs(r).max()))
        self.signal += float(np.sum(r**2))
        self.noise += float(np.sum(diff**2))
        rows_r = r.reshape(r.shape[0], -1) if r.ndim >= 2 else r.reshape(1, -1)
        rows_c = c.reshape(rows_r.shape)
        self.rows += rows_r.shape[0]
        self.cosines.append(_row_cosines(rows_r, rows_c))

    def figures(self, task: Task) -> Agreement:
        cos = np.concatenate(self.cosines) if self.cosines else np.ones(1)
        return Agreement(
            task=task.value,
            samples=self.rows,
            max_abs_err=None if self.bad else self.max_abs,
            max_rel_err=None if self.bad else self.max_abs / max(self.scale, 1e-30),
            scale=self.scale,
            cosine_min=None if self.bad else round(float(cos.min()), 8),
            cosine_mean=None if self.bad else round(float(cos.mean()), 8),
            sqnr_db=round(sqnr_db(self.signal, self.noise), 3),
            nonfinite=self.nonfinite,
        )


def _row_cosines(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    num = np.sum(r * c, axis=1)
    nr, nc = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
    both_zero = (nr == 0) & (nc == 0)
    den = np.where(nr * nc == 0, 1.0, nr * nc)
    return np.where(both_zero, 1.0, np.where(nr * nc == 0, 0.0, num / den))
