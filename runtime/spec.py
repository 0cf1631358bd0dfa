"""Tensor specifications and the checks run on every input before a model sees it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInputError

Dim = int | str | None
"""One dimension: a fixed size (int >= 0), or a symbolic one (a name such as ``"batch"``; ``None`` if
unnamed)."""


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no bound known, rely on MemoryError
        return 1 << 62


def _available_memory() -> int:
    """MemAvailable (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return MAX_ALLOCATION_BYTES


#: No array infership allocates for an input (a contiguous copy, a cast, a random feed) may exceed this:
#: a copy larger than the machine's memory can never succeed, and trying can get the process killed.
MAX_ALLOCATION_BYTES = _physical_memory()
# Below this an allocation is not worth a look at /proc/meminfo.
_SMALL_ALLOCATION = 256 << 20


def check_allocation(shape: Sequence[int], dtype: np.dtype, what: str) -> None:
    """Raise InvalidInputError before allocating an array of ``shape`` and ``dtype`` that cannot fit in
    the memory available now (a broadcast view or an expanded tensor declares a size it does not hold).

    Args:
        shape: The array's shape.
        dtype: Its element type.
        what: What is being allocated, for the message (e.g. ``"input 'x'"``).
    """
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * np.dtype(dtype).itemsize
    if nbytes <= _SMALL_ALLOCATION:
        return
    available = min(MAX_ALLOCATION_BYTES, _available_memory())
    if nbytes > available:
        raise InvalidInputError(
            f"{what}: an array of shape {list(shape)} and dtype {np.dtype(dtype).name} needs "
            f"{nbytes / 2**30:.3g} GiB, more than the memory available ({available / 2**30:.3g} GiB); "
            "a broadcast or expanded view takes its full size once copied"
        )


def _dim(d: Any, name: str) -> Dim:
    """One declared dimension, validated: an int >= 0, a non-empty name, or None."""
    if d is None or isinstance(d, str):
        return d or None
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
        raise InvalidInputError(
            f"tensor {name!r}: a dimension must be an int >= 0, a name or null, got {d!r} ({type(d).__name__})"
        )
    if d < 0:
        raise InvalidInputError(
            f"tensor {name!r}: dimension {int(d)} is negative (a dynamic axis is a name or null)"
        )
    return int(d)


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
            ``None`` for an unnamed dynamic one. ``None`` instead of a tuple when the model declares no
            shape at all (unknown rank: any rank is accepted); the spec then has ``shape == ()`` and
            ``ranked`` false.
        ranked: Whether the rank is known (set from ``shape=None``; rarely given directly).

    Raises:
        InvalidInputError: An unknown dtype, a negative or non-integer dimension.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    ranked: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise InvalidInputError(f"a tensor name must be a string, got {self.name!r}")
        try:
            np_dtype = np.dtype(self.dtype)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"tensor {self.name!r}: unknown dtype {self.dtype!r} (expected a numpy dtype name such as float32)"
            ) from exc
        if np_dtype.kind not in "biufcO":  # bfloat16, float8 (ml_dtypes), structured, datetime, bytes...
            raise InvalidInputError(
                f"tensor {self.name!r}: dtype {np_dtype.name} is not one infership feeds or returns "
                "(bool, integers, floats, complex, or object for strings)"
            )
        if self.shape is None:
            object.__setattr__(self, "shape", ())
            object.__setattr__(self, "ranked", False)
        elif isinstance(self.shape, (str, bytes)) or not isinstance(self.shape, Sequence):
            raise InvalidInputError(
                f"tensor {self.name!r}: shape must be a list of dimensions or null, got {self.shape!r}"
            )
        object.__setattr__(self, "dtype", np_dtype.name)
        object.__setattr__(self, "shape", tuple(_dim(d, self.name) for d in self.shape))
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
        if not self.ranked:
            return "[any rank]"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape) if self.ranked else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        """Read ``{"name", "dtype", "shape"}`` (``shape`` null for an unknown rank).

        Raises:
            InvalidInputError: Missing keys or values of the wrong type.
        """
        if not isinstance(data, dict):
            raise InvalidInputError(f"a tensor spec must be an object, got {type(data).__name__}")
        missing = {"name", "dtype", "shape"} - set(data)
        if missing:
            raise InvalidInputError(f"a tensor spec needs name, dtype and shape; {sorted(missing)} missing")
        if not isinstance(data["name"], str) or not isinstance(data["dtype"], str):
            raise InvalidInputError(f"tensor spec {data!r}: name and dtype must be strings")
        return cls(name=data["name"], dtype=data["dtype"], shape=data["shape"])

    def check_shape(self, shape: Sequence[int], *, check_batch: bool = True) -> None:
        """Raise InvalidInputError unless ``shape`` has this spec's rank and every fixed size.

        Args:
            shape: The shape of an array or tensor (numpy, torch, any device).
            check_batch: Whether a fixed axis 0 must match exactly.
        """
        if len(shape) != len(self.shape) and self.ranked:
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
            got = value.dtype
            # A byte-swapped array (big-endian data on a little-endian host) holds the same values: swapping
            # is lossless. Its name is the native one ("float32"), so the message says which order it has.
            native = got if got.isnative else got.newbyteorder("=")
            same = native == self._np_dtype  # type: ignore[attr-defined]
            if not same and native.name not in _SAFE_CASTS.get(self.dtype, ()):
                order = "" if got.isnative else f" ({'big' if got.byteorder == '>' else 'little'}-endian)"
                raise InvalidInputError(
                    f"input {self.name!r}: expected dtype {self.dtype}, got {native.name}{order} "
                    f"(only lossless casts are done automatically; convert it explicitly)"
                )
            return self._copy(value)
        if not value.flags.c_contiguous:
            return self._copy(value)
        return value

    def _copy(self, value: np.ndarray) -> np.ndarray:
        """A C-contiguous copy in this spec's dtype, refused before allocating when it cannot fit."""
        check_allocation(value.shape, self._np_dtype, f"input {self.name!r}")  # type: ignore[attr-defined]
        try:
            return np.ascontiguousarray(value, dtype=self._np_dtype)  # type: ignore[attr-defined]
        except MemoryError as exc:
            raise InvalidInputError(
                f"input {self.name!r}: not enough memory for a contiguous copy of shape {list(value.shape)}"
            ) from exc


def random_array(dtype: str, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A random array for benchmarks and tuning: floats standard normal, integers and booleans 0 or 1."""
    check_allocation(shape, np.dtype(dtype), "a random input")
    kind = np.dtype(dtype).kind
    if kind == "f":
        return rng.standard_normal(tuple(shape), dtype=np.float32).astype(dtype)
    if kind == "b":
        return rng.integers(0, 2, size=tuple(shape)).astype(bool)
    return rng.integers(0, 2, size=tuple(shape)).astype(dtype)


def variable_length(specs: Sequence[TensorSpec]) -> bool:
    """Whether an input has a dynamic axis besides the batch (a text model's sequence)."""
    return any(axis > 0 for spec in specs if spec.ranked for axis in spec.dynamic_axes)


def specs_to_list(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    return [s.to_dict() for s in specs]


def specs_from_list(items: Sequence[dict[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.from_dict(d) for d in items)
