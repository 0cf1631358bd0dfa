"""Adapters from a :class:`CalibrationSet` to what ONNX Runtime and NNCF consume.

ONNX Runtime wants a one-shot ``CalibrationDataReader`` with ``get_next``/``rewind``; NNCF wants an
``nncf.Dataset`` over a re-iterable source. Both are built here, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .dataset import CalibrationSet


def to_ort_reader(cset: CalibrationSet) -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``cset`` (``rewind()`` starts over).

    Args:
        cset: A set bound to the model's inputs (:meth:`CalibrationSet.bind`).

    Returns:
        The reader; ``len(reader)`` is the number of batches.
    """
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] | None = None
            self.batches_read = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._it is None:
                self._it = iter(cset)
            batch = next(self._it, None)
            if batch is not None:
                self.batches_read += 1
            return batch

        def rewind(self) -> None:
            self._it = None

        def __len__(self) -> int:
            return cset.num_batches

    return _Reader()


def to_nncf_dataset(cset: CalibrationSet) -> Any:
    """An ``nncf.Dataset`` over ``cset`` with one sample per item (NNCF's statistics assume batch 1).

    NNCF re-iterates the set for each statistics pass; every pass starts from the first sample.

    Args:
        cset: A set bound to the model's inputs (:meth:`CalibrationSet.bind`).
    """
    import nncf

    return nncf.Dataset(cset.with_batch_size(1).with_progress(None))
