"""How the variant's figures are gated: each figure of a validation record is judged by its declaration in
:mod:`infership.runtime.figures` (unit and direction), never by its name or its value range.

- a **quality figure** (unit fraction, percent or points, such as ``accuracy``, ``accuracy_drop``,
  ``loss_points`` or ``top1_agreement``) regresses when it got worse, in its declared direction, by more
  than ``max_accuracy_drop`` percentage points (a fraction's change is scaled ×100);
- a **count with a direction** (``nonfinite``: NaN/Inf outputs) regresses on any worsening;
- any other declared figure is reported with its direction but not gated;
- an undeclared name (a setting recorded next to the figures) is neither compared nor gated; a name earlier
  versions wrote for a declared figure (``accuracy_int8``) is read as that figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infership.runtime.figures import Better, FigureInfo, Unit, figure_info

#: Slack when comparing a worsening in points with the tolerated drop (float rounding, not a tolerance).
_POINTS_EPS = 1e-9


@dataclass(frozen=True)
class FigureChange:
    """One declared figure of the variant, in both files.

    Args:
        metric: The figure's (dotted) name in the validation record.
        unit: Its declared unit (:class:`~infership.runtime.figures.Unit` value).
        better: Its declared direction (``higher``, ``lower`` or ``neither``).
        baseline, current: The two values.
        worsening: How much worse ``current`` is, in the figure's unit (negative: better; 0 for figures
            without a direction).
        worsening_points: The same in percentage points for quality figures; ``None`` for the others.
        gated: Whether the figure is gated (a quality figure or a count with a direction, see
            :func:`is_gated`).
        regression: Gated and worse by more than the tolerated points (quality figures), or worse at all
            (counts).
    """

    metric: str
    unit: str
    better: str
    baseline: float
    current: float
    worsening: float
    worsening_points: float | None
    gated: bool
    regression: bool

    @property
    def change(self) -> str:
        """``"worse"``, ``"better"`` or ``"unchanged"`` in the figure's declared direction."""
        if self.worsening > 0:
            return "worse"
        return "better" if self.worsening < 0 else "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "change": self.change}


def is_gated(info: FigureInfo) -> bool:
    """Whether the gate fails on a worsening of this figure: a quality figure (fraction, percent or
    points) with a direction, gated against the tolerated points, or a count with a direction
    (``nonfinite``), where any worsening is a regression. The rest is reported, not gated."""
    if info.better is Better.NEITHER:
        return False
    return info.unit.points_per_unit is not None or info.unit is Unit.COUNT


def compare_figures(
    baseline: Mapping[str, Any] | None, current: Mapping[str, Any] | None, *, max_drop: float
) -> list[FigureChange]:
    """The declared figures present in both validation records, judged by their declaration.

    Each numeric value (nested records flattened to dotted names) is looked up with
    :func:`~infership.runtime.figures.figure_info` and compared under the figure's declared name, so a
    name an earlier version wrote (``accuracy_int8``) meets the current one (``accuracy``); undeclared names
    (settings such as ``tolerance.min_top1``) are skipped. A quality figure (points-comparable unit) with a
    direction is a regression when it got worse by more than ``max_drop`` percentage points; a count with
    a direction (``nonfinite``) when it got worse at all. The others are reported with their direction
    only (see :func:`is_gated`).

    Args:
        baseline, current: The two records (``RunResult.accuracy``); ``None`` or empty: nothing to compare.
        max_drop: Tolerated worsening of a quality figure, in percentage points.

    Returns:
        One :class:`FigureChange` per declared figure present in both (named as declared), in the
        baseline's order.
    """
    if not baseline or not current:
        return []
    cur = _declared_figures(current)
    out = []
    for name, (info, b) in _declared_figures(baseline).items():
        if name not in cur:
            continue
        c = cur[name][1]
        points = info.worsening_points(b, c)
        worsening = info.worsening(b, c)
        gated = is_gated(info)
        if not gated:
            regression = False
        elif points is not None:
            # Fractions scaled ×100 carry rounding error: 0.99 → 0.98 is one point, not 1.0000000000000009
            regression = points > max_drop + _POINTS_EPS
        else:
            regression = worsening > 0  # a count: one more NaN is one too many
        out.append(
            FigureChange(
                metric=name,
                unit=info.unit.value,
                better=info.better.value,
                baseline=b,
                current=c,
                worsening=worsening,
                worsening_points=points,
                gated=gated,
                regression=regression,
            )
        )
    return out


def regression_reason(f: FigureChange, max_drop: float) -> str:
    if f.worsening_points is None:
        return (
            f"{f.metric} worse by {f.worsening:g} ({f.baseline:g} → {f.current:g} {f.unit}, {f.better} "
            "is better; any worsening fails)"
        )
    return (
        f"{f.metric} worse by {f.worsening_points:.2f} points > {max_drop:g} "
        f"({f.baseline:g} → {f.current:g}, {f.better} is better)"
    )


def _declared_figures(record: Mapping[str, Any]) -> dict[str, tuple[FigureInfo, float]]:
    """The record's numbers that are declared figures, keyed by declared name (an alias's leaf replaced by
    the figure it names). When a record holds both a figure and its alias, the figure's own name wins."""
    out: dict[str, tuple[FigureInfo, float]] = {}
    for name, value in _flat_numbers(record).items():
        info = figure_info(name)
        if info is None:
            continue
        prefix, _, leaf = name.rpartition(".")
        declared = f"{prefix}.{info.name}" if prefix else info.name
        if declared in out and leaf != info.name:
            continue
        out[declared] = (info, value)
    return out


def _flat_numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[name] = float(v)
        elif isinstance(v, Mapping):
            out.update(_flat_numbers(v, f"{name}."))
    return out
