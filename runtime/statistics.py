"""Reference statistics of a model's inputs and outputs, recorded in the manifest for drift monitoring.

Conversion records them from the data it already has (the calibration set of ``quantize``, the check data
of export) under ``manifest.extra["reference_statistics"]``; :class:`~infership.runtime.monitoring.DriftMonitor`
compares live traffic with them. The record is plain JSON::

    {"schema": 1, "samples": 64, "source": "calibration: folder photos/ (64 images)",
     "inputs": {"x": {"dtype": "float32", "shape": [3, 224, 224], "mean": ..., "std": ..., "min": ...,
                      "max": ..., "nan": 0, "inf": 0, "quantiles": {"0.01": ..., "0.5": ..., "0.99": ...},
                      "lengths": null}},
     "outputs": {"logits": {... the same numeric figures ...,
                            "classes": [fraction per class], "confidence": {"mean": ..., "std": ...}}}}

``lengths`` (integer inputs of rank ≥ 2, such as token ids or attention masks) describes the distribution
of per-row lengths: the position of the last non-zero entry along axis 1, plus one (trailing zeros are
padding). ``classes`` and ``confidence`` appear for classification models (the task's judge decides the
predicted class; confidence is the top class's probability).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .tasks import Task, _probabilities, judge_for

__all__ = [
    "REFERENCE_KEY",
    "QUANTILES",
    "input_statistics",
    "output_statistics",
    "reference_statistics",
    "class_confidence",
    "row_lengths",
]

#: Where the record lives in ``Manifest.extra``.
REFERENCE_KEY = "reference_statistics"
SCHEMA = 1
QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99)
# Values kept per batch (and in all) for quantiles: exact sums, sampled order statistics.
_PER_BATCH = 4096
_TOTAL = 200_000


def row_lengths(a: np.ndarray) -> np.ndarray:
    """Per-row length of an integer array ``[batch, length, ...]``: index of the last non-zero entry
    along axis 1, plus one (0 for an all-zero row)."""
    nz = (a != 0).reshape(a.shape[0], a.shape[1], -1).any(axis=2)
    return (nz * np.arange(1, nz.shape[1] + 1)).max(axis=1, initial=0)


class _Accumulator:
    """Exact moments and counts over many batches of one tensor, plus a sample for quantiles."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype: str | None = None
        self.shapes: dict[tuple[int, ...], int] = {}
        self.rows = 0
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.lo = np.inf
        self.hi = -np.inf
        self.nan = 0
        self.inf = 0
        self.sample: list[np.ndarray] = []
        self.kept = 0
        self.lengths: list[np.ndarray] = []
        self.rng = np.random.default_rng(0)

    def add(self, value: Any) -> None:
        a = np.asarray(value)
        if a.ndim == 0:
            a = a.reshape(1)
        self.dtype = self.dtype or a.dtype.name
        self.shapes[tuple(a.shape[1:])] = self.shapes.get(tuple(a.shape[1:]), 0) + a.shape[0]
        self.rows += a.shape[0]
        flat = a.reshape(-1)
        if a.dtype.kind == "f":
            finite_mask = np.isfinite(flat)
            self.nan += int(np.isnan(flat).sum())
            self.inf += int((~finite_mask).sum()) - int(np.isnan(flat).sum())
            finite = flat[finite_mask] if not finite_mask.all() else flat
        else:
            finite = flat
            if a.dtype.kind in "iu" and a.ndim >= 2:
                self.lengths.append(row_lengths(a))
        if finite.size:
            f64 = finite.astype(np.float64, copy=False)
            self.count += f64.size
            self.total += float(f64.sum())
            self.total_sq += float(np.dot(f64, f64))
            self.lo = min(self.lo, float(f64.min()))
            self.hi = max(self.hi, float(f64.max()))
            if self.kept < _TOTAL:
                take = min(_PER_BATCH, f64.size, _TOTAL - self.kept)
                idx = self.rng.choice(f64.size, size=take, replace=False) if take < f64.size else slice(None)
                self.sample.append(f64[idx])
                self.kept += take

    def figures(self) -> dict[str, Any]:
        if not self.rows:
            raise InvalidInputError(f"no data for {self.name!r}: statistics need at least one batch")
        mean = self.total / self.count if self.count else None
        var = max(self.total_sq / self.count - mean * mean, 0.0) if mean is not None else None
        values = np.concatenate(self.sample) if self.sample else np.empty(0)
        shape = max(self.shapes, key=self.shapes.get)  # type: ignore[arg-type]
        out: dict[str, Any] = {
            "dtype": self.dtype,
            "shape": list(shape),
            "rows": self.rows,
            "mean": _r(mean),
            "std": _r(None if var is None else var**0.5),
            "min": _r(self.lo if self.count else None),
            "max": _r(self.hi if self.count else None),
            "nan": self.nan,
            "inf": self.inf,
            "quantiles": {str(q): _r(float(np.quantile(values, q))) for q in QUANTILES}
            if values.size
            else {},
            "lengths": None,
        }
        if self.lengths:
            out["lengths"] = _summary(np.concatenate(self.lengths).astype(np.float64))
        return out


def _r(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.7g}")


def _summary(x: np.ndarray) -> dict[str, Any]:
    return {
        "mean": _r(float(x.mean())),
        "std": _r(float(x.std())),
        "quantiles": {str(q): _r(float(np.quantile(x, q))) for q in QUANTILES},
    }


def input_statistics(batches: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-input statistics over batches of feeds (name → array, batch first).

    Args:
        batches: Feeds, e.g. a calibration set's batches or the check inputs of an export.

    Returns:
        Input name → figures (see the module docstring).

    Raises:
        InvalidInputError: ``batches`` is empty.
    """
    acc: dict[str, _Accumulator] = {}
    for feeds in batches:
        for name, value in feeds.items():
            acc.setdefault(name, _Accumulator(name)).add(value)
    if not acc:
        raise InvalidInputError("input statistics need at least one batch of inputs")
    return {name: a.figures() for name, a in acc.items()}


def output_statistics(outputs: Iterable[Mapping[str, Any]], task: Task | str) -> dict[str, dict[str, Any]]:
    """Per-output statistics over batches of outputs; for a classification model the first output also
    gets the predicted-class distribution and the top-class confidence.

    Args:
        outputs: Output name → array per batch (the reference model's outputs on the same data).
        task: The manifest's task (decides how classes are read).

    Returns:
        Output name → figures.

    Raises:
        InvalidInputError: ``outputs`` is empty.
    """
    task = Task.parse(task)
    judge = judge_for(task)
    acc: dict[str, _Accumulator] = {}
    classes: list[np.ndarray] = []
    confidence: list[np.ndarray] = []
    first: str | None = None
    for out in outputs:
        for name, value in out.items():
            acc.setdefault(name, _Accumulator(name)).add(value)
        if task is Task.CLASSIFICATION:
            first = first or next(iter(out))
            pred = judge.predictions(out)
            classes.append(np.asarray(pred))
            confidence.append(class_confidence(out[first]))
    if not acc:
        raise InvalidInputError("output statistics need at least one batch of outputs")
    figures = {name: a.figures() for name, a in acc.items()}
    if first is not None:
        n = _classes_of(acc, first)
        counts = np.bincount(np.concatenate(classes), minlength=n).astype(np.float64)
        figures[first]["classes"] = [_r(float(c)) for c in counts / counts.sum()]
        figures[first]["confidence"] = _summary(np.concatenate(confidence))
    return figures


def class_confidence(scores: Any) -> np.ndarray:
    """The top class's probability per row of class scores ``[batch, classes]`` (logits go through
    softmax; rows that already are probabilities are taken as they are)."""
    p = _probabilities(np.asarray(scores, dtype=np.float64))
    return p.max(axis=1)


def _classes_of(acc: Mapping[str, _Accumulator], name: str) -> int:
    shape = max(acc[name].shapes, key=acc[name].shapes.get)  # type: ignore[arg-type]
    return int(shape[0])


def reference_statistics(
    inputs: Iterable[Mapping[str, Any]],
    outputs: Iterable[Mapping[str, Any]] | None = None,
    *,
    task: Task | str = Task.TENSOR,
    source: str = "",
) -> dict[str, Any]:
    """The record to store at ``manifest.extra[REFERENCE_KEY]``.

    Args:
        inputs: Batches of feeds (name → array).
        outputs: The reference model's outputs on the same batches, or ``None`` (then only inputs are
            monitored for drift).
        task: The manifest's task.
        source: Where the data came from, in words (the calibration set's description).

    Returns:
        A JSON-ready dict (see the module docstring).
    """
    ins = input_statistics(inputs)
    outs = output_statistics(outputs, task) if outputs is not None else {}
    return {
        "schema": SCHEMA,
        "samples": max(f["rows"] for f in ins.values()),
        "source": source,
        "inputs": ins,
        "outputs": outs,
    }
