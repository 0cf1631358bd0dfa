"""Warm-up at load: a few calls on representative inputs, so the first real request does not pay for
first-call allocation, kernel selection or compilation (``Predictor.load(..., warmup=N)``).

Representative means, in order of preference: drawn from the reference statistics the manifest records
(each input's mean, standard deviation, range and usual shape: :mod:`infership.runtime.statistics`); for an
image model without them, a synthetic image through the artifact's own preprocessing; else random values of
the input's dtype. Batch 1 (or the model's static batch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .errors import InferenceError
from .manifest import Manifest
from .spec import TensorSpec, random_array
from .statistics import REFERENCE_KEY

__all__ = ["run_warmup", "warmup_inputs"]

log = logging.getLogger(__name__)

#: Size used for a dynamic non-batch axis that nothing records (a short text, a small image side).
DEFAULT_DYNAMIC_SIZE = 16


class Loaded(Protocol):
    """What warm-up needs of a Predictor (the Predictor calls in here while it loads)."""

    inputs: Sequence[TensorSpec]

    @property
    def manifest(self) -> Manifest: ...

    def predict(self, inputs: Any) -> dict[str, np.ndarray]: ...


def warmup_inputs(predictor: Loaded, count: int, *, seed: int = 0) -> list[Any]:
    """``count`` distinct inputs for ``predictor`` (arguments of ``predict``).

    Args:
        predictor: The loaded Predictor.
        count: How many.
        seed: Random seed.

    Returns:
        Feeds (name → array), or raw images for an image model without reference statistics.
    """
    rng = np.random.default_rng(seed)
    manifest = predictor.manifest
    reference = (manifest.extra.get(REFERENCE_KEY) or {}).get("inputs") or {}
    pre = manifest.preprocessing
    if not reference and pre is not None and len(predictor.inputs) == 1:
        side = _image_side(pre, predictor.inputs[0])
        return [rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8) for _ in range(count)]
    return [
        {spec.name: _draw(spec, reference.get(spec.name), rng) for spec in predictor.inputs}
        for _ in range(count)
    ]


def run_warmup(predictor: Loaded, count: int) -> None:
    """Run ``count`` calls of ``predictor.predict`` on :func:`warmup_inputs`.

    Raises:
        InferenceError: A warm-up call failed (the message names the generated input shapes).
    """
    for item in warmup_inputs(predictor, count):
        try:
            predictor.predict(item)
        except InferenceError as exc:
            shapes = {k: list(v.shape) for k, v in item.items()} if isinstance(item, dict) else "an image"
            raise InferenceError(f"warm-up call failed on generated inputs {shapes}: {exc}") from exc
    log.info("warmed up %s with %d call(s)", predictor.manifest.name, count)


def _image_side(pre: Any, spec: TensorSpec) -> int:
    if pre.crop is not None:
        return int(max(pre.crop))
    if isinstance(pre.resize, int):
        return pre.resize
    if isinstance(pre.resize, tuple):
        return int(max(pre.resize))
    fixed = [d for d in spec.shape[1:] if isinstance(d, int) and d > 4]
    return max(fixed) if fixed else 224


def _draw(spec: TensorSpec, ref: dict[str, Any] | None, rng: np.random.Generator) -> np.ndarray:
    recorded = list(ref.get("shape") or []) if ref else []
    shape = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            shape.append(dim)
        elif axis == 0:
            shape.append(1)
        elif len(recorded) == spec.rank - 1 and isinstance(recorded[axis - 1], int):
            shape.append(recorded[axis - 1])
        else:
            shape.append(DEFAULT_DYNAMIC_SIZE)
    if not ref or ref.get("mean") is None:
        return random_array(spec.dtype, shape, rng)
    kind = np.dtype(spec.dtype).kind
    lo, hi = ref.get("min"), ref.get("max")
    if kind in "iu":
        return rng.integers(int(lo or 0), int(hi or 1) + 1, size=shape).astype(spec.dtype)
    if kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    a = rng.normal(ref["mean"], ref.get("std") or 1.0, size=shape)
    if lo is not None and hi is not None:
        a = np.clip(a, lo, hi)
    return a.astype(spec.dtype)
