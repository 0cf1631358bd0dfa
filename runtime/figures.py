"""One typed record of figures: what every check, validation and gate in infership reports.

Each figure declares its **unit** and its **direction** (is a higher value better, or a lower one?), once,
here. Build checks, int8 validation and repair, the pipeline and the CI gate all read the same record
(:class:`Agreement`) and the same declarations (:func:`figure_info`), so a figure such as
``accuracy_drop`` is never gated the wrong way round because its name happens to contain "accuracy".

The figures of :class:`Agreement` (a candidate model's outputs against a reference's, on the same inputs):

- ``max_abs_err``: the largest ``|candidate - reference|`` over every element compared.
- ``max_rel_err``: ``max_abs_err`` over the output's scale (its largest ``|reference|`` value): element-wise
  relative error is meaningless near zero.
- ``cosine_min`` / ``cosine_mean``: cosine similarity of one sample's outputs (flattened per batch row).
- ``sqnr_db``: ``10·log10(Σref² / Σ(ref-cand)²)``, capped at :data:`SQNR_CAP_DB` either way (JSON has no
  infinity).
- ``nonfinite``: candidate values that are NaN/Inf where the reference is finite.
- ``top1_agreement``: share of samples whose top class agrees (classification).
- ``confident_top1_agreement``: the same over samples where the reference's softmax confidence exceeds
  :data:`CONFIDENT` (``confident_samples`` of them): near-ties flip under tiny errors and say little.
- ``top5_containment``: share of samples whose reference top class is in the candidate's top 5.
- ``expected_disagreement``: the top-1 disagreement expected on other samples like these (classification;
  :func:`infership.runtime.tasks.expected_disagreement`): budgets read the larger of it and the observed one.
- ``neighbour_agreement``: share of samples whose nearest other sample of the compared set (by cosine) is
  the same under the candidate as under the reference (embedding: what a search index would notice; also
  reported as ``top1_agreement``, which budgets read).
- ``pixel_agreement``: share of pixels whose class agrees (segmentation: argmax over the class axis).
- ``miou_agreement``: mean over classes of the IoU between the candidate's class map and the reference's.
- ``detections_matched``: share of detections matched to the reference's (same label, IoU ≥ 0.5) over the
  reference's plus the candidate's extra ones; ``box_iou_min`` / ``box_iou_mean`` of matched boxes,
  ``score_diff_max``, ``label_agreement`` (detection, :mod:`infership.runtime.detection`); ``map50`` /
  ``map50_95``: COCO-style mAP in percent against ground-truth boxes.
- ``accuracy_reference`` / ``accuracy``: task accuracy in percent of the reference and the candidate, when
  labels exist (segmentation: mIoU against ground-truth masks); ``accuracy_drop``: their difference in
  points (lower is better).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: SQNR reported for identical outputs (and its negative for a zero reference): a finite, JSON-safe value.
SQNR_CAP_DB = 200.0
#: Reference softmax confidence above which a sample counts as "confident".
CONFIDENT = 0.5


class Better(str, enum.Enum):
    """Which direction of a figure is an improvement."""

    HIGHER = "higher"
    LOWER = "lower"
    NEITHER = "neither"  # counts and sizes: reported, never gated


class Unit(str, enum.Enum):
    """The unit of a figure. ``FRACTION``, ``PERCENT`` and ``POINTS`` are quality figures a gate can
    compare in percentage points; the others are reported with their direction but not gated by points."""

    FRACTION = "fraction"  # 0..1
    PERCENT = "percent"  # 0..100
    POINTS = "points"  # a difference of percents
    DB = "dB"
    COSINE = "cosine"  # -1..1
    ABSOLUTE = "absolute"  # in the output's own units
    RATIO = "ratio"
    COUNT = "count"
    MS = "ms"
    PER_SECOND = "items/s"

    @property
    def points_per_unit(self) -> float | None:
        """How many percentage points one unit of this figure is (``None``: not a points figure)."""
        return {Unit.FRACTION: 100.0, Unit.PERCENT: 1.0, Unit.POINTS: 1.0}.get(self)


@dataclass(frozen=True)
class FigureInfo:
    """The declaration of one figure: its name, unit, direction and meaning."""

    name: str
    unit: Unit
    better: Better
    description: str

    def worsening(self, baseline: float, current: float) -> float:
        """How much worse ``current`` is than ``baseline`` in this figure's unit (negative: better)."""
        if self.better is Better.HIGHER:
            return baseline - current
        if self.better is Better.LOWER:
            return current - baseline
        return 0.0

    def worsening_points(self, baseline: float, current: float) -> float | None:
        """:meth:`worsening` in percentage points, for quality figures; ``None`` for the others."""
        scale = self.unit.points_per_unit
        return None if scale is None else self.worsening(baseline, current) * scale


def _fig(unit: Unit, better: Better, description: str, default: Any = None) -> Any:
    return field(default=default, metadata={"unit": unit, "better": better, "description": description})


@dataclass(frozen=True)
class Agreement:
    """How a candidate model's outputs agree with a reference (and score against labels, when given).

    Every field is a declared figure (see the module docstring); ``None`` means "does not apply" (no class
    scores, no labels). ``outputs`` holds the element-wise figures of each output separately (with
    ``scale``, the largest ``|reference|`` value, which tolerances are relative to).
    """

    task: str = "tensor"
    samples: int = _fig(Unit.COUNT, Better.NEITHER, "samples (batch rows) compared", 0)
    max_abs_err: float | None = _fig(Unit.ABSOLUTE, Better.LOWER, "largest |candidate - reference|")
    max_rel_err: float | None = _fig(Unit.RATIO, Better.LOWER, "max_abs_err over the output's scale")
    scale: float | None = _fig(Unit.ABSOLUTE, Better.NEITHER, "largest |reference| value")
    cosine_min: float | None = _fig(Unit.COSINE, Better.HIGHER, "worst sample's cosine similarity")
    cosine_mean: float | None = _fig(Unit.COSINE, Better.HIGHER, "mean cosine similarity over samples")
    sqnr_db: float | None = _fig(Unit.DB, Better.HIGHER, "signal-to-quantization-noise ratio")
    nonfinite: int = _fig(Unit.COUNT, Better.LOWER, "NaN/Inf where the reference is finite", 0)
    top1_agreement: float | None = _fig(
        Unit.FRACTION, Better.HIGHER, "share of samples whose top class agrees"
    )
    confident_top1_agreement: float | None = _fig(
        Unit.FRACTION, Better.HIGHER, "top-1 agreement where the reference is confident"
    )
    confident_samples: int | None = _fig(
        Unit.COUNT, Better.NEITHER, "samples where the reference is confident"
    )
    top5_containment: float | None = _fig(
        Unit.FRACTION, Better.HIGHER, "share of samples whose reference top class is in the candidate's top 5"
    )
    expected_disagreement: float | None = _fig(
        Unit.FRACTION,
        Better.LOWER,
        "top-1 disagreement expected on other samples like these: every sample's reference margin (top class"
        " over runner-up) against every sample's change of that margin under the candidate",
    )
    neighbour_agreement: float | None = _fig(
        Unit.FRACTION, Better.HIGHER, "share of samples whose nearest neighbour by cosine agrees (embedding)"
    )
    pixel_agreement: float | None = _fig(
        Unit.FRACTION, Better.HIGHER, "share of pixels whose class agrees (segmentation)"
    )
    miou_agreement: float | None = _fig(
        Unit.FRACTION, Better.HIGHER, "mean IoU of the candidate's class map against the reference's"
    )
    detections_matched: float | None = _fig(
        Unit.FRACTION, Better.HIGHER, "share of detections matched to the reference's by IoU and label"
    )
    detections_reference: int | None = _fig(Unit.COUNT, Better.NEITHER, "reference detections compared")
    detections_candidate: int | None = _fig(
        Unit.COUNT, Better.NEITHER, "candidate detections above the compare threshold"
    )
    box_iou_min: float | None = _fig(Unit.FRACTION, Better.HIGHER, "worst IoU of a matched detection's box")
    box_iou_mean: float | None = _fig(Unit.FRACTION, Better.HIGHER, "mean IoU of matched detections' boxes")
    score_diff_max: float | None = _fig(Unit.ABSOLUTE, Better.LOWER, "largest score difference of a match")
    label_agreement: float | None = _fig(
        Unit.FRACTION, Better.HIGHER, "share of box-matched detections whose labels agree"
    )
    score_threshold: float | None = _fig(
        Unit.ABSOLUTE, Better.NEITHER, "reference score from which detections are compared"
    )
    map50: float | None = _fig(Unit.PERCENT, Better.HIGHER, "mAP at IoU 0.5 against ground truth")
    map50_95: float | None = _fig(Unit.PERCENT, Better.HIGHER, "mAP averaged over IoU 0.50:0.05:0.95")
    accuracy_reference: float | None = _fig(Unit.PERCENT, Better.HIGHER, "reference's task accuracy")
    accuracy: float | None = _fig(Unit.PERCENT, Better.HIGHER, "candidate's task accuracy")
    accuracy_drop: float | None = _fig(Unit.POINTS, Better.LOWER, "accuracy_reference - accuracy")
    outputs: Mapping[str, Agreement] = field(default_factory=dict)

    @property
    def loss_points(self) -> float | None:
        """The loss an accuracy budget is checked against, in points: ``accuracy_drop`` when labels were
        given, else the top-1 disagreement ``100 · (1 - top1_agreement)`` — for classifiers the larger of
        that and ``100 · expected_disagreement`` (a few hundred samples show a handful of flips at most, so
        the count alone passes or fails a budget by luck) — (segmentation: the pixel disagreement
        ``100 · (1 - pixel_agreement)``; detection: the unmatched share ``100 · (1 - detections_matched)``);
        ``None`` when none applies."""
        if self.accuracy_drop is not None:
            return self.accuracy_drop
        if self.top1_agreement is not None:
            return round(100.0 * max(1.0 - self.top1_agreement, self.expected_disagreement or 0.0), 4)
        if self.neighbour_agreement is not None:
            return round(100.0 * (1.0 - self.neighbour_agreement), 4)
        if self.pixel_agreement is not None:
            return round(100.0 * (1.0 - self.pixel_agreement), 4)
        if self.detections_matched is not None:
            return round(100.0 * (1.0 - self.detections_matched), 4)
        return None

    def to_dict(self) -> dict[str, Any]:
        """The figures that apply (``None`` ones left out), JSON-ready; ``outputs`` nested per output."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "outputs":
                if value:
                    out["outputs"] = {k: v.to_dict() for k, v in value.items()}
            elif value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Agreement:
        """Read back :meth:`to_dict`; keys that are not figures of this record are ignored."""
        known = {f.name for f in fields(cls)} - {"outputs"}
        kwargs = {ALIASES.get(k, k): v for k, v in data.items() if ALIASES.get(k, k) in known}
        outputs = {k: cls.from_dict(v) for k, v in (data.get("outputs") or {}).items()}
        return cls(**kwargs, outputs=outputs)


#: Figures other records report (latency and throughput from benchmarks and int8 validation).
_OTHER: tuple[FigureInfo, ...] = (
    FigureInfo("loss_points", Unit.POINTS, Better.LOWER, "the loss an accuracy budget is checked against"),
    FigureInfo("latency_ms", Unit.MS, Better.LOWER, "median latency of one call"),
    FigureInfo("fp32_latency_ms", Unit.MS, Better.LOWER, "median latency of the fp32 model"),
    FigureInfo("p50_ms", Unit.MS, Better.LOWER, "median latency"),
    FigureInfo("p90_ms", Unit.MS, Better.LOWER, "90th percentile latency"),
    FigureInfo("p99_ms", Unit.MS, Better.LOWER, "99th percentile latency"),
    FigureInfo("mean_ms", Unit.MS, Better.LOWER, "mean latency"),
    FigureInfo("throughput", Unit.PER_SECOND, Better.HIGHER, "items per second"),
    FigureInfo("speedup", Unit.RATIO, Better.HIGHER, "fp32 latency over this variant's"),
)


def _registry() -> dict[str, FigureInfo]:
    out = {
        f.name: FigureInfo(f.name, f.metadata["unit"], f.metadata["better"], f.metadata["description"])
        for f in fields(Agreement)
        if "unit" in f.metadata
    }
    out.update({i.name: i for i in _OTHER})
    return out


FIGURES: Mapping[str, FigureInfo] = _registry()

#: Names records written by earlier versions used for the same figures (read, never written).
ALIASES: Mapping[str, str] = {"accuracy_int8": "accuracy", "accuracy_fp32": "accuracy_reference"}


def figure_info(name: str) -> FigureInfo | None:
    """The declaration of figure ``name`` (a dotted path such as ``outputs.logits.max_abs_err`` is looked up
    by its last part), or ``None`` when infership declares no such figure: undeclared values are settings or
    notes, never gated."""
    leaf = name.rsplit(".", 1)[-1]
    return FIGURES.get(ALIASES.get(leaf, leaf))


def accuracy_figures(reference: float, candidate: float) -> dict[str, float]:
    """``accuracy_reference``, ``accuracy`` and ``accuracy_drop`` (points) of a candidate scored on the same
    labels as its reference, rounded as every judge records them."""
    return {
        "accuracy_reference": round(reference, 4),
        "accuracy": round(candidate, 4),
        "accuracy_drop": round(reference - candidate, 4),
    }


def sqnr_db(signal: float, noise: float) -> float:
    """``10·log10(signal / noise)`` from sums of squares, capped at ±:data:`SQNR_CAP_DB`."""
    if noise <= 0.0:
        return SQNR_CAP_DB
    if signal <= 0.0:
        return -SQNR_CAP_DB
    return max(-SQNR_CAP_DB, min(SQNR_CAP_DB, 10.0 * math.log10(signal / noise)))


def worst_of(per_output: Mapping[str, Agreement], task: str) -> Agreement:
    """The worst element-wise figure over outputs (the per-output records kept under ``outputs``); ``None``
    where some output has no honest figure (non-finite)."""
    items = list(per_output.values())

    def pick(key: str, fn: Any) -> Any:
        vals = [getattr(a, key) for a in items]
        return None if any(v is None for v in vals) else fn(vals)

    return Agreement(
        task=task,
        samples=max(a.samples for a in items),
        max_abs_err=pick("max_abs_err", max),
        max_rel_err=pick("max_rel_err", max),
        cosine_min=pick("cosine_min", min),
        cosine_mean=pick("cosine_mean", min),
        sqnr_db=pick("sqnr_db", min),
        nonfinite=sum(a.nonfinite for a in items),
        outputs=dict(per_output),
    )
