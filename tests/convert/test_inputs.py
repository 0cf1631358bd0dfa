"""Validation data for build checks goes through the calibration layer: batches kept, samples given a batch
axis, floats cast, anything that does not fit refused by name (numpy and Pillow only, fast)."""

from __future__ import annotations

import numpy as np
import pytest
from infership.convert.inputs import real_feeds
from infership.runtime import InvalidInputError, Preprocessing, TensorSpec

X = TensorSpec("x", "float32", ("batch", 1, 8, 8))
EXTRA = TensorSpec("extra", "float32", ("batch", 4))


def test_batches_are_kept_and_a_sample_gets_its_batch_axis():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 1, 8, 8)), rng.random((1, 8, 8))  # float64: cast to the input's float32
    feeds = real_feeds([a, b], [X], None)
    assert [f["x"].shape for f in feeds] == [(5, 1, 8, 8), (1, 1, 8, 8)]
    assert all(f["x"].dtype == np.float32 and list(f) == ["x"] for f in feeds)
    np.testing.assert_allclose(feeds[0]["x"], a.astype(np.float32))
    assert real_feeds(None, [X], None) == [] and real_feeds([], [X], None) == []


def test_mappings_and_array_files(tmp_path):
    rng = np.random.default_rng(1)
    x, e = rng.random((3, 1, 8, 8), dtype=np.float32), rng.random((3, 4), dtype=np.float32)
    feeds = real_feeds([{"x": x, "extra": e, "note": np.zeros(3)}], [X, EXTRA], None)
    assert sorted(feeds[0]) == ["extra", "x"]  # keys the model does not take are left out
    np.savez(tmp_path / "v.npz", x=x, extra=e, labels=np.arange(3))
    np.save(tmp_path / "v.npy", x)
    (from_npz,) = real_feeds([tmp_path / "v.npz"], [X, EXTRA], None)
    np.testing.assert_array_equal(from_npz["extra"], e)
    (from_npy,) = real_feeds([str(tmp_path / "v.npy")], [X], None)
    np.testing.assert_array_equal(from_npy["x"], x)


def test_images_are_preprocessed_and_batched():
    pre = Preprocessing(input="x", channels="L", resize=(8, 8), mean=(0.0,), std=(1.0,))
    images = [np.full((12, 10, 3), v, dtype=np.uint8) for v in range(0, 250, 25)]  # ten HWC images
    feeds = real_feeds(images, [X], pre)
    assert [f["x"].shape for f in feeds] == [(8, 1, 8, 8), (2, 1, 8, 8)]
    assert feeds[1]["x"].max() == pytest.approx(225 / 255, abs=0.01)


@pytest.mark.parametrize(
    ("item", "specs", "message"),
    [
        (np.zeros((2, 1, 8, 8), np.uint8), [X], "validation item 0: .*expects float32.*uint8 \\(raw pixels"),
        (np.zeros((2, 8, 8, 1, 1), np.float32), [X], "rank 4"),
        (np.zeros((2, 1, 8, 9), np.float32), [X], "size 8 on axis 3"),
        ({"x": np.zeros((2, 1, 8, 8))}, [X, EXTRA], "lacks input\\(s\\) \\['extra'\\]"),
        (np.zeros((2, 1, 8, 8), np.float32), [X, EXTRA], "2 inputs: give validation batches as mappings"),
        ("missing.npy", [X], "validation data: .*not found"),
    ],
)
def test_what_does_not_fit_is_refused_by_name(item, specs, message):
    with pytest.raises(InvalidInputError, match=message):
        real_feeds([item], specs, None)
