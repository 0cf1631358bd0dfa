"""Judge a converted model's outputs against its reference: the figures, and whether they are within tolerance.

:func:`compare_outputs` is the one place the build checks get their verdict from. The figures come from the
artifact's task (:func:`infership.runtime.tasks.judge_for`), as a typed
:class:`~infership.runtime.figures.Agreement` — the same record int8 validation, the pipeline and the CI
gate read (see :mod:`infership.runtime.figures` for what each figure means). This module adds the verdict: a
:class:`Tolerance` and the reasons a comparison fails it, together in a :class:`Check`, whose
:meth:`Check.to_dict` is what ``Variant.validation`` stores.

A comparison passes when, for every output, ``max_abs_err <= atol + rtol * scale`` (``scale``: the output's
largest ``|reference|`` value), ``cosine_min >= min_cosine`` and nothing is NaN/Inf where the reference is
finite, and — for tasks with a top class — ``top1_agreement >= min_top1`` when that is set.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from infership.calibration import to_numpy
from infership.runtime import Agreement, ConversionError, InvalidInputError, Task, judge_for

Feeds = Mapping[str, np.ndarray]
Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Tolerance:
    """How close a candidate must be to its reference.

    Args:
        atol: Absolute error allowed on every element.
        rtol: Error allowed relative to the output's scale (its largest ``|reference|`` value).
        min_cosine: Smallest cosine similarity allowed for any one sample.
        min_top1: Smallest top-1 agreement allowed; only for tasks with a top class (classification: a
            ``tensor`` comparison judged with it is refused). ``None`` reports it without gating on it
            (random inputs give near-ties that flip under tiny errors).
        min_matched: Detection only (outputs of data-dependent size, where element-wise limits do not
            apply): smallest share of detections matched to the reference's (``detections_matched``).
        min_box_iou: Detection only: smallest IoU of a matched detection's box with the reference's.

    Raises:
        InvalidInputError: A value out of its range.
    """

    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.9999
    min_top1: float | None = None
    min_matched: float = 0.99
    min_box_iou: float = 0.99

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"Tolerance.{name} must be >= 0, got {getattr(self, name)}")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise InvalidInputError(f"Tolerance.min_cosine must be in [-1, 1], got {self.min_cosine}")
        if self.min_top1 is not None and not 0.0 <= self.min_top1 <= 1.0:
            raise InvalidInputError(f"Tolerance.min_top1 must be in [0, 1], got {self.min_top1}")
        for name in ("min_matched", "min_box_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInputError(f"Tolerance.{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def fp32(cls) -> Tolerance:
        """Default for fp32 conversions: kernels differ only in summation order."""
        return cls()

    @classmethod
    def fp16(cls) -> Tolerance:
        """Default for fp16 graphs checked against fp32 (11-bit mantissa). Judged mainly by cosine: in a deep
        network the largest single error can be a sizeable fraction of the output scale while the outputs as a
        whole stay close (docs/converters.md)."""
        return cls(atol=1e-3, rtol=5e-2, min_cosine=0.999, min_matched=0.9, min_box_iou=0.95)

    @classmethod
    def bf16(cls) -> Tolerance:
        """For graphs a runtime executes in bfloat16 (8-bit mantissa; OpenVINO's default on CPUs with
        AVX512_BF16 or AMX for non-fp32 variants): wider still than :meth:`fp16`."""
        return cls(atol=1e-2, rtol=0.2, min_cosine=0.99, min_matched=0.8, min_box_iou=0.9)

    def judge(self, agreement: Agreement) -> tuple[str, ...]:
        """Why ``agreement`` misses this tolerance, one reason per figure and output; empty if it does not.

        Args:
            agreement: Figures from :func:`compare_outputs` (or a task's ``Judge.compare``); the element-wise
                limits are applied to each output's own figures (``agreement.outputs``), or to the aggregate
                figures when the record has no per-output ones.

        Returns:
            The failures, e.g. ``"logits: cosine_min 0.98 < 0.9999"``.

        Raises:
            InvalidInputError: ``min_top1`` is set and the record has no top-1 agreement (its task, such as
                ``tensor``, has no top class): the limit would silently check nothing.
        """
        if agreement.task == Task.DETECTION.value:
            return self._judge_detections(agreement)
        if self.min_top1 is not None and agreement.top1_agreement is None:
            raise InvalidInputError(
                f"Tolerance.min_top1={self.min_top1} needs a top-1 agreement, and task {agreement.task!r} gives "
                "none; judge the outputs as classification (task='classification', --task classification) "
                "or leave min_top1 unset"
            )
        out: list[str] = []
        # A record without per-output figures (built by hand, or read back from an old manifest) is judged
        # on its aggregate figures — which are the worst output's — rather than passing unchecked.
        per_output = agreement.outputs or {"all outputs": agreement}
        for name, f in per_output.items():
            if f.nonfinite:
                out.append(f"{name}: {f.nonfinite} NaN/Inf value(s) where the reference is finite")
            allowed = self.atol + self.rtol * (f.scale or 0.0)
            if f.max_abs_err is None or f.max_abs_err > allowed:
                out.append(
                    f"{name}: max_abs_err {_g(f.max_abs_err)} > allowed {_g(allowed)} "
                    f"(atol {_g(self.atol)} + rtol {_g(self.rtol)} × scale {_g(f.scale)})"
                )
            if f.cosine_min is None or f.cosine_min < self.min_cosine:
                out.append(f"{name}: cosine_min {_g(f.cosine_min)} < {self.min_cosine}")
        top1 = agreement.top1_agreement
        if self.min_top1 is not None and top1 is not None and top1 < self.min_top1:
            out.append(f"top1_agreement {top1:.4f} < {self.min_top1}")
        return tuple(out)

    def _judge_detections(self, agreement: Agreement) -> tuple[str, ...]:
        # Detections have data-dependent counts: matched share and box IoU replace element-wise limits.
        out: list[str] = []
        if agreement.nonfinite:
            out.append(f"{agreement.nonfinite} NaN/Inf value(s) in boxes or scores")
        matched = agreement.detections_matched
        if matched is None and self.min_matched > 0:  # a caller may waive it: min_matched=0
            out.append(
                "no detection to compare: the reference found nothing in these inputs (random inputs rarely "
                "hold objects for a trained detector); check on real images (validation_data / --validation-data)"
            )
        elif matched is not None and matched < self.min_matched:
            out.append(f"detections_matched {_g(matched)} < {self.min_matched}")
        if agreement.box_iou_min is not None and agreement.box_iou_min < self.min_box_iou:
            out.append(f"box_iou_min {agreement.box_iou_min:.4g} < {self.min_box_iou}")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tolerance:
        return cls(**dict(data))


@dataclass(frozen=True)
class Check:
    """The outcome of :func:`compare_outputs`: the figures, the tolerance they were judged by, and why they
    missed it (``failures``; empty when the check passed).

    Attributes:
        agreement: The figures (:class:`~infership.runtime.figures.Agreement`), overall and per output.
        tolerance: What counted as agreeing.
        failures: One reason per missed limit.
        batches: Feeds compared.
    """

    agreement: Agreement
    tolerance: Tolerance
    failures: tuple[str, ...] = ()
    batches: int = 1

    @property
    def passed(self) -> bool:
        return not self.failures

    def with_failures(self, *reasons: str) -> Check:
        """A copy that also fails for ``reasons`` (checks beyond the figures, such as output dtypes)."""
        return replace(self, failures=(*self.failures, *reasons))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``passed``, the agreement's figures (``None`` ones left out; ``outputs`` per output),
        ``batches``, ``tolerance`` and ``failures``."""
        return {
            "passed": self.passed,
            **self.agreement.to_dict(),
            "batches": self.batches,
            "tolerance": self.tolerance.to_dict(),
            "failures": list(self.failures),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        """Read back :meth:`to_dict` (such as a variant's ``validation``); other keys are ignored."""
        return cls(
            agreement=Agreement.from_dict(data),
            tolerance=Tolerance.from_dict(data["tolerance"]),
            failures=tuple(data.get("failures") or ()),
            batches=int(data.get("batches", 1)),
        )


def compare_outputs(
    reference: Outputs | Sequence[Outputs],
    candidate: Outputs | Sequence[Outputs],
    *,
    tolerance: Tolerance | None = None,
    task: Task | str = Task.TENSOR,
) -> Check:
    """Compare candidate outputs with reference outputs and judge them against a tolerance.

    Args:
        reference: Output name → array for one batch, or a list of such mappings (one per batch).
        candidate: The same structure from the model under test; every reference output must be present.
        tolerance: What counts as agreeing; defaults to :meth:`Tolerance.fp32`.
        task: How the outputs are compared (:class:`~infership.runtime.tasks.Task`): ``tensor``
            (element-wise figures only, the default), ``classification`` (top-1 agreement, confident
            top-1 agreement and top-5 containment of the first output's class scores as well),
            ``segmentation`` (pixel agreement and mIoU of the class maps as well), or another task's judge.

    Returns:
        The :class:`Check`: figures, tolerance and verdict.

    Raises:
        InvalidInputError: The structures differ (missing output, shape mismatch, different batch counts),
            or the outputs do not fit the task, or ``task`` is unknown.
    """
    refs = [reference] if isinstance(reference, Mapping) else list(reference)
    cands = [candidate] if isinstance(candidate, Mapping) else list(candidate)
    agreement = judge_for(task).compare(refs, cands)
    tol = tolerance or Tolerance.fp32()
    return Check(agreement, tol, tol.judge(agreement), batches=len(refs))


def validate_against_torch(
    model: Callable[..., Any],
    candidate: Callable[[Feeds], Outputs],
    feeds: Sequence[Feeds],
    *,
    output_names: Sequence[str],
    tolerance: Tolerance | None = None,
    task: Task | str = Task.TENSOR,
) -> Check:
    """Run ``model`` (PyTorch) and ``candidate`` on every feed and compare them.

    .. deprecated::
        Use :func:`torch_outputs` and :func:`compare_outputs`, which this is made of::

            check = compare_outputs(torch_outputs(model, feeds, names), [candidate(f) for f in feeds])

    Args:
        model: The torch reference; called with the feeds' tensors positionally, in feed order.
        candidate: Feeds → outputs, e.g. ``Predictor.predict``.
        feeds: Input batches, each a mapping input name → array.
        output_names: Names for the torch model's outputs, in order.
        tolerance: See :class:`Tolerance` (default :meth:`Tolerance.fp32`).
        task: How the outputs are compared (see :func:`compare_outputs`).

    Returns:
        The :class:`Check` (it used to be a dict of figures: ``check.to_dict()`` gives one).

    Raises:
        ConversionError: The model returned something other than ``output_names`` tensors.
        InvalidInputError: The candidate's outputs do not match the reference's.
    """
    warnings.warn(
        "validate_against_torch is deprecated; use compare_outputs(torch_outputs(model, feeds, output_names), "
        "[candidate(f) for f in feeds], tolerance=..., task=...)",
        DeprecationWarning,
        stacklevel=2,
    )
    refs = torch_outputs(model, feeds, output_names)
    return compare_outputs(refs, [candidate(f) for f in feeds], tolerance=tolerance, task=task)


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
    """A model's return value (tensor, tuple/list of tensors, or dict) → name → numpy array.

    Raises:
        ConversionError: The model returned a different number of outputs than there are names, or
            something other than tensors.
    """
    if isinstance(result, Mapping):
        values = list(result.values())
    elif isinstance(result, (tuple, list)):
        values = list(result)
    else:
        values = [result]
    if len(values) != len(output_names):
        raise ConversionError(
            f"the model returned {len(values)} outputs, expected {len(output_names)} ({list(output_names)})"
        )
    import torch

    # Checked here: numpy would quietly stack a nested tuple of tensors into one array.
    odd = sorted({type(v).__name__ for v in values if not isinstance(v, torch.Tensor)})
    if odd:
        raise ConversionError(f"the model returned {', '.join(odd)} among its outputs, not only tensors")
    return {n: to_numpy(v) for n, v in zip(output_names, values, strict=True)}


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"
