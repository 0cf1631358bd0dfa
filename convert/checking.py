"""Checking candidate variants against PyTorch through the backends users will load them with.

Each candidate is opened as :meth:`Artifact.candidate <infership.runtime.Artifact.candidate>` with
``Predictor.load`` on its backend (``ort-cpu``, ``openvino``, ``torch``) — the one way infership runs a model
file — on the same input batches as the PyTorch reference, and judged by
:func:`~infership.convert.validate.compare_outputs` with the artifact's task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infership.runtime import (
    Artifact,
    ConversionError,
    InfershipError,
    Manifest,
    Predictor,
    Step,
    Task,
    ValidationError,
)
from infership.runtime.registry import get_backend

from .source import ModelSource
from .validate import Check, Tolerance, compare_outputs, torch_outputs

log = logging.getLogger(__name__)

#: The figures a check step and an error message show (the full record is in ``Variant.validation``).
_SUMMARY_KEYS = (
    "passed",
    "max_abs_err",
    "max_rel_err",
    "cosine_min",
    "sqnr_db",
    "top1_agreement",
    "nonfinite",
    "samples",
)


class Rejected(ValidationError):
    """A candidate disagrees with PyTorch beyond tolerance. A :class:`ValidationError`, because that is what
    it is when it reaches the caller (the fp32 ONNX graph failing, or ``strict`` builds); ``validation``
    holds the figures as the manifest would have stored them."""

    def __init__(self, message: str, validation: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.validation = dict(validation)


@dataclass(frozen=True)
class Checked:
    """One candidate's check: the verdict, the record for ``Variant.validation``, and the ``check`` step."""

    check: Check
    validation: dict[str, Any]
    step: Step

    @property
    def passed(self) -> bool:
        return self.check.passed

    @property
    def failures(self) -> tuple[str, ...]:
        return self.check.failures

    def rejected(self, what: str | None = None, *, extra: str = "") -> Rejected:
        """The error for a failed check. With ``what`` (the fp32 graph), the message carries the figures;
        without, it is the short reason recorded for a variant that is left out."""
        msg = "disagrees with PyTorch beyond tolerance: " + "; ".join(self.failures)
        if what is not None:
            figures = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in summary(self.validation).items()
                if k != "passed"
            )
            msg = f"{what} {msg} ({figures})"
        if extra:
            msg += f"; {extra}"
        return Rejected(msg, self.validation)


def open_candidate(artifact: Artifact, *, backend: str, variant_id: str, cache_dir: Path) -> Predictor:
    """A :class:`Predictor` for a candidate variant on ``backend``, the way every candidate is opened (build
    checks, int8 validation and repair); the caller closes it.

    Compiled-model caches go to ``cache_dir`` (a scratch directory) on backends that keep one (those whose
    ``honours`` declares ``cache_dir``): judging a model must not write into the user's artifact.

    Raises:
        InfershipError: The backend cannot open or run the variant (as ``Predictor.load`` raises it).
    """
    options = {"cache_dir": cache_dir} if "cache_dir" in get_backend(backend).honours else {}
    return Predictor.load(artifact, backend=backend, variant=variant_id, **options)


class Checker:
    """Runs candidate variants through the real backends (via Predictor) and compares with PyTorch."""

    def __init__(
        self,
        root: Path,
        base: Manifest,
        feeds: list[dict],
        refs: list[dict],
        *,
        n_real: int,
        notes: list[str],
    ) -> None:
        self.root, self.base, self.feeds, self.refs = root, base, feeds, refs
        self.n_real, self.notes = n_real, notes
        self.cache = root / "_cache"

    def run(
        self,
        vid: str,
        fmt: str,
        precision: str,
        files: Sequence[str],
        backend: str,
        tol: Tolerance,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> Checked:
        """Load the candidate through ``backend`` and judge it against PyTorch.

        ``context`` (how it ran, e.g. ``execution_precision``) goes into the record and the step.

        Raises:
            ConversionError: The candidate could not be opened or run on ``backend``.
        """
        t0 = time.perf_counter()
        artifact = Artifact.candidate(
            self.root, self.base, variant_id=vid, format=fmt, precision=precision, files=files
        )
        try:
            with open_candidate(artifact, backend=backend, variant_id=vid, cache_dir=self.cache) as p:
                got = [p.predict(f) for f in self.feeds]
        except InfershipError as exc:
            raise ConversionError(f"{vid} could not run on {backend}: {exc}") from exc
        task = self.base.task or Task.TENSOR
        check = compare_outputs(self.refs, got, tolerance=tol, task=task)
        check = check.with_failures(
            *(
                f"{spec.name}: returned {got[0][spec.name].dtype}, the manifest says {spec.dtype}"
                for spec in self.base.outputs
                if spec.name in got[0] and got[0][spec.name].dtype.name != spec.dtype
            )
        )
        val = check.to_dict()
        # Rows counted on the inputs: a detector's outputs have as many rows as detections, not images.
        real_rows = sum(_rows(f) for f in self.feeds[len(self.feeds) - self.n_real :]) if self.n_real else 0
        val.update(reference="torch eager (the source model)", backend=backend, real_samples=real_rows)
        val["random_samples"] = val["samples"] - real_rows
        val["shapes"] = [{k: list(v.shape) for k, v in f.items()} for f in self.feeds[:8]]
        if self.n_real:
            real = compare_outputs(self.refs[-self.n_real :], got[-self.n_real :], tolerance=tol, task=task)
            val["real"] = summary(real.to_dict())
        if self.notes:
            val["notes"] = list(self.notes)
        val.update(context or {})
        params = {"against": "torch", "backend": backend, "tolerance": tol.to_dict()}
        step = Step("check", params, {**summary(val), **(context or {})}, round(time.perf_counter() - t0, 3))
        return Checked(check, val, step)


def _rows(outputs: Mapping[str, Any]) -> int:
    first = next(iter(outputs.values()))
    return int(first.shape[0]) if first.ndim else 1


def reference_outputs(
    src: ModelSource, feeds: list[dict], out_names: Sequence[str]
) -> tuple[list[dict], list[dict], list[str]]:
    """PyTorch outputs for each batch; random batches whose shapes the model itself rejects are dropped."""
    kept, refs, notes = [], [], []
    for i, f in enumerate(feeds):
        try:
            refs += torch_outputs(src.model, [f], out_names)
        # What models raise for shapes they do not support; anything else is a real bug and propagates.
        except (RuntimeError, ValueError, IndexError, AssertionError, TypeError) as exc:
            if i == 0:
                raise ConversionError(
                    f"the model fails on its example inputs: {type(exc).__name__}: {exc}"
                ) from exc
            shapes = {k: list(v.shape) for k, v in f.items()}
            notes.append(
                f"PyTorch itself rejects input shapes {shapes} ({type(exc).__name__}); not checked on them"
            )
            log.warning(notes[-1])
            continue
        kept.append(f)
    return kept, refs, notes


def summary(val: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of a validation record (those it has)."""
    return {k: val[k] for k in _SUMMARY_KEYS if k in val}
