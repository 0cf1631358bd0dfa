"""Calibration sources: every kind re-iterates, streams, carries labels, and is checked against the model."""

from __future__ import annotations

import numpy as np
import pytest
from infership.calibration import CalibrationSet, from_image_folder, from_numpy, from_spec, from_torch
from infership.runtime import InvalidInputError, Preprocessing, TensorSpec

from tests.calibration.digits import from_digits, load_digits_split

SPEC = TensorSpec("x", "float32", ("batch", 1, 8, 8))


def _stack(cset: CalibrationSet) -> np.ndarray:
    return np.concatenate([b["x"] for b in cset])


def _write_digit_images(root, per_class: int = 3, classes: tuple[int, ...] = (0, 1, 2)) -> None:
    from PIL import Image

    images, labels = load_digits_split("test")
    for c in classes:
        (root / str(c)).mkdir(parents=True)
        for i, idx in enumerate(np.flatnonzero(labels == c)[:per_class]):
            Image.fromarray(np.round(images[idx, 0] * 255).astype(np.uint8), mode="L").save(
                root / str(c) / f"{i}.png"
            )


class TestDigits:
    def test_split_is_fixed_disjoint_and_stratified(self):
        xtr, ytr = load_digits_split("train")
        xte, yte = load_digits_split("test")
        assert len(xtr) == 1437 and len(xte) == 360
        assert (
            xtr.shape[1:] == (1, 8, 8) and xtr.dtype == np.float32 and 0.0 <= xtr.min() and xtr.max() <= 1.0
        )
        xall, yall = load_digits_split("all")
        np.testing.assert_allclose(xtr.sum(0) + xte.sum(0), xall.sum(0), rtol=1e-5)  # a partition of all
        np.testing.assert_array_equal(np.bincount(ytr) + np.bincount(yte), np.bincount(yall))
        np.testing.assert_array_equal(load_digits_split("test")[0], xte)  # fixed
        assert set(np.bincount(yte)) <= {35, 36, 37}

    def test_re_iterable_with_labels_and_bound_names(self):
        cset = from_digits("test", batch_size=50).bind([SPEC])
        first, second = _stack(cset), _stack(cset)
        np.testing.assert_array_equal(first, second)
        assert len(cset) == 360 and cset.num_batches == 8
        labels = np.concatenate([b.labels for b in cset.batches()])
        np.testing.assert_array_equal(labels, load_digits_split("test")[1])

    def test_preprocessing_path_matches_plain_scaling(self):
        pre = Preprocessing(input="x", channels="L", mean=(0.0,), std=(1.0,))
        plain = _stack(from_digits("test").bind([SPEC]))
        via_images = _stack(from_digits("test", preprocessing=pre).bind([SPEC]))
        assert np.max(np.abs(plain - via_images)) < 0.01  # 8-bit rounding of 17 grey levels


class TestNumpy:
    def test_array_mapping_and_labels(self):
        x = np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32)
        cset = from_numpy(x, labels=np.arange(10), batch_size=4).bind([SPEC])
        np.testing.assert_array_equal(_stack(cset), x)
        assert [len(b.labels) for b in cset.batches()] == [4, 4, 2]
        named = from_numpy({"x": x}).bind([SPEC])
        np.testing.assert_array_equal(_stack(named), x)

    def test_npy_is_memory_mapped_and_npz_labels_are_found(self, tmp_path):
        x = np.random.default_rng(1).random((20, 1, 8, 8), dtype=np.float32)
        np.save(tmp_path / "a.npy", x)
        cset = from_numpy(tmp_path / "a.npy")
        assert isinstance(cset.source._parts[0][""], np.memmap)  # only the batches read come into memory
        np.testing.assert_array_equal(_stack(cset.bind([SPEC])), x)
        np.savez(tmp_path / "b.npz", x=x, labels=np.arange(20) % 10)
        withlab = from_numpy(tmp_path / "b.npz").bind([SPEC])
        assert withlab.has_labels
        np.testing.assert_array_equal(
            np.concatenate([b.labels for b in withlab.batches()]), np.arange(20) % 10
        )

    def test_directory_of_files_is_concatenated_in_order_even_for_shuffled_subsets(self, tmp_path):
        x = np.arange(30 * 64, dtype=np.float32).reshape(30, 1, 8, 8)
        for i, part in enumerate(np.split(x, [7, 19])):
            np.save(tmp_path / f"part{i}.npy", part)
        cset = from_numpy(tmp_path).bind([SPEC])
        assert len(cset) == 30
        np.testing.assert_array_equal(_stack(cset), x)
        sub = cset.sample(12, seed=3)
        got = _stack(sub)
        np.testing.assert_array_equal(got, x[list(sub.indices)])

    def test_arrays_of_different_lengths_are_refused(self):
        with pytest.raises(InvalidInputError, match="share their first"):
            from_numpy({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})


class TestImageFolder:
    PRE = Preprocessing(input="x", channels="L", mean=(0.0,), std=(1.0,))

    def test_class_subfolders_give_labels_through_the_preprocessing(self, tmp_path):
        _write_digit_images(tmp_path)
        cset = from_image_folder(tmp_path, self.PRE, batch_size=4).bind([SPEC])
        assert len(cset) == 9 and cset.has_labels
        labels = np.concatenate([b.labels for b in cset.batches()])
        np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
        x = _stack(cset)
        assert x.shape == (9, 1, 8, 8) and x.dtype == np.float32 and x.max() <= 1.0

    def test_class_names_map_folders_to_model_outputs(self, tmp_path):
        _write_digit_images(tmp_path, classes=(3, 7))
        names = [str(i) for i in range(10)]
        cset = from_image_folder(tmp_path, self.PRE, class_names=names)
        assert sorted(set(np.concatenate([b.labels for b in cset.batches()]))) == [3, 7]
        with pytest.raises(InvalidInputError, match="not among the model's labels"):
            from_image_folder(tmp_path, self.PRE, class_names=["cat", "dog"])

    def test_flat_folder_has_no_labels_and_mixed_or_empty_is_refused(self, tmp_path):
        _write_digit_images(tmp_path / "mixed")
        flat = tmp_path / "mixed" / "1"
        assert not from_image_folder(flat, self.PRE).has_labels
        (tmp_path / "mixed" / "stray.png").write_bytes((flat / "0.png").read_bytes())
        with pytest.raises(InvalidInputError, match="both images and subfolders"):
            from_image_folder(tmp_path / "mixed", self.PRE)
        (tmp_path / "empty").mkdir()
        with pytest.raises(InvalidInputError, match="no images found"):
            from_image_folder(tmp_path / "empty", self.PRE)

    def test_from_spec_needs_preprocessing_for_images(self, tmp_path):
        _write_digit_images(tmp_path)
        with pytest.raises(InvalidInputError, match="no preprocessing"):
            from_spec(str(tmp_path))
        assert len(from_spec(str(tmp_path), preprocessing=self.PRE)) == 9
        assert len(from_spec("digits:test")) == 360
        with pytest.raises(InvalidInputError, match="not found"):
            from_spec(str(tmp_path / "nope"))


class TestTorch:
    def test_map_dataset_and_loader_with_labels(self):
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        x, y = load_digits_split("test")
        ds = TensorDataset(torch.from_numpy(x[:40]), torch.from_numpy(y[:40]))
        cset = from_torch(ds).bind([SPEC])
        np.testing.assert_array_equal(_stack(cset), x[:40])
        loader = DataLoader(ds, batch_size=8, shuffle=True)
        from_loader = from_torch(loader).bind([SPEC])
        assert from_loader.batch_size == 8
        # the loader's shuffling is not used: every pass is the same, in dataset order
        np.testing.assert_array_equal(_stack(from_loader), x[:40])
        np.testing.assert_array_equal(np.concatenate([b.labels for b in from_loader.batches()]), y[:40])

    def test_iterable_dataset_needs_samples(self):
        import torch
        from torch.utils.data import IterableDataset

        class Stream(IterableDataset):
            def __iter__(self):
                for i in range(100):
                    yield torch.full((1, 8, 8), float(i) / 100)

        with pytest.raises(InvalidInputError, match="iterable-only"):
            from_torch(Stream())
        cset = from_torch(Stream(), samples=10).bind([SPEC])
        assert len(cset) == 10
        np.testing.assert_allclose(_stack(cset)[:, 0, 0, 0], np.arange(10) / 100)


class TestChecks:
    def test_empty_set_is_refused(self):
        with pytest.raises(InvalidInputError, match="empty"):
            from_numpy(np.zeros((0, 1, 8, 8), np.float32)).check_against([SPEC])

    def test_wrong_names_shape_rank_and_dtype_are_refused(self):
        ok = np.zeros((4, 1, 8, 8), np.float32)
        with pytest.raises(InvalidInputError, match=r"expects inputs \['x'\].*unexpected \['image'\]"):
            from_numpy({"image": ok}).check_against([SPEC])
        with pytest.raises(InvalidInputError, match="size 8 on axis 2"):
            from_numpy(np.zeros((4, 1, 16, 16), np.float32)).check_against([SPEC])
        with pytest.raises(InvalidInputError, match="rank 4"):
            from_numpy(np.zeros((4, 8, 8), np.float32)).check_against([SPEC])
        with pytest.raises(InvalidInputError, match="raw pixels"):
            from_numpy(np.zeros((4, 1, 8, 8), np.uint8)).check_against([SPEC])
        two = [SPEC, TensorSpec("extra", "float32", ("batch", 4))]
        with pytest.raises(InvalidInputError, match="2 inputs"):
            from_numpy(ok).check_against(two)

    def test_float64_is_cast_to_the_model_dtype(self):
        cset = from_numpy(np.ones((3, 1, 8, 8), np.float64)).bind([SPEC])
        assert next(iter(cset))["x"].dtype == np.float32

    def test_fixed_batch_models_get_full_batches_only(self):
        spec = TensorSpec("x", "float32", (4, 1, 8, 8))
        cset = from_numpy(np.zeros((10, 1, 8, 8), np.float32), batch_size=3).bind([spec])
        assert [b["x"].shape[0] for b in cset] == [4, 4]
        with pytest.raises(InvalidInputError, match="fixed batch size of 4"):
            from_numpy(np.zeros((2, 1, 8, 8), np.float32)).bind([spec])


class TestSubsets:
    def test_split_is_deterministic_disjoint_and_complete(self):
        cset = from_digits("train")
        a, b = cset.split(0.8, seed=5)
        a2, _ = cset.split(0.8, seed=5)
        assert a.indices == a2.indices
        assert not set(a.indices) & set(b.indices)
        assert len(a) + len(b) == len(cset) == 1437
        assert a.describe()["selection"]["split"]["part"] == "calibration"

    def test_sample_is_a_spread_subset(self):
        cset = from_digits("train").sample(100)
        labels = np.concatenate([b.labels for b in cset.batches()])
        assert len(labels) == 100 and len(set(labels)) == 10  # not the first 100 of one class
        with pytest.raises(InvalidInputError):
            cset.sample(0)
        with pytest.raises(InvalidInputError, match="one side empty"):
            from_numpy(np.zeros((1, 1, 8, 8), np.float32)).split(0.5)

    def test_progress_bar_iterates_the_same_batches(self):
        cset = from_digits("test", batch_size=90).bind([SPEC])
        np.testing.assert_array_equal(_stack(cset.with_progress("calibrating")), _stack(cset))
