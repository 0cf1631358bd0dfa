"""Compare a converted model's outputs with its reference, and decide whether they agree.

:func:`compare_outputs` is the one place that computes the figures stored in ``Variant.validation``; other
converters (int8 quantization...) reuse it so that every variant is judged the same way.

The figures, per output and then aggregated over outputs (worst case):

- ``max_abs_err``: the largest ``|candidate - reference|`` over every element compared.
- ``max_rel_err``: ``max_abs_err`` divided by the largest ``|reference|`` value of that output (its scale).
  Element-wise relative error is meaningless near zero, so the error is measured against the output's scale.
- ``cosine_min``: the smallest cosine similarity between one sample's reference and candidate outputs
  (flattened per batch row).
- ``sqnr_db``: signal-to-quantization-noise ratio, ``10·log10(Σref² / Σ(ref-cand)²)``, capped at 300 dB
  (identical outputs).
- ``top1_agreement``: for outputs shaped ``[batch, classes]``, the fraction of rows whose argmax agrees;
  ``top1_in_top5``: the fraction whose candidate argmax is in the reference's top 5. ``None`` otherwise.
- ``nonfinite``: how many candidate values are NaN/Inf where the reference is finite.
- ``samples``: rows (batch items) compared; ``batches``: feeds compared.

A comparison passes when, for every output, ``max_abs_err <= atol + rtol * scale``, ``cosine_min >=
min_cosine``, ``top1_agreement >= min_top1`` (if set and applicable) and ``nonfinite == 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Feeds = Mapping[str, np.ndarray]
Outputs = Mapping[str, np.ndarray]

_SQNR_CAP_DB = 300.0


@dataclass(frozen=True)
class Tolerance:
    """How close a candidate must be to its reference.

    Args:
        atol: Absolute error allowed on every element.
        rtol: Error allowed relative to the output's scale (its largest ``|reference|`` value).
        min_cosine: Smallest cosine similarity allowed for any one sample.
        min_top1: Smallest top-1 agreement allowed on ``[batch, classes]`` outputs; ``None`` reports it
            without gating on it (random inputs give near-ties that flip under tiny errors).
    """

    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.9999
    min_top1: float | None = None

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            if getattr(self, name) < 0:
                raise ValueError(f"Tolerance.{name} must be >= 0, got {getattr(self, name)}")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise ValueError(f"Tolerance.min_cosine must be in [-1, 1], got {self.min_cosine}")
        if self.min_top1 is not None and not 0.0 <= self.min_top1 <= 1.0:
            raise ValueError(f"Tolerance.min_top1 must be in [0, 1], got {self.min_top1}")

    @classmethod
    def fp32(cls) -> Tolerance:
        """Default for fp32 conversions: kernels differ only in summation order."""
        return cls()

    @classmethod
    def fp16(cls) -> Tolerance:
        """Default for fp16 graphs checked against fp32 (11-bit mantissa). Judged mainly by cosine: the
        largest single error of a deep network reached 2.3 % of the output scale on a ResNet-50 whose
        cosine stayed ≥ 0.9997 (docs/converters.md)."""
        return cls(atol=1e-3, rtol=5e-2, min_cosine=0.999)

    @classmethod
    def bf16(cls) -> Tolerance:
        """For graphs a runtime executes in bfloat16 (8-bit mantissa; OpenVINO's default on CPUs with
        AVX512_BF16 or AMX for non-fp32 variants). Measured on ResNet-18/50 and MobileNetV3 at 224×224:
        largest error 1.4–14 % of the output scale, cosine ≥ 0.99 (docs/converters.md)."""
        return cls(atol=1e-2, rtol=0.2, min_cosine=0.99)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_outputs(
    reference: Outputs | Sequence[Outputs],
    candidate: Outputs | Sequence[Outputs],
    *,
    tolerance: Tolerance | None = None,
) -> dict[str, Any]:
    """Compare candidate outputs with reference outputs.

    Args:
        reference: Output name → array for one batch, or a list of such mappings (one per batch).
        candidate: The same structure from the model under test; every reference output must be present.
        tolerance: What counts as agreeing; defaults to :meth:`Tolerance.fp32`.

    Returns:
        A JSON-ready dict: ``passed``, ``max_abs_err``, ``max_rel_err``, ``cosine_min``, ``sqnr_db``,
        ``top1_agreement``, ``top1_in_top5``, ``nonfinite``, ``samples``, ``batches``, ``tolerance``,
        ``outputs`` (the same figures per output) and ``failures`` (why it did not pass; empty if it did).

    Raises:
        ValueError: The structures differ (missing output, shape mismatch, different batch counts).
    """
    tol = tolerance or Tolerance.fp32()
    refs = [reference] if isinstance(reference, Mapping) else list(reference)
    cands = [candidate] if isinstance(candidate, Mapping) else list(candidate)
    if len(refs) != len(cands):
        raise ValueError(
            f"expected as many candidate batches as reference batches ({len(refs)}), got {len(cands)}"
        )
    if not refs:
        raise ValueError("nothing to compare: no reference outputs given")
    names = list(refs[0])
    per_output: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    samples = 0
    for name in names:
        acc = _Accumulator()
        for i, (r, c) in enumerate(zip(refs, cands, strict=True)):
            if name not in c:
                raise ValueError(f"batch {i}: candidate has no output {name!r}; it has {sorted(c)}")
            ra, ca = np.asarray(r[name]), np.asarray(c[name])
            if ra.shape != ca.shape:
                raise ValueError(
                    f"batch {i}, output {name!r}: reference shape {list(ra.shape)}, candidate {list(ca.shape)}"
                )
            acc.add(ra, ca)
        figures = acc.figures()
        samples = max(samples, figures.pop("rows"))
        per_output[name] = figures
        failures += _judge(name, figures, tol)
    agg = _aggregate(per_output)
    return {
        "passed": not failures,
        **agg,
        "samples": samples,
        "batches": len(refs),
        "tolerance": tol.to_dict(),
        "outputs": per_output,
        "failures": failures,
    }


def validate_against_torch(
    model: Callable[..., Any],
    candidate: Callable[[Feeds], Outputs],
    feeds: Sequence[Feeds],
    *,
    output_names: Sequence[str],
    tolerance: Tolerance | None = None,
) -> dict[str, Any]:
    """Run ``model`` (PyTorch) and ``candidate`` on every feed and compare (see :func:`compare_outputs`).

    Args:
        model: The torch reference; called with the feeds' tensors positionally, in feed order.
        candidate: Feeds → outputs, e.g. an ONNX Runtime session's run or ``Predictor.predict``.
        feeds: Input batches, each a mapping input name → array.
        output_names: Names for the torch model's outputs, in order.
        tolerance: See :class:`Tolerance`.

    Returns:
        The :func:`compare_outputs` figures.
    """
    refs = torch_outputs(model, feeds, output_names)
    return compare_outputs(refs, [candidate(f) for f in feeds], tolerance=tolerance)


def torch_outputs(
    model: Callable[..., Any], feeds: Sequence[Feeds], output_names: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """Run a torch model on each feed (no grad) and name its outputs."""
    import torch

    out = []
    with torch.inference_mode():
        for f in feeds:
            result = model(*[torch.from_numpy(np.ascontiguousarray(v)) for v in f.values()])
            out.append(name_outputs(result, output_names))
    return out


def name_outputs(result: Any, output_names: Sequence[str]) -> dict[str, np.ndarray]:
    """A model's return value (tensor, tuple/list of tensors, or dict) → name → numpy array."""
    if isinstance(result, Mapping):
        values = list(result.values())
    elif isinstance(result, (tuple, list)):
        values = list(result)
    else:
        values = [result]
    if len(values) != len(output_names):
        raise ValueError(
            f"the model returned {len(values)} outputs, expected {len(output_names)} ({list(output_names)})"
        )
    return {n: v.detach().cpu().numpy() for n, v in zip(output_names, values, strict=True)}


def _judge(name: str, f: dict[str, Any], tol: Tolerance) -> list[str]:
    out = []
    if f["nonfinite"]:
        out.append(f"{name}: {f['nonfinite']} NaN/Inf value(s) where the reference is finite")
    allowed = tol.atol + tol.rtol * f["scale"]
    if f["max_abs_err"] is None or f["max_abs_err"] > allowed:
        out.append(
            f"{name}: max_abs_err {_g(f['max_abs_err'])} > allowed {_g(allowed)} "
            f"(atol {_g(tol.atol)} + rtol {_g(tol.rtol)} × scale {_g(f['scale'])})"
        )
    if f["cosine_min"] is None or f["cosine_min"] < tol.min_cosine:
        out.append(f"{name}: cosine_min {_g(f['cosine_min'])} < {tol.min_cosine}")
    if tol.min_top1 is not None and f["top1_agreement"] is not None and f["top1_agreement"] < tol.min_top1:
        out.append(f"{name}: top1_agreement {f['top1_agreement']:.4f} < {tol.min_top1}")
    return out


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _aggregate(per_output: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The worst figure over outputs (None where no output has one)."""

    def worst(key: str, pick: Callable[[list[float]], float]) -> float | None:
        vals = [f[key] for f in per_output.values() if f[key] is not None]
        if not vals:
            return None
        if any(f[key] is None for f in per_output.values()) and key in (
            "max_abs_err",
            "max_rel_err",
            "cosine_min",
        ):
            return None  # a non-finite figure somewhere: there is no honest worst value
        return pick(vals)

    return {
        "max_abs_err": worst("max_abs_err", max),
        "max_rel_err": worst("max_rel_err", max),
        "cosine_min": worst("cosine_min", min),
        "sqnr_db": worst("sqnr_db", min),
        "top1_agreement": worst("top1_agreement", min),
        "top1_in_top5": worst("top1_in_top5", min),
        "nonfinite": int(sum(f["nonfinite"] for f in per_output.values())),
    }


class _Accumulator:
    """Running figures for one output over several batches."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.scale = 0.0
        self.cos_min = 1.0
        self.signal = 0.0
        self.noise = 0.0
        self.rows = 0
        self.nonfinite = 0
        self.top1_hits = 0
        self.top5_hits = 0
        self.cls_rows = 0
        self.bad = False

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = ref.astype(np.float64, copy=False)
        c = cand.astype(np.float64, copy=False)
        finite_ref, finite_cand = np.isfinite(r), np.isfinite(c)
        self.nonfinite += int(np.count_nonzero(finite_ref & ~finite_cand))
        mask = finite_ref & finite_cand
        # Non-finite values agree only when both sides hold the same one (masked logits of -inf...).
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
        for rr, cc in zip(rows_r, rows_c, strict=True):
            self.cos_min = min(self.cos_min, _cosine(rr, cc))
        if r.ndim == 2 and r.shape[1] >= 2:
            ref_top1 = np.argmax(r, axis=1)
            cand_top1 = np.argmax(c, axis=1)
            self.top1_hits += int(np.count_nonzero(ref_top1 == cand_top1))
            k = min(5, r.shape[1])
            ref_top5 = np.argsort(-r, axis=1)[:, :k]
            self.top5_hits += int(np.count_nonzero((ref_top5 == cand_top1[:, None]).any(axis=1)))
            self.cls_rows += r.shape[0]

    def figures(self) -> dict[str, Any]:
        if self.noise == 0.0:
            sqnr = _SQNR_CAP_DB
        elif self.signal == 0.0:
            sqnr = -_SQNR_CAP_DB
        else:
            sqnr = min(_SQNR_CAP_DB, 10.0 * math.log10(self.signal / self.noise))
        return {
            "max_abs_err": None if self.bad else self.max_abs,
            "max_rel_err": None if self.bad else self.max_abs / max(self.scale, 1e-30),
            "scale": self.scale,
            "cosine_min": None if self.bad else self.cos_min,
            "sqnr_db": round(sqnr, 2),
            "top1_agreement": self.top1_hits / self.cls_rows if self.cls_rows else None,
            "top1_in_top5": self.top5_hits / self.cls_rows if self.cls_rows else None,
            "nonfinite": self.nonfinite,
            "rows": self.rows,
        }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))
