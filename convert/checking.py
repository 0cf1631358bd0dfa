"""Checking candidate variants against PyTorch through the backends users will load them with.

Each candidate is opened with ``Predictor.load`` on its backend (``ort-cpu``, ``openvino``, ``torch``) from a
throwaway artifact in the build's temporary directory, run on the same input batches as the PyTorch
reference, and compared with :func:`~infership.convert.validate.compare_outputs`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from infership.runtime import (
    Artifact,
    ConversionError,
    InfershipError,
    Manifest,
    Predictor,
    Step,
    ValidationError,
    Variant,
)
from infership.runtime.artifact import file_entry

from .source import ModelSource
from .validate import Tolerance, compare_outputs, torch_outputs

log = logging.getLogger(__name__)


class Rejected(Exception):
    """A candidate variant failed its check; carries the figures."""

    def __init__(self, variant_id: str, validation: dict[str, Any]) -> None:
        super().__init__(f"disagrees with PyTorch beyond tolerance: {'; '.join(validation['failures'])}")
        self.variant_id = variant_id
        self.validation = validation


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
        self, vid: str, fmt: str, precision: str, files: Sequence[str], backend: str, tol: Tolerance
    ) -> tuple[dict[str, Any], Step]:
        """Load the candidate through ``backend`` and compare it with PyTorch: ``(validation, check step)``."""
        t0 = time.perf_counter()
        entries = tuple(file_entry(self.root, rel) for rel in files)
        variant = Variant(id=vid, format=fmt, precision=precision, files=entries)
        artifact = Artifact(self.root, replace(self.base, variants=(variant,)))
        opts = {"cache_dir": self.cache} if backend == "openvino" else {}
        try:
            with Predictor.load(artifact, backend=backend, variant=vid, **opts) as p:
                got = [p.predict(f) for f in self.feeds]
        except InfershipError as exc:
            raise ConversionError(f"{vid} could not run on {backend}: {exc}") from exc
        val = compare_outputs(self.refs, got, tolerance=tol)
        real_rows = sum(_rows(r) for r in self.refs[len(self.refs) - self.n_real :]) if self.n_real else 0
        val.update(reference="torch eager (the source model)", backend=backend, real_samples=real_rows)
        val["random_samples"] = val["samples"] - real_rows
        val["shapes"] = [{k: list(v.shape) for k, v in f.items()} for f in self.feeds[:8]]
        if self.n_real:
            real = compare_outputs(self.refs[-self.n_real :], got[-self.n_real :], tolerance=tol)
            val["real"] = summary(real)
        if self.notes:
            val["notes"] = list(self.notes)
        wrong = [
            f"{spec.name}: returned {got[0][spec.name].dtype}, the manifest says {spec.dtype}"
            for spec in self.base.outputs
            if spec.name in got[0] and got[0][spec.name].dtype.name != spec.dtype
        ]
        if wrong:
            val["failures"] = [*val["failures"], *wrong]
            val["passed"] = False
        return val, check_step(val, round(time.perf_counter() - t0, 3))


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


def check_step(val: dict[str, Any], seconds: float | None = None) -> Step:
    params = {"against": "torch", "backend": val.get("backend"), "tolerance": val["tolerance"]}
    return Step("check", params, summary(val), seconds)


def summary(val: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "passed",
        "max_abs_err",
        "max_rel_err",
        "cosine_min",
        "sqnr_db",
        "top1_agreement",
        "nonfinite",
        "samples",
    )
    return {k: val[k] for k in keys if k in val}


def validation_error(what: str, val: dict[str, Any], extra: str = "") -> ValidationError:
    s = summary(val)
    figures = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items() if k != "passed"
    )
    msg = f"{what} disagrees with PyTorch beyond tolerance: {'; '.join(val['failures'])} ({figures})"
    if extra:
        msg += f"; {extra}"
    err = ValidationError(msg)
    err.validation = val  # type: ignore[attr-defined]
    return err
