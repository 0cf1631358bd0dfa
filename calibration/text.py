"""Text as calibration, validation and benchmark data: sentences tokenized with the artifact's tokenizer.

A ``.txt`` file holds one text per line (blank lines skipped); a ``.tsv`` file holds ``label<TAB>text``
lines (the label an integer class index or a class name of the model) for label agreement and accuracy. A
Python list of strings works the same way through :func:`from_texts`.

Texts are ordered by token length once, when the set is made, so that every batch — of the whole set or
of any subset (:meth:`~infership.calibration.dataset.CalibrationSet.sample` and
:meth:`~infership.calibration.dataset.CalibrationSet.split` keep the source order) — holds texts of similar
length and is padded only to its own longest text. The length distribution is recorded in
:meth:`TextSource.describe`, so the manifest says what lengths the int8 model was calibrated and judged on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from infership.runtime.errors import InvalidInputError
from infership.runtime.text import TextEncoder, token_feeds

from .dataset import CalibrationSet

#: File suffixes read as text data.
TEXT_SUFFIXES = (".txt", ".tsv")
_MAX_TEXT_FILE = 256 << 20


class TextSource:
    """Texts (optionally labelled) as token inputs, shortest first; ``read`` pads to the batch's longest."""

    def __init__(
        self,
        texts: Sequence[str],
        encoder: TextEncoder,
        *,
        labels: np.ndarray | None = None,
        description: dict[str, Any] | None = None,
    ) -> None:
        if not texts:
            raise InvalidInputError("no texts given")
        if not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("texts must be strings")
        lengths = encoder.lengths(list(texts))
        order = np.argsort(lengths, kind="stable")
        self._texts = [texts[i] for i in order]
        self._lengths = lengths[order]
        self._labels = None if labels is None else np.asarray(labels, dtype=np.int64)[order]
        self._encoder = encoder
        self._description = {"kind": "text", **(description or {}), "lengths": length_summary(self._lengths)}

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per text, in source order (shortest first)."""
        return self._lengths

    def read(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        idx = [int(i) for i in indices]
        feeds = self._encoder.encode([self._texts[i] for i in idx])
        return feeds, (self._labels[idx] if self._labels is not None else None)

    def describe(self) -> dict[str, Any]:
        return dict(self._description)


def length_summary(lengths: np.ndarray) -> dict[str, Any]:
    """Token-length distribution: count, min, median, p90, max, mean, and texts per length bucket."""
    if not len(lengths):
        return {"count": 0}
    edges = [8, 16, 32, 64, 128, 256, 512]
    buckets: dict[str, int] = {}
    lo = 1
    for hi in edges:
        n = int(np.count_nonzero((lengths >= lo) & (lengths <= hi)))
        if n:
            buckets[f"{lo}-{hi}"] = n
        lo = hi + 1
    if int(np.count_nonzero(lengths > edges[-1])):
        buckets[f">{edges[-1]}"] = int(np.count_nonzero(lengths > edges[-1]))
    return {
        "count": int(len(lengths)),
        "min": int(lengths.min()),
        "p50": float(np.percentile(lengths, 50)),
        "p90": float(np.percentile(lengths, 90)),
        "max": int(lengths.max()),
        "mean": round(float(lengths.mean()), 2),
        "buckets": buckets,
    }


def from_texts(
    texts: Sequence[str],
    encoder: TextEncoder,
    *,
    labels: Any = None,
    batch_size: int = 16,
    description: dict[str, Any] | None = None,
) -> CalibrationSet:
    """A calibration set of ``texts`` tokenized by ``encoder`` (the artifact's tokenizer).

    Args:
        texts: One text per sample.
        encoder: :class:`~infership.runtime.text.TextEncoder` of the artifact (``TextEncoder(manifest.tokenizer,
            artifact.root)``).
        labels: Class index per text, for label agreement and accuracy.
        batch_size: Texts per batch (each batch padded to its longest).
        description: Provenance recorded in the manifest (the length distribution is added).

    Raises:
        InvalidInputError: No texts, or labels that do not match them.
    """
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(texts),) or labels.dtype.kind not in "iu":
            raise InvalidInputError(f"labels must be {len(texts)} integer class indices, got {labels.shape}")
    desc = description or {"kind": "text", "texts": len(texts)}
    return CalibrationSet(TextSource(texts, encoder, labels=labels, description=desc), batch_size=batch_size)


def read_text_file(
    path: str | os.PathLike[str], *, class_names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray | None]:
    """The texts of a ``.txt`` file (one per line), or the labels and texts of a ``.tsv`` file.

    Raises:
        InvalidInputError: The file is missing, not UTF-8, empty, or a ``.tsv`` line has no known label.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"text data not found: {p}")
    if p.stat().st_size > _MAX_TEXT_FILE:
        raise InvalidInputError(f"{p}: larger than {_MAX_TEXT_FILE >> 20} MiB; give a sample of it")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{p}: not UTF-8 text ({exc})") from exc
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InvalidInputError(f"{p}: no texts (one per line expected)")
    if p.suffix.lower() != ".tsv":
        return lines, None
    names = {n: i for i, n in enumerate(class_names or ())}
    texts, labels = [], []
    for n, line in enumerate(lines, 1):
        label, tab, text = line.partition("\t")
        if not tab or not text.strip():
            raise InvalidInputError(f"{p}:{n}: expected 'label<TAB>text'")
        if label.strip().isdigit():
            labels.append(int(label))
        elif label.strip() in names:
            labels.append(names[label.strip()])
        else:
            known = ", ".join(list(names)[:10]) or "integer class indices"
            raise InvalidInputError(f"{p}:{n}: unknown label {label!r} (known: {known})")
        texts.append(text.strip())
    return texts, np.asarray(labels, dtype=np.int64)


def from_text_file(
    path: str | os.PathLike[str],
    encoder: TextEncoder,
    *,
    class_names: Sequence[str] | None = None,
    batch_size: int = 16,
) -> CalibrationSet:
    """:func:`from_texts` over a ``.txt`` (one text per line) or ``.tsv`` (``label<TAB>text``) file."""
    texts, labels = read_text_file(path, class_names=class_names)
    desc = {"kind": "text", "path": str(path), "texts": len(texts)}
    return from_texts(texts, encoder, labels=labels, batch_size=batch_size, description=desc)


def length_feeds(
    encoder: TextEncoder, lengths: Sequence[int], *, batch: int = 1, seed: int = 0
) -> dict[str, np.ndarray]:
    """Token inputs of given lengths without text, for benchmarks by sequence length (``--seq-len``).

    Args:
        encoder: The artifact's tokenizer (its padding and maximum length apply).
        lengths: One length (``batch`` rows of it), or one length per row (padded to the longest).
        batch: Rows when one length is given.
        seed: Seed of the random ids.

    Raises:
        InvalidInputError: A length outside 1..max_length.
    """
    return encoder.token_feeds(list(lengths), batch=batch, seed=seed)


#: How benchmark batches of token rows are padded (see :func:`token_batches`).
PADDING_STRATEGIES = ("longest", "buckets")
#: Bucket edges (tokens) of the ``buckets`` padding strategy.
DEFAULT_BUCKETS = (8, 16, 32, 64, 128, 256, 512)


def token_batches(
    encoder: TextEncoder,
    lengths: Sequence[int],
    *,
    batch_size: int,
    count: int,
    strategy: str = "longest",
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Benchmark batches of token rows whose lengths follow ``lengths`` (cycled in order): one length for a
    sweep point (``--seq-len 128``), or the lengths of real texts to replay traffic
    (:func:`replay_lengths`).

    Args:
        encoder: The artifact's tokenizer (padding id and side, maximum length).
        lengths: Row lengths in tokens, taken in order and cycled.
        batch_size: Rows per batch.
        count: Batches.
        strategy: ``longest``: each batch padded to its longest row (what ``Predictor.predict`` does with
            texts); ``buckets``: padded up to the next of ``buckets`` (fixed shapes, as static-shape runtimes
            need: OpenVINO reshaped per bucket, TensorRT engines per profile).
        buckets: Bucket edges for ``buckets`` (the tokenizer's maximum closes the last one).
        seed: Seed of the random ids.

    Raises:
        InvalidInputError: No lengths, an unknown strategy, or a length outside 1..max_length.
    """
    if not len(lengths):
        raise InvalidInputError("token batches need at least one length")
    if strategy not in PADDING_STRATEGIES:
        raise InvalidInputError(f"padding strategy must be one of {PADDING_STRATEGIES}, got {strategy!r}")
    if batch_size < 1 or count < 1:
        raise InvalidInputError(f"batch size and count must be >= 1, got {batch_size} and {count}")
    top = encoder.max_length
    edges = sorted({int(b) for b in buckets if 0 < b < top} | {top})
    out = []
    for b in range(count):
        rows = [int(lengths[(b * batch_size + i) % len(lengths)]) for i in range(batch_size)]
        feeds = encoder.token_feeds(rows, seed=seed + b)
        if strategy == "buckets":
            width = next(e for e in edges if e >= max(rows))
            feeds = _pad_to(feeds, width, encoder)
        out.append(feeds)
    return out


def _pad_to(feeds: dict[str, np.ndarray], width: int, encoder: TextEncoder) -> dict[str, np.ndarray]:
    rec = encoder.record
    extra = width - next(iter(feeds.values())).shape[1]
    if extra <= 0:
        return feeds
    side = (0, extra) if rec.padding_side == "right" else (extra, 0)
    return {
        name: np.pad(a, ((0, 0), side), constant_values=rec.pad_id if rec.inputs[name] == "ids" else 0)
        for name, a in feeds.items()
    }


def replay_lengths(path: str | os.PathLike[str], encoder: TextEncoder) -> np.ndarray:
    """The token length of every text of a ``.txt``/``.tsv`` file, in file order (to replay real traffic)."""
    texts, _ = read_text_file(path)
    return encoder.lengths(texts)


__all__ = [
    "TEXT_SUFFIXES",
    "TextSource",
    "from_text_file",
    "from_texts",
    "length_feeds",
    "length_summary",
    "read_text_file",
    "replay_lengths",
    "token_batches",
    "token_feeds",
]
