"""Segmentation masks as labels: ``[n, H, W]`` integer arrays sliced along axis 0 with the inputs."""

from __future__ import annotations

import numpy as np
import pytest
from infership.calibration import from_numpy, from_spec
from infership.runtime import InvalidInputError, TensorSpec

SPEC = TensorSpec("x", "float32", ("batch", 3, 16, 16))
X = np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32)
MASKS = np.random.default_rng(1).integers(0, 4, (12, 16, 16)).astype(np.uint8)


def _batches(cset):
    return list(cset.bind([SPEC]).batches())


@pytest.mark.parametrize("key", ["labels", "y"])
def test_npz_masks_are_batched_with_the_inputs(tmp_path, key):
    np.savez(tmp_path / "seg.npz", x=X, **{key: MASKS})
    batches = _batches(from_numpy(tmp_path / "seg.npz", batch_size=5))
    assert [b.labels.shape for b in batches] == [(5, 16, 16), (5, 16, 16), (2, 16, 16)]
    assert all(b.labels.dtype.kind in "iu" for b in batches)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), MASKS)
    np.testing.assert_array_equal(np.concatenate([b.feeds["x"] for b in batches]), X)


def test_subsets_keep_each_mask_with_its_input(tmp_path):
    np.savez(tmp_path / "seg.npz", x=X, labels=MASKS)
    held = from_numpy(tmp_path / "seg.npz", batch_size=4).split(0.5, seed=3)[1]
    for b in _batches(held):
        for x, mask in zip(b.feeds["x"], b.labels, strict=True):
            (i,) = [k for k in range(len(X)) if np.array_equal(X[k], x)]
            np.testing.assert_array_equal(mask, MASKS[i])


def test_a_python_source_returning_inputs_and_masks(tmp_path):
    f = tmp_path / "segdata.py"
    f.write_text(
        "import numpy as np\n"
        "def holdout():\n"
        "    x = np.zeros((7, 3, 16, 16), np.float32)\n"
        "    return x, np.arange(7 * 16 * 16).reshape(7, 16, 16) % 3\n"
    )
    batches = _batches(from_spec(f"{f}:holdout", batch_size=3))
    assert [b.labels.shape for b in batches] == [(3, 16, 16), (3, 16, 16), (1, 16, 16)]
    np.testing.assert_array_equal(batches[2].labels[0], (np.arange(6 * 256, 7 * 256) % 3).reshape(16, 16))


def test_masks_of_another_sample_count_are_refused_naming_both_counts(tmp_path):
    np.savez(tmp_path / "seg.npz", x=X, labels=MASKS[:10])
    with pytest.raises(
        InvalidInputError, match=r"the inputs hold 12 samples but the labels 10 \(.*\[10, 16, 16\]"
    ):
        from_numpy(tmp_path / "seg.npz")
    with pytest.raises(InvalidInputError, match=r"the inputs hold 12 samples but the labels 16"):
        from_numpy(X, labels=MASKS.transpose(1, 0, 2))


def test_float_ragged_and_mismatched_masks_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="integer"):
        from_numpy(X, labels=MASKS.astype(np.float32))
    with pytest.raises(InvalidInputError, match="different shapes"):
        from_numpy(X[:2], labels=[np.zeros((3, 4), np.int64), np.zeros((5, 4), np.int64)])
    np.savez(tmp_path / "a.npz", x=X[:6], labels=MASKS[:6])
    np.savez(tmp_path / "b.npz", x=X[6:], labels=MASKS[6:, :8])
    with pytest.raises(InvalidInputError, match="labels differ in shape per sample"):
        from_numpy(tmp_path)


class _Pairs:
    """A map-style dataset of (image tensor, mask tensor) pairs, as torchvision's segmentation sets give."""

    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(X)

    def __getitem__(self, i):
        import torch

        return torch.from_numpy(X[i]), self.masks[i]


def test_a_torch_dataset_of_images_and_masks():
    import torch
    from infership.calibration import from_torch

    batches = _batches(from_torch(_Pairs(torch.from_numpy(MASKS.astype(np.int64))), batch_size=5))
    assert [b.labels.shape for b in batches] == [(5, 16, 16), (5, 16, 16), (2, 16, 16)]
    np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), MASKS)
    streamed = _batches(from_torch(iter(_Pairs(MASKS)), samples=7, batch_size=4))
    assert [b.labels.shape for b in streamed] == [(4, 16, 16), (3, 16, 16)]
    with pytest.raises(InvalidInputError, match="class indices or integer masks, got a float32"):
        _batches(from_torch(_Pairs(MASKS.astype(np.float32))))
    ragged = [MASKS[0]] * 11 + [MASKS[0, :8]]
    with pytest.raises(InvalidInputError, match="labels differ in shape between items"):
        _batches(from_torch(_Pairs(ragged), batch_size=12))
