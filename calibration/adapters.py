"""Adapters from a :class:`CalibrationSet` to what ONNX Runtime and NNCF consume.

ONNX Runtime wants a one-shot ``CalibrationDataReader`` with ``get_next``/``rewind``; NNCF wants an
``nncf.Dataset`` over a re-iterable source. Both are built here, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .dataset import CalibrationSet


def to_ort_reader(cset: CalibrationSet, *, chunk_batches: int | None = None) -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``cset`` (``rewind()`` starts over).

    With ``chunk_batches``, the reader pauses (``get_next`` returns ``None``) after every ``chunk_batches``
    batches until ``resume()`` is called, so a calibrator can be fed in bounded chunks while one pass over
    the set (and one progress bar) runs: ``while not reader.exhausted: calibrator.collect_data(reader);
    reader.resume()``. ONNX Runtime's calibrators keep every batch's intermediate outputs until
    ``collect_data`` returns; chunking bounds that memory.

    Args:
        cset: A set bound to the model's inputs (:meth:`CalibrationSet.bind`).
        chunk_batches: Batches per chunk, or ``None`` for one chunk.

    Returns:
        The reader; ``len(reader)`` is the number of batches, ``reader.batches_read`` counts them.
    """
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches_read = 0
            self.rewind()

        def rewind(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(cset)
            self._ahead = next(self._it, None)  # one batch of lookahead, so `exhausted` is exact
            self._in_chunk = 0

        @property
        def exhausted(self) -> bool:
            return self._ahead is None

        def resume(self) -> None:
            self._in_chunk = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._ahead is None or (chunk_batches is not None and self._in_chunk >= chunk_batches):
                return None
            batch, self._ahead = self._ahead, next(self._it, None)
            self._in_chunk += 1
            self.batches_read += 1
            return batch

        def __len__(self) -> int:
            return cset.num_batches

    return _Reader()


def to_nncf_dataset(cset: CalibrationSet) -> Any:
    """An ``nncf.Dataset`` over ``cset`` with one sample per item (NNCF's statistics assume batch 1), or one
    full batch per item for a model with a fixed batch size.

    NNCF re-iterates the set for each statistics pass; every pass starts from the first sample.

    Args:
        cset: A set bound to the model's inputs (:meth:`CalibrationSet.bind`).
    """
    import nncf

    items = cset if cset.drop_last else cset.with_batch_size(1)
    return nncf.Dataset(items.with_progress(None))
