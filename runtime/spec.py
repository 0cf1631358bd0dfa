"""Tensor specifications and the checks run on every input before a model sees it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInputError

Dim = int | str | None
"""One dimension: a fixed size (int), or a symbolic one (a name such as ``"batch"``; ``None`` if unnamed)."""

# Casts that cannot lose information; anything else is refused rather than silently rounded.
_SAFE_CASTS: dict[str, frozenset[str]] = {
    "float32": frozenset({"float16", "bool", "int8", "uint8", "int16", "uint16"}),
    "float16": frozenset({"bool", "int8", "uint8"}),
    "float64": frozenset({"float32", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32"}),
    "int64": frozenset({"int8", "uint8", "int16", "uint16", "int32", "uint32", "bool"}),
    "int32": frozenset({"int8", "uint8", "int16", "uint16", "bool"}),
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of one model input or output.

    Args:
        name: The tensor's name in the model graph.
        dtype: A numpy dtype name such as ``"float32"``.
        shape: One entry per axis: an int for a fixed size, a string for a named symbolic size, or
            ``None`` for an unnamed dynamic one.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        np_dtype = np.dtype(self.dtype)
        object.__setattr__(self, "dtype", np_dtype.name)
        object.__setattr__(self, "shape", tuple(self.shape))
        # Hot-path helpers (not dataclass fields): ``ndarray.dtype.name`` is computed in Python by numpy
        # and costs microseconds per call, so checks compare dtype objects instead.
        object.__setattr__(self, "_np_dtype", np_dtype)
        object.__setattr__(
            self, "_fixed", tuple((i, d) for i, d in enumerate(self.shape) if isinstance(d, int))
        )

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def dynamic_axes(self) -> dict[int, str | None]:
        """Axis index → symbolic name for every axis that is not fixed."""
        return {i: d for i, d in enumerate(self.shape) if not isinstance(d, int)}

    @property
    def batch_size(self) -> int | None:
        """The fixed batch size (axis 0), or ``None`` if the batch is dynamic or the tensor is a scalar."""
        if not self.shape or not isinstance(self.shape[0], int):
            return None
        return self.shape[0]

    def shape_str(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=tuple(data["shape"]))

    def check_shape(self, shape: Sequence[int], *, check_batch: bool = True) -> None:
        """Raise InvalidInputError unless ``shape`` has this spec's rank and every fixed size.

        Args:
            shape: The shape of an array or tensor (numpy, torch, any device).
            check_batch: Whether a fixed axis 0 must match exactly.
        """
        if len(shape) != len(self.shape):
            raise InvalidInputError(
                f"input {self.name!r}: expected rank {self.rank} with shape {self.shape_str()}, "
                f"got rank {len(shape)} with shape {list(shape)}"
            )
        for axis, want in self._fixed:  # type: ignore[attr-defined]
            if want != shape[axis] and (axis or check_batch):
                raise InvalidInputError(
                    f"input {self.name!r}: expected size {want} on axis {axis} (shape {self.shape_str()}), "
                    f"got shape {list(shape)}"
                )

    def check(self, value: np.ndarray, *, check_batch: bool = True) -> np.ndarray:
        """Return ``value`` as a C-contiguous array of this spec's dtype, or raise InvalidInputError.

        The array is copied only when it must be (a safe dtype cast or a non-contiguous layout).

        Args:
            value: The array to check.
            check_batch: Whether a fixed axis 0 must match exactly. The Predictor turns this off because it
                splits and pads batches itself.
        """
        self.check_shape(value.shape, check_batch=check_batch)
        if value.dtype != self._np_dtype:  # type: ignore[attr-defined]
            got = value.dtype.name
            if got not in _SAFE_CASTS.get(self.dtype, frozenset()):
                raise InvalidInputError(
                    f"input {self.name!r}: expected dtype {self.dtype}, got {got} "
                    f"(only lossless casts are done automatically; convert it explicitly)"
                )
            return np.ascontiguousarray(value, dtype=self._np_dtype)  # type: ignore[attr-defined]
        if not value.flags.c_contiguous:
            return np.ascontiguousarray(value)
        return value


def random_array(dtype: str, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A random array for benchmarks and tuning: floats standard normal, integers and booleans 0 or 1."""
    kind = np.dtype(dtype).kind
    if kind == "f":
        return rng.standard_normal(tuple(shape), dtype=np.float32).astype(dtype)
    if kind == "b":
        return rng.integers(0, 2, size=tuple(shape)).astype(bool)
    return rng.integers(0, 2, size=tuple(shape)).astype(dtype)


def specs_to_list(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    return [s.to_dict() for s in specs]


def specs_from_list(items: Sequence[dict[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.from_dict(d) for d in items)
