"""Judging int8 candidates on held-out data: through the runtime's backends, like any deployed variant.

A candidate is not in the artifact yet while it is judged (it may be replaced by a repaired one), so it is
opened as :meth:`Artifact.candidate <infership.runtime.artifact.Artifact.candidate>` and run with
:meth:`Predictor.load <infership.runtime.predictor.Predictor.load>` on its target's backend: the same
session settings, input checks and placement as the variant will have once written. The fp32 reference is
the artifact's ``onnx-fp32`` variant on ``ort-cpu``. Outputs are compared by the task's judge
(:func:`infership.runtime.tasks.judge_for`) into one :class:`~infership.runtime.figures.Agreement`;
latency is timed with :func:`infership.runtime.timing.median_ms`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from infership.calibration.dataset import CalibrationSet
from infership.runtime.artifact import Artifact
from infership.runtime.errors import ArtifactError, BackendUnavailable, ConversionError, InferenceError
from infership.runtime.manifest import Variant
from infership.runtime.predictor import Predictor
from infership.runtime.tasks import judge_for
from infership.runtime.timing import median_ms

from ..checking import open_candidate
from .types import INT8, Evaluation, QuantizeContext, Reference, Target

log = logging.getLogger(__name__)

#: The backend the fp32 reference runs on.
REFERENCE_BACKEND = "ort-cpu"


def open_variant(art: Artifact, *, backend: str, variant_id: str, scratch: Path) -> Predictor:
    """A :class:`Predictor` for ``variant_id`` of ``art`` on ``backend``; the caller closes it.

    Opened like every candidate (:func:`infership.convert.checking.open_candidate`): compiled-model caches go
    under ``scratch``, never into the user's artifact.
    """
    return open_candidate(art, backend=backend, variant_id=variant_id, cache_dir=scratch / "cache")


def outputs_of(
    predictor: Predictor, holdout: CalibrationSet
) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """Every output over the held-out set, batch by batch, and the labels when it has them.

    Raises:
        ConversionError: The held-out set is empty.
    """
    outs, labels = [], []
    for batch in holdout.batches():
        outs.append(predictor.predict(batch.feeds))
        if batch.labels is not None:
            labels.append(batch.labels)
    if not outs:
        raise ConversionError("the held-out set is empty")
    return outs, (np.concatenate(labels) if labels else None)


def reference(art: Artifact, fp32: Variant, holdout: CalibrationSet, *, scratch: Path) -> Reference:
    """Run the artifact's fp32 ONNX variant over the held-out set once, on :data:`REFERENCE_BACKEND`.

    Labels are kept only when the artifact's task scores them (a ``tensor`` model has no accuracy).
    """
    with open_variant(art, backend=REFERENCE_BACKEND, variant_id=fp32.id, scratch=scratch) as p:
        outputs, labels = outputs_of(p, holdout)
    judge = judge_for(art.manifest.task)
    if labels is not None and judge.score(outputs, labels) is None:
        log.warning(
            "the held-out labels are not used: the artifact's task %r has no score against labels",
            judge.task.value,
        )
        labels = None
    # batch 1 for latency, unless the model has a fixed batch size (then the set yields only full batches)
    sample = next(iter(holdout)) if holdout.drop_last else holdout.first().feeds
    return Reference(tuple(outputs), labels, sample, fp32.id, REFERENCE_BACKEND)


def candidate(
    ctx: QuantizeContext,
    files: Sequence[Path],
    *,
    variant_id: str,
    format: str,
    precision: str = INT8,
    target: str | None = None,
) -> Artifact:
    """An in-memory artifact holding model ``files`` written under ``ctx.tmp`` (the first one is opened)."""
    rel = [Path(f).relative_to(ctx.tmp).as_posix() for f in files]
    return Artifact.candidate(
        ctx.tmp,
        ctx.artifact.manifest,
        variant_id=variant_id,
        format=format,
        precision=precision,
        files=rel,
        target=target,
    )


def latency_ms(ctx: QuantizeContext, art: Artifact, *, backend: str, variant_id: str) -> float:
    """Median latency of ``variant_id`` of ``art`` on ``backend`` on the reference's latency sample."""
    with open_variant(art, backend=backend, variant_id=variant_id, scratch=ctx.tmp) as p:
        return _time(p, ctx.ref.sample, ctx.latency_runs)


def evaluate(ctx: QuantizeContext, target: Target, files: Sequence[Path]) -> Evaluation:
    """Run an int8 candidate of ``target`` over the held-out set on ``target.backend``: its agreement with
    the fp32 reference (the task's judge, with labels when the reference kept them) and its latency.

    Raises:
        ConversionError: The candidate cannot be opened or run (the backend's error is the cause).
    """
    art = candidate(ctx, files, variant_id=target.variant_id, format=target.format, target=target.backend)
    judge = judge_for(ctx.artifact.manifest.task)
    try:
        with open_variant(art, backend=target.backend, variant_id=target.variant_id, scratch=ctx.tmp) as p:
            outputs, _ = outputs_of(p, ctx.holdout)
            metrics = judge.compare(ctx.ref.outputs, outputs, labels=ctx.ref.labels)
            return Evaluation(metrics, _time(p, ctx.ref.sample, ctx.latency_runs), p.backend)
    except (ArtifactError, BackendUnavailable, InferenceError) as exc:  # the candidate itself does not run
        raise ConversionError(
            f"the {target.variant_id} candidate does not run on {target.backend}: {exc}"
        ) from exc


def _time(p: Predictor, sample: Mapping[str, np.ndarray], runs: int) -> float:
    return median_ms(lambda: p.predict(sample), runs=runs)
