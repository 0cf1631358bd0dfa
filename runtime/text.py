"""Text → token inputs at run time, with the tokenizer an artifact carries (:class:`~infership.runtime.manifest.Tokenizer`).

Tokenizing uses the ``tokenizers`` library only (a Rust tokenizer with Python bindings), so a process that
predicts imports neither torch nor ``transformers``. The tokenizer file is hash-checked like a model file
before it is read, and the settings recorded at export (maximum length, truncation, padding side and id)
replace whatever padding or truncation the file itself was saved with: a ``tokenizer.json`` saved with
fixed-length padding (many are, to 128) would otherwise pad every input to that length.

Each batch is padded to its longest input, never to the maximum length: a transformer's cost grows with
the sequence length, and padding is pure waste. Pairs of texts (``("query", "passage")``, for rerankers)
are encoded as pairs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError, IntegrityError, InvalidInputError
from .integrity import confined, sha256_file
from .manifest import Tokenizer

__all__ = ["TextEncoder", "is_text"]

log = logging.getLogger(__name__)

#: A text, or a pair of texts (encoded together, for cross-encoders).
Text = str | tuple[str, str]


def is_text(value: Any) -> bool:
    """Whether ``value`` is text input: a string, a pair of strings, or a non-empty list of those."""
    if _one_text(value):
        return True
    return isinstance(value, list) and bool(value) and all(_one_text(v) for v in value)


def _one_text(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value)


class TextEncoder:
    """Encodes texts into the model's token inputs with the artifact's tokenizer and settings.

    Thread-safe: the settings are applied once when the tokenizer is loaded, and encoding does not change
    the tokenizer.

    Args:
        record: The manifest's tokenizer record.
        root: The artifact directory its files are relative to.

    Raises:
        BackendUnavailable: The ``tokenizers`` package is not installed (it is an ``InfershipError``).
        IntegrityError: The tokenizer file is missing or differs from its recorded hash.
        ArtifactError: The file is not a tokenizer ``tokenizers`` can read.
    """

    def __init__(self, record: Tokenizer, root: str | Path) -> None:
        self.record = record
        entry = record.files[0]
        path = confined(Path(root), entry.path, what="tokenizer file")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise IntegrityError(
                f"tokenizer file {entry.path}: sha256 {digest[:12]}… differs from the manifest's "
                f"{entry.sha256[:12]}… (stale or tampered file; rebuild the artifact)"
            )
        tokenizers = _import_tokenizers()
        try:
            tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception for a bad file: translated here
            raise ArtifactError(f"tokenizer file {entry.path} cannot be read: {exc}") from exc
        tok.no_padding()
        tok.no_truncation()
        if record.truncation:
            tok.enable_truncation(max_length=record.max_length)
        tok.enable_padding(
            direction=record.padding_side, pad_id=record.pad_id, pad_token=record.pad_token, length=None
        )
        self._tok = tok
        self._fields = dict(record.inputs)

    @property
    def max_length(self) -> int:
        """The longest input the model takes, in tokens."""
        return self.record.max_length

    def encode(self, texts: Text | Sequence[Text]) -> dict[str, np.ndarray]:
        """Token inputs for ``texts``, as int64 arrays ``[batch, longest]`` keyed by model input name.

        Args:
            texts: A text, a pair of texts, or a list of them (one row each).

        Returns:
            Model input name → array (``input_ids``, ``attention_mask``, ``token_type_ids``...).

        Raises:
            InvalidInputError: An empty list, something other than text, or a text longer than
                ``max_length`` tokens when truncation is off.
        """
        items = [texts] if _one_text(texts) else list(texts)  # type: ignore[arg-type]
        if not items:
            raise InvalidInputError("no texts given")
        if not all(_one_text(t) for t in items):
            bad = next(t for t in items if not _one_text(t))
            raise InvalidInputError(f"expected texts (str, or a pair of str), got {type(bad).__name__}")
        encodings = self._tok.encode_batch(items)
        if not self.record.truncation:
            longest = max(len(e.ids) for e in encodings)
            if longest > self.record.max_length:
                raise InvalidInputError(
                    f"a text is {longest} tokens long, more than the model's {self.record.max_length} "
                    "(the artifact's tokenizer does not truncate)"
                )
        return {
            name: np.asarray([getattr(e, field) for e in encodings], dtype=np.int64)
            for name, field in self._fields.items()
        }

    def lengths(self, texts: Sequence[Text]) -> np.ndarray:
        """The number of tokens of each text (special tokens included, after truncation)."""
        if not texts:
            return np.zeros(0, dtype=np.int64)
        return np.asarray([int(sum(e.attention_mask)) for e in self._tok.encode_batch(list(texts))])

    def token_feeds(self, lengths: Sequence[int], *, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
        """Token inputs for rows of the given lengths without any text (benchmarks): random ids, padded to
        the longest row with this tokenizer's padding.

        Args:
            lengths: The length of each row, in tokens (``batch`` rows per length when one length is given).
            batch: Rows when ``lengths`` has one entry.
            seed: Seed of the random ids.

        Raises:
            InvalidInputError: A length below 1 or above ``max_length``.
        """
        return token_feeds(
            self._fields,
            list(lengths) * batch if len(lengths) == 1 else list(lengths),
            vocab_size=self._tok.get_vocab_size(with_added_tokens=True),
            max_length=self.record.max_length,
            pad_id=self.record.pad_id,
            padding_side=self.record.padding_side,
            seed=seed,
        )


def token_feeds(
    inputs: Mapping[str, str],
    lengths: Sequence[int],
    *,
    vocab_size: int,
    max_length: int | None = None,
    pad_id: int = 0,
    padding_side: str = "right",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Token inputs for rows of given lengths: random token ids (1..vocab_size-1), attention mask of ones
    over each row's length, type ids 0; padded to the longest row on ``padding_side``.

    Args:
        inputs: Model input name → encoding field (``ids``, ``attention_mask``, ``type_ids``).
        lengths: Tokens per row, one entry per row.
        vocab_size: Ids are drawn below it.
        max_length: Refuse longer rows.
        pad_id: Id of padding positions.
        padding_side: ``right`` or ``left``.
        seed: Seed of the random ids.

    Raises:
        InvalidInputError: No rows, or a length out of range.
    """
    if not lengths:
        raise InvalidInputError("token feeds need at least one row")
    bad = [n for n in lengths if n < 1 or (max_length is not None and n > max_length)]
    if bad:
        raise InvalidInputError(f"token lengths must be in 1..{max_length or 'any'}, got {sorted(set(bad))}")
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for row, n in enumerate(lengths):
        cols = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[row, cols] = rng.integers(1, max(2, vocab_size), size=n)
        mask[row, cols] = 1
    values = {"ids": ids, "attention_mask": mask, "type_ids": np.zeros_like(ids)}
    return {name: values[field] for name, field in inputs.items()}


def _import_tokenizers() -> Any:
    from .errors import BackendUnavailable

    try:
        import tokenizers
    except ImportError as exc:
        raise BackendUnavailable(
            "this artifact takes text: tokenizing needs the tokenizers package (pip install 'infership[text]')"
        ) from exc
    return tokenizers


def encoder_for(manifest: Any, root: str | Path) -> TextEncoder | None:
    """The artifact's :class:`TextEncoder`, or ``None`` when its manifest records no tokenizer."""
    return TextEncoder(manifest.tokenizer, root) if manifest.tokenizer is not None else None


class LazyTextEncoder:
    """Loads the artifact's :class:`TextEncoder` on first use (once, under a lock)."""

    def __init__(self, record: Tokenizer, root: str | Path) -> None:
        self._record, self._root = record, Path(root)
        self._lock = threading.Lock()
        self._encoder: TextEncoder | None = None

    def get(self) -> TextEncoder:
        """The encoder, loaded on the first call."""
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = TextEncoder(self._record, self._root)
        return self._encoder
