"""Example inputs for export, and the input batches the converted model is checked on.

Random batches vary every dynamic axis (batch sizes 1, 3, 2, 4...; other dynamic axes alternate between
the example's size and 1.5× it), so a graph that silently froze a dimension fails its check. Real inputs —
arrays, ``.npy``/``.npz`` files, or images put through the artifact's preprocessing — are checked as well
when given.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from infership.calibration import (
    CalibrationSet,
    from_images,
    from_numpy,
    is_image_like,
    load_array_file,
    to_numpy,
)
from infership.calibration.dataset import UNNAMED
from infership.runtime import ConversionError, InvalidInputError, Preprocessing, TensorSpec

_BATCH_CYCLE = (1, 3, 2, 4)
_IMAGES_PER_BATCH = 8


def example_tensors(
    example_inputs: Any,
    input_shapes: Sequence[Sequence[int]] | None,
    input_dtypes: Sequence[str] | None,
    *,
    seed: int,
) -> tuple[Any, ...]:
    """The example inputs as a tuple of CPU torch tensors, from given tensors/arrays or from shapes.

    Raises:
        ConversionError: Neither or both of ``example_inputs`` / ``input_shapes`` given, or bad dtypes.
    """
    import torch

    if (example_inputs is None) == (input_shapes is None):
        raise ConversionError("give either example_inputs or input_shapes (CLI: --input-shape 1x3x224x224)")
    if example_inputs is not None:
        items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        out = []
        for i, x in enumerate(items):
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(np.ascontiguousarray(x))
            if not isinstance(x, torch.Tensor):
                raise ConversionError(
                    f"example input {i}: expected a torch tensor or numpy array, got {type(x).__name__}"
                )
            out.append(x.detach().cpu())
        return tuple(out)
    shapes = [tuple(int(d) for d in s) for s in input_shapes]  # type: ignore[union-attr]
    dtypes = list(input_dtypes) if input_dtypes else ["float32"] * len(shapes)
    if len(dtypes) == 1 and len(shapes) > 1:
        dtypes = dtypes * len(shapes)
    if len(dtypes) != len(shapes):
        raise ConversionError(f"{len(shapes)} input shapes but {len(dtypes)} dtypes")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape, dt in zip(shapes, dtypes, strict=True):
        try:
            dtype = getattr(torch, np.dtype(dt).name)
        except (TypeError, AttributeError) as exc:
            raise ConversionError(
                f"unknown input dtype {dt!r}; expected e.g. float32, float16, int64"
            ) from exc
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dtype))
        elif dtype == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            out.append(torch.randint(0, 10, shape, generator=gen, dtype=dtype))
    return tuple(out)


def random_feeds(
    examples: Sequence[Any],
    input_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    *,
    count: int,
    seed: int,
) -> list[dict[str, np.ndarray]]:
    """The example batch, then ``count`` random batches whose dynamic axes vary.

    Float inputs are standard normal; integer inputs are drawn from the example's value range.
    """
    rng = np.random.default_rng(seed)
    arrays = [np.ascontiguousarray(x.numpy()) for x in examples]
    feeds = [dict(zip(input_names, arrays, strict=True))]
    for i in range(count):
        sizes: dict[str, int] = {}
        feed = {}
        for name, x in zip(input_names, arrays, strict=True):
            shape = list(x.shape)
            for axis, symbol in dynamic_axes.get(name, {}).items():
                if symbol not in sizes:
                    base = x.shape[axis]
                    sizes[symbol] = (
                        _BATCH_CYCLE[i % len(_BATCH_CYCLE)]
                        if axis == 0
                        else (base if i % 2 == 0 else base + max(1, base // 2))
                    )
                shape[axis] = sizes[symbol]
            feed[name] = _random_like(rng, x, tuple(shape))
        feeds.append(feed)
    return feeds


def _random_like(rng: np.random.Generator, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if np.issubdtype(x.dtype, np.floating):
        return rng.standard_normal(shape).astype(x.dtype)
    if x.dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 1)
    return rng.integers(lo, hi + 1, shape).astype(x.dtype)


#: Batches of a data source that the build checks compare on (each is also run through torch).
SOURCE_BATCHES = 16


def source_feeds(
    spec: str,
    inputs: Sequence[TensorSpec],
    preprocessing: Preprocessing | None,
    *,
    class_names: Sequence[str] | None = None,
    tokenizer: Any = None,
) -> list[dict[str, np.ndarray]]:
    """The first :data:`SOURCE_BATCHES` batches of a data source — any form ``--calibration`` takes
    (``FILE.py:FUNCTION``, an image folder, ``.npz``, ``digits:test``, …) — as feeds for the build checks,
    bound to the model's inputs (a model with a fixed batch, such as a detector, gets batches of that size).

    Raises:
        InvalidInputError: The source cannot be read or does not fit the model's inputs.
    """
    from infership.calibration import from_spec

    cset = from_spec(spec, preprocessing=preprocessing, class_names=class_names, tokenizer=tokenizer)
    cset = cset.bind(inputs)
    if inputs and inputs[0].batch_size:
        cset = cset.with_batch_size(inputs[0].batch_size)
    return [dict(batch) for batch in itertools.islice(cset, SOURCE_BATCHES)]


def real_feeds(
    data: Sequence[Any] | None,
    inputs: Sequence[TensorSpec],
    preprocessing: Preprocessing | None,
) -> list[dict[str, np.ndarray]]:
    """Turn user-given validation data into feeds, through the calibration data layer.

    Each item is a mapping input name → array (one batch; other keys are ignored), an array (one batch, or
    one sample without the batch axis, for single-input models), a ``.npy`` / ``.npz`` path, or an image
    (path, PIL image, HWC uint8 array) when ``preprocessing`` is set; images are batched together. Every
    item is read as a :class:`~infership.calibration.CalibrationSet` and bound to the model's inputs
    (:meth:`~infership.calibration.CalibrationSet.bind`), which checks it and casts floats to the inputs'
    dtypes exactly as calibration and int8 validation data are.

    Raises:
        InvalidInputError: An item does not fit the model's inputs (names, rank, fixed sizes, dtype kind),
            or a file cannot be read.
    """
    if not data:
        return []
    feeds: list[dict[str, np.ndarray]] = []
    images: list[Any] = []
    for i, item in enumerate(data):
        if is_image_like(item, preprocessing):
            images.append(item)
            continue
        feeds += _bound(_array_set(item, inputs), inputs, f"validation item {i}", whole=True)
    if images:
        assert preprocessing is not None
        cset = from_images(images, preprocessing, batch_size=_IMAGES_PER_BATCH)
        feeds += _bound(cset, inputs, "validation images", whole=False)
    return feeds


def _array_set(item: Any, inputs: Sequence[TensorSpec]) -> CalibrationSet:
    """One validation item (a batch, a sample, or a file of them) as a set of samples."""
    if isinstance(item, (str, os.PathLike)):
        arrays, _ = load_array_file(item, [s.name for s in inputs], what="validation data")
        item = arrays[UNNAMED] if list(arrays) == [UNNAMED] else arrays
    if isinstance(item, Mapping):
        missing = {s.name for s in inputs} - set(item)
        if missing:
            raise InvalidInputError(
                f"validation batch lacks input(s) {sorted(missing)}; it has {sorted(item)}"
            )
        return from_numpy({s.name: to_numpy(item[s.name]) for s in inputs})
    if len(inputs) != 1:
        raise InvalidInputError(
            f"the model has {len(inputs)} inputs: give validation batches as mappings name → array"
        )
    arr = to_numpy(item)
    if arr.ndim == inputs[0].rank - 1:  # one sample without its batch axis
        arr = arr[None]
    return from_numpy(arr)


def _bound(
    cset: CalibrationSet, inputs: Sequence[TensorSpec], what: str, *, whole: bool
) -> list[dict[str, np.ndarray]]:
    """The batches of ``cset`` bound to the model's inputs; ``whole``: as one batch (a batch the user gave),
    unless the model has a fixed batch size."""
    try:
        bound = cset.bind(inputs)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{what}: {exc}") from exc
    if whole and not bound.drop_last:
        bound = bound.with_batch_size(len(bound))
    return list(bound)
