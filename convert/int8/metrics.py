"""How far an int8 model's outputs are from the fp32 reference, and what that costs in task accuracy.

Top-1 agreement alone is a noisy metric on ambiguous inputs (where the fp32 model itself is unsure, a tiny
perturbation flips the argmax), so it is reported next to agreement on the inputs where the fp32 model is
confident, top-5 containment, and signal-level figures (SQNR, cosine) that do not depend on the argmax.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: fp32 softmax confidence above which an input counts as "confident" for ``confident_top1_agreement``.
CONFIDENT = 0.5
#: SQNR reported for identical outputs (JSON has no infinity).
SQNR_IDENTICAL = 200.0


@dataclass(frozen=True)
class Int8Metrics:
    """Agreement of an int8 model with its fp32 reference on held-out data.

    Attributes:
        samples: Number of held-out inputs compared.
        sqnr_db: Signal-to-quantization-noise ratio of the first output, in dB (higher is better;
            ≥ 20 dB is usually harmless for classification, < 10 dB rarely is; 200 for identical outputs).
        cosine_mean: Mean cosine similarity between fp32 and int8 output rows.
        cosine_min: Worst row's cosine similarity.
        max_abs_err: Largest absolute difference in the first output.
        top1_agreement: Share (0–1) of inputs where both models pick the same class (classifiers only);
            a fraction like ``compare_outputs``' figure of the same name.
        confident_top1_agreement: The same, over inputs where fp32's softmax confidence exceeds 0.5.
        confident_samples: How many inputs that is.
        top5_containment: Share (0–1) of inputs whose fp32 top-1 class is in the int8 top-5.
        accuracy_fp32: Task accuracy (percent) of the fp32 model, when labels were given.
        accuracy_int8: Task accuracy (percent) of the int8 model, when labels were given.
        accuracy_drop: ``accuracy_fp32 - accuracy_int8`` in points, when labels were given.
    """

    samples: int
    sqnr_db: float
    cosine_mean: float
    cosine_min: float
    max_abs_err: float
    top1_agreement: float | None = None
    confident_top1_agreement: float | None = None
    confident_samples: int | None = None
    top5_containment: float | None = None
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    accuracy_drop: float | None = None

    @property
    def drop(self) -> float | None:
        """The loss the accuracy budget is checked against, in points: the task accuracy drop when labels
        were given, else the top-1 disagreement with fp32 in points (``100 · (1 - top1_agreement)``)."""
        if self.accuracy_drop is not None:
            return self.accuracy_drop
        if self.top1_agreement is not None:
            return round(100.0 * (1.0 - self.top1_agreement), 4)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """``10·log10(‖ref‖² / ‖ref − cand‖²)``; ``inf`` when identical, ``-inf`` when the reference is zero."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(candidate, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1) if a.ndim > 1 else a.reshape(-1, 1)


def _cosines(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    r, c = _rows(ref), _rows(cand)
    num = np.sum(r * c, axis=1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    both_zero = den == 0
    return np.where(
        both_zero, np.where(np.all(r == c, axis=1), 1.0, 0.0), num / np.where(both_zero, 1.0, den)
    )


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def compare_int8(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None
) -> Int8Metrics:
    """Compare the first output of an fp32 model (``reference``) and its int8 version (``candidate``).

    Args:
        reference: fp32 outputs, batch first. 2-D ``[n, classes]`` outputs are treated as class scores
            (logits or probabilities) and get the agreement figures.
        candidate: int8 outputs, same shape.
        labels: Class index per input, for task accuracy.

    Returns:
        The figures; classification ones are ``None`` for non-2-D outputs, accuracy ones without labels.

    Raises:
        ValueError: Shapes differ, the arrays are empty, or labels do not match the batch.
    """
    ref, cand = np.asarray(reference), np.asarray(candidate)
    if ref.shape != cand.shape:
        raise ValueError(
            f"reference and candidate outputs differ in shape: {list(ref.shape)} vs {list(cand.shape)}"
        )
    if ref.size == 0:
        raise ValueError("no outputs to compare")
    n = len(ref)
    cos = _cosines(ref, cand)
    base: dict[str, Any] = {
        "samples": n,
        "sqnr_db": round(min(sqnr_db(ref, cand), SQNR_IDENTICAL), 3),
        "cosine_mean": round(float(cos.mean()), 6),
        "cosine_min": round(float(cos.min()), 6),
        "max_abs_err": float(np.max(np.abs(ref.astype(np.float64) - cand.astype(np.float64)))),
    }
    if ref.ndim != 2 or ref.shape[1] < 2:
        if labels is not None:
            raise ValueError(f"labels need [n, classes] outputs; the output has shape {list(ref.shape)}")
        return Int8Metrics(**base)
    top_ref, top_cand = ref.argmax(1), cand.argmax(1)
    agree = top_ref == top_cand
    confident = _softmax(ref.astype(np.float64)).max(1) > CONFIDENT
    k = min(5, ref.shape[1])
    top5 = np.argsort(-cand, axis=1)[:, :k]
    base.update(
        top1_agreement=round(float(agree.mean()), 6),
        confident_top1_agreement=round(float(agree[confident].mean()), 6) if confident.any() else None,
        confident_samples=int(confident.sum()),
        top5_containment=round(float(np.mean(np.any(top5 == top_ref[:, None], axis=1))), 6),
    )
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise ValueError(f"expected {n} labels, got shape {list(lab.shape)}")
        acc_ref = float((top_ref == lab).mean() * 100.0)
        acc_cand = float((top_cand == lab).mean() * 100.0)
        base.update(
            accuracy_fp32=round(acc_ref, 4),
            accuracy_int8=round(acc_cand, 4),
            accuracy_drop=round(acc_ref - acc_cand, 4),
        )
    return Int8Metrics(**base)
