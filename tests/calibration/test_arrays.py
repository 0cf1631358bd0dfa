"""User data → numpy: .npy/.npz files, torch tensors and lists, raw images told apart from tensors."""

from __future__ import annotations

import numpy as np
import pytest
from infership.calibration import is_image_like, load_array_file, to_numpy
from infership.calibration.dataset import UNNAMED
from infership.runtime import InvalidInputError, Preprocessing, TensorSpec

X = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
PRE = Preprocessing(input="x", channels="L", mean=(0.0,), std=(1.0,))


class TestLoadArrayFile:
    def test_npy_takes_the_single_input_name_else_unnamed(self, tmp_path):
        np.save(tmp_path / "a.npy", X)
        arrays, labels = load_array_file(tmp_path / "a.npy", ["x"])
        assert list(arrays) == ["x"] and labels is None
        np.testing.assert_array_equal(arrays["x"], X)
        assert list(load_array_file(tmp_path / "a.npy")[0]) == [UNNAMED]
        assert list(load_array_file(tmp_path / "a.npy", ["a", "b"])[0]) == [UNNAMED]

    def test_npy_can_be_memory_mapped(self, tmp_path):
        np.save(tmp_path / "a.npy", X)
        assert isinstance(load_array_file(tmp_path / "a.npy", mmap=True)[0][UNNAMED], np.memmap)
        assert not isinstance(load_array_file(tmp_path / "a.npy")[0][UNNAMED], np.memmap)

    def test_npz_keeps_names_and_separates_labels(self, tmp_path):
        np.savez(tmp_path / "b.npz", image=X, mask=X > 3, y=np.arange(3))
        arrays, labels = load_array_file(str(tmp_path / "b.npz"), ["image", "mask"])
        assert sorted(arrays) == ["image", "mask"]
        np.testing.assert_array_equal(labels, [0, 1, 2])

    def test_npz_single_array_takes_the_single_input_name(self, tmp_path):
        np.savez(tmp_path / "c.npz", whatever=X, labels=np.arange(3))
        arrays, labels = load_array_file(tmp_path / "c.npz", ["x"])
        assert list(arrays) == ["x"] and labels is not None
        assert list(load_array_file(tmp_path / "c.npz")[0]) == ["whatever"]

    def test_an_input_named_like_a_label_key_stays_an_input(self, tmp_path):
        np.savez(tmp_path / "d.npz", y=X, labels=np.arange(3))
        arrays, labels = load_array_file(tmp_path / "d.npz", ["y"])
        np.testing.assert_array_equal(arrays["y"], X)
        np.testing.assert_array_equal(labels, np.arange(3))

    def test_missing_wrong_suffix_unreadable_and_labels_only_are_refused(self, tmp_path):
        with pytest.raises(
            InvalidInputError,
            match=r"^--inputs x: expected a \.npy or \.npz file, got .*nope\.npy \(not found\)",
        ):
            load_array_file(tmp_path / "nope.npy", what="--inputs x")
        (tmp_path / "e.csv").write_text("1,2\n")
        with pytest.raises(InvalidInputError, match=r"expected a \.npy or \.npz file, got .*e\.csv$"):
            load_array_file(tmp_path / "e.csv")
        (tmp_path / "f.npy").write_bytes(b"not numpy")
        with pytest.raises(InvalidInputError, match=r"cannot read .*f\.npy as \.npy/\.npz"):
            load_array_file(tmp_path / "f.npy")
        np.savez(tmp_path / "g.npz", labels=np.arange(3))
        with pytest.raises(InvalidInputError, match="expected input arrays in .*, got only labels"):
            load_array_file(tmp_path / "g.npz")
        np.save(tmp_path / "h.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        with pytest.raises(InvalidInputError, match="cannot read"):  # never unpickles
            load_array_file(tmp_path / "h.npy")

    @pytest.mark.parametrize("compressed", [False, True])
    def test_a_corrupt_npz_is_refused_as_bad_input(self, tmp_path, compressed):
        save = np.savez_compressed if compressed else np.savez
        save(tmp_path / "ok.npz", x=np.random.default_rng(0).random((64, 64)))
        data = (tmp_path / "ok.npz").read_bytes()
        (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])  # truncated: no central directory
        with pytest.raises(
            InvalidInputError, match=r"^validation data: cannot read .*cut\.npz as \.npy/\.npz"
        ):
            load_array_file(tmp_path / "cut.npz", what="validation data")
        flipped = bytearray(data)
        flipped[200] ^= 0xFF  # inside the member's data: a CRC (or deflate stream) error on reading
        (tmp_path / "bad.npz").write_bytes(bytes(flipped))
        with pytest.raises(InvalidInputError, match=r"cannot read .*bad\.npz"):
            load_array_file(tmp_path / "bad.npz")


class TestToNumpy:
    def test_numpy_is_passed_through_and_lists_become_arrays(self):
        assert to_numpy(X) is X
        np.testing.assert_array_equal(to_numpy([[1, 2], [3, 4]]), np.array([[1, 2], [3, 4]]))

    def test_torch_tensors_become_arrays_without_grad(self):
        import torch

        t = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_()
        got = to_numpy(t)
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
        np.testing.assert_array_equal(got, np.arange(6).reshape(2, 3))
        cpu = torch.zeros(4)
        view = to_numpy(cpu)
        cpu[0] = 5.0  # a CPU tensor is viewed, not copied
        assert view[0] == 5.0

    def test_non_numeric_data_is_refused(self):
        with pytest.raises(
            InvalidInputError, match="expected a numpy array, torch tensor or list of numbers, got dict"
        ):
            to_numpy({"a": 1})


class TestIsImageLike:
    def test_nothing_is_an_image_without_preprocessing(self, tmp_path):
        assert not is_image_like(tmp_path / "a.png", None)
        assert not is_image_like(np.zeros((8, 8), np.uint8), None)

    def test_paths_by_suffix_pil_images_and_hw_hwc_uint8_arrays(self, tmp_path):
        from PIL import Image

        assert is_image_like(tmp_path / "a.PNG", PRE) and is_image_like(str(tmp_path / "b.jpeg"), PRE)
        assert not is_image_like(tmp_path / "a.npy", PRE)
        assert is_image_like(Image.new("L", (8, 8)), PRE)
        assert is_image_like(np.zeros((8, 8), np.uint8), PRE)
        assert is_image_like(np.zeros((8, 8, 3), np.uint8), PRE)
        assert not is_image_like(np.zeros((2, 8, 8, 3), np.uint8), PRE)  # a batch of images is a tensor
        assert not is_image_like(np.zeros((8, 8, 3), np.float32), PRE)

    def test_the_input_spec_decides_for_uint8_arrays(self):
        float_in = TensorSpec("x", "float32", ("batch", 1, 8, 8))
        uint8_in = TensorSpec("x", "uint8", ("batch", 8, 8, 3))
        small = TensorSpec("x", "float32", ("batch", 8))
        assert is_image_like(np.zeros((8, 8, 3), np.uint8), PRE, spec=float_in)
        assert not is_image_like(np.zeros((8, 8, 3), np.uint8), PRE, spec=uint8_in)  # the model takes uint8
        assert not is_image_like(np.zeros((8, 8), np.uint8), PRE, spec=small)  # already the input's rank
