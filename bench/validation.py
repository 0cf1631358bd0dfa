"""Accuracy re-measured where the gate runs, on a validation set given to ``bench`` / ``compare``, judged
by the artifact's task (:func:`infership.runtime.tasks.judge_for`) rather than copied from the manifest.

- ``bench --validation SRC`` runs the loaded predictor over the set and records the task's score
  (``accuracy`` in percent, with labels) in the run's ``accuracy`` record, with the sample count and the
  source: a stored baseline then carries figures measured the same way as the current run's.
- ``compare --rerun --validation SRC`` runs both predictors over the set and judges the candidate's outputs
  against the baseline's with the task's ``compare``: the baseline's record is the baseline judged against
  itself (top-1 agreement 1, no non-finite values, its own accuracy) and the candidate's record is the
  candidate judged against the baseline, so the gate compares them figure by figure by their declared
  direction (:mod:`infership.bench.figures_gate`): an accuracy that falls or an ``accuracy_drop`` that rises
  by more than the tolerated points fails, and so does any new non-finite output.

``SRC`` is anything :func:`infership.calibration.from_spec` reads: an image folder (class sub-folders give
labels), an ``.npz`` / ``.npy`` file (``labels`` or ``y`` key), a registered ``SCHEME:ARG``, or
``FILE.py:FUNCTION``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from infership.calibration import CalibrationSet, from_spec
from infership.runtime.errors import InvalidInputError
from infership.runtime.manifest import Manifest
from infership.runtime.predictor import Predictor
from infership.runtime.tasks import judge_for

#: Samples per ``predict`` call while running the validation set (not timed).
BATCH = 32


@dataclass(frozen=True)
class ValidationRun:
    """One predictor's outputs over a validation set.

    Args:
        source: The set as given (``SRC``).
        outputs: Output name → array, one mapping per batch.
        labels: Integer labels of every sample, or ``None`` when the source has none.
    """

    source: str
    outputs: tuple[dict[str, np.ndarray], ...]
    labels: np.ndarray | None

    @property
    def samples(self) -> int:
        return sum(len(next(iter(o.values()))) for o in self.outputs) if self.outputs else 0


def validation_set(
    spec: str, manifest: Manifest, *, tokenizer: Any = None, batch_size: int = BATCH
) -> CalibrationSet:
    """The validation set ``spec`` names, bound to ``manifest``'s inputs (images go through its
    preprocessing; class folders map to its labels; texts — ``.txt``, labelled ``.tsv`` — are tokenized with
    ``tokenizer``, the artifact's :class:`~infership.runtime.text.TextEncoder`).

    Raises:
        InvalidInputError: A source that cannot be read or does not fit the model's inputs.
    """
    cset = from_spec(
        spec, preprocessing=manifest.preprocessing, class_names=manifest.labels, tokenizer=tokenizer
    )
    return cset.bind(manifest.inputs).with_batch_size(batch_size)


def run_validation(predictor: Predictor, spec: str) -> ValidationRun:
    """Run ``predictor`` over the validation set ``spec`` (built for its own artifact's inputs).

    Raises:
        InvalidInputError: The source cannot be read, does not fit the inputs, or holds no sample.
        InferenceError: The runtime failed.
    """
    from infership.runtime.text import encoder_for

    tokenizer = encoder_for(predictor.manifest, predictor.artifact.root)
    cset = validation_set(spec, predictor.manifest, tokenizer=tokenizer)
    outputs: list[dict[str, np.ndarray]] = []
    labels: list[np.ndarray] = []
    for batch in cset.batches():
        outputs.append({k: np.asarray(v) for k, v in predictor.predict(batch.feeds).items()})
        if batch.labels is not None:
            labels.append(np.asarray(batch.labels))
    if not outputs:
        raise InvalidInputError(f"validation set {spec!r} holds no sample")
    return ValidationRun(spec, tuple(outputs), np.concatenate(labels) if labels else None)


def measured_record(predictor: Predictor, spec: str) -> dict[str, Any]:
    """The figures ``bench --validation`` records for a run: the task's score on ``spec``.

    Returns:
        ``{"accuracy": percent, "samples": n, "source": "measured on SPEC"}``; without labels (or for a task
        without a score) only ``samples`` and ``source``, and a ``note`` saying why.

    Raises:
        InvalidInputError: The source cannot be read or does not fit the inputs.
    """
    run = run_validation(predictor, spec)
    record: dict[str, Any] = {"samples": run.samples, "source": f"measured on {spec}"}
    judge = judge_for(predictor.manifest.task)  # type: ignore[arg-type]
    score = judge.score(run.outputs, run.labels) if run.labels is not None else None
    if score is not None:
        record["accuracy"] = score
    else:
        why = "the source has no labels" if run.labels is None else f"task {judge.task.value!r} has no score"
        record["note"] = f"no accuracy: {why}; compare --rerun judges outputs against the baseline's"
    return record


def paired_records(
    baseline: ValidationRun, candidate: ValidationRun, *, task: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two figure records the gate compares in an A/B run (see the module docstring).

    Args:
        baseline, candidate: Each predictor's run over the same samples.
        task: The task judging them (the baseline artifact's).

    Returns:
        ``(baseline_record, candidate_record)``, each ``Agreement.to_dict()`` plus the source.

    Raises:
        InvalidInputError: The runs hold different sample counts or different labels.
    """
    if baseline.samples != candidate.samples:
        raise InvalidInputError(
            f"validation: the baseline saw {baseline.samples} samples and the candidate {candidate.samples}"
        )
    if (baseline.labels is None) != (candidate.labels is None) or (
        baseline.labels is not None and not np.array_equal(baseline.labels, candidate.labels)
    ):
        raise InvalidInputError("validation: the two sides read different labels from the same source")
    judge = judge_for(task)
    ref, cand = list(baseline.outputs), list(candidate.outputs)
    labels = baseline.labels
    if labels is not None and judge.score(ref, labels) is None:
        labels = None  # a task without a score against labels (tensor): judged on the outputs alone
    itself = judge.compare(ref, ref, labels=labels).to_dict()
    against = judge.compare(ref, cand, labels=labels).to_dict()
    source = {"source": f"measured on {baseline.source}"}
    return {**_numbers(itself), **source}, {**_numbers(against), **source}


def _numbers(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record without ``None`` values (figures the task did not produce)."""
    return {k: (_numbers(v) if isinstance(v, Mapping) else v) for k, v in record.items() if v is not None}
