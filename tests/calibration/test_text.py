"""Text as data: the run-time tokenizer, token rows of given lengths, and padding strategies for benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")


def encoder(tmp_path: Path, *, side: str = "right", truncation: bool = True, max_length: int = 64):
    from infership.runtime.artifact import file_entry
    from infership.runtime.manifest import Tokenizer
    from infership.runtime.text import TextEncoder

    from tests.convert.text_models import _tokenizer_json

    (tmp_path / "tok").mkdir(exist_ok=True)
    _tokenizer_json(tmp_path / "tok" / "tokenizer.json")
    record = Tokenizer(
        files=(file_entry(tmp_path, "tok/tokenizer.json"),),
        inputs={"input_ids": "ids", "attention_mask": "attention_mask"},
        max_length=max_length,
        truncation=truncation,
        padding_side=side,
    )
    return TextEncoder(record, tmp_path)


def test_encode_pads_to_the_longest_on_the_recorded_side(tmp_path: Path) -> None:
    left = encoder(tmp_path, side="left")
    feeds = left.encode(["hello world", "a cat sat on the mat"])
    assert set(feeds) == {"input_ids", "attention_mask"} and feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    pair = left.encode(("hello world", "a cat"))
    assert pair["input_ids"].shape == (1, 7)  # [CLS] hello world [SEP] a cat [SEP]


def test_too_long_text_is_refused_without_truncation(tmp_path: Path) -> None:
    from infership.runtime import InvalidInputError

    strict = encoder(tmp_path, truncation=False, max_length=8)
    with pytest.raises(InvalidInputError, match="more than the model's 8"):
        strict.encode(["the quick brown fox jumps over the lazy dog"])
    with pytest.raises(InvalidInputError, match="expected texts"):
        strict.encode(["fine", 3])  # type: ignore[list-item]


def test_token_batches_longest_and_buckets(tmp_path: Path) -> None:
    from infership.calibration import token_batches
    from infership.runtime import InvalidInputError

    enc = encoder(tmp_path)
    longest = token_batches(enc, [3, 10, 5], batch_size=2, count=3, strategy="longest")
    assert [b["input_ids"].shape for b in longest] == [(2, 10), (2, 5), (2, 10)]
    assert longest[1]["attention_mask"].sum(1).tolist() == [5, 3]  # rows cycle through the lengths
    buckets = token_batches(enc, [3, 10, 5], batch_size=2, count=3, strategy="buckets")
    assert [b["input_ids"].shape[1] for b in buckets] == [16, 8, 16]
    assert buckets[0]["attention_mask"].sum(1).tolist() == [3, 10]
    assert (buckets[0]["input_ids"][0, 3:] == 0).all()  # padding id beyond each row's length
    top = token_batches(enc, [60], batch_size=1, count=1, strategy="buckets")
    assert top[0]["input_ids"].shape == (1, 64)  # the maximum length closes the last bucket
    with pytest.raises(InvalidInputError, match="1..64"):
        token_batches(enc, [65], batch_size=1, count=1)
    with pytest.raises(InvalidInputError, match="padding strategy"):
        token_batches(enc, [5], batch_size=1, count=1, strategy="static")


def test_replay_lengths_reads_real_texts(tmp_path: Path) -> None:
    from infership.calibration import replay_lengths

    enc = encoder(tmp_path)
    path = tmp_path / "traffic.txt"
    path.write_text("hello world\n\na cat sat on the mat\n")
    assert replay_lengths(path, enc).tolist() == [4, 8]
