"""User data → numpy: ``.npy`` / ``.npz`` files, torch tensors and lists, and telling raw images from tensors.

The one place these rules live for calibration, validation and bench inputs. The Predictor's own hot-path
conversion stays in :mod:`infership.runtime` (the core imports nothing above it); :func:`to_numpy` reuses it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from infership.runtime.errors import InvalidInputError
from infership.runtime.preprocess import IMAGE_EXTENSIONS, is_image_like, tensor_to_numpy

from .dataset import UNNAMED

__all__ = ["IMAGE_EXTENSIONS", "LABEL_KEYS", "is_image_like", "load_array_file", "to_numpy"]

#: Keys of an ``.npz`` file that hold labels rather than model inputs (unless a model input has the name).
LABEL_KEYS = ("labels", "label", "y", "targets")
ARRAY_SUFFIXES = (".npy", ".npz")


def load_array_file(
    path: str | os.PathLike[str],
    input_names: Sequence[str] = (),
    *,
    mmap: bool = False,
    what: str = "data",
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Read a ``.npy`` or ``.npz`` file as named arrays, and its labels when it has any.

    A ``.npy`` holds one array: it is named after the model's input when there is exactly one, else
    :data:`~infership.calibration.dataset.UNNAMED`. An ``.npz`` keeps its own key names, except that a
    single array for a single-input model takes the input's name; a key named ``labels``, ``label``, ``y``
    or ``targets`` (and not also an input's name) holds labels instead of an input.

    Args:
        path: The file.
        input_names: The model's input names (may be empty when not known yet).
        mmap: Memory-map a ``.npy`` file, so only the samples read come into memory (``.npz`` members
            cannot be mapped and are loaded whole).
        what: What the file is, for error messages (e.g. ``"--inputs x"``, ``"validation data"``).

    Returns:
        ``(arrays, labels)``: input name → array, and the labels or ``None``.

    Raises:
        InvalidInputError: The file is missing, not ``.npy``/``.npz``, unreadable, or holds only labels.
    """
    p = Path(path)
    if p.suffix.lower() not in ARRAY_SUFFIXES:
        raise InvalidInputError(f"{what}: expected a .npy or .npz file, got {p}")
    if not p.is_file():
        raise InvalidInputError(f"{what}: expected a .npy or .npz file, got {p} (not found)")
    names = list(input_names)
    try:
        if p.suffix.lower() == ".npy":
            array = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
            return {names[0] if len(names) == 1 else UNNAMED: array}, None
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    # A corrupt or truncated file fails deep in numpy, zipfile or zlib with whatever their parsers raise
    # (BadZipFile, zlib.error, EOFError, or a SyntaxError/TokenError from a garbled .npy header): all of it
    # means the same to the caller, a file that is not readable data.
    except Exception as exc:
        raise InvalidInputError(f"{what}: cannot read {p} as .npy/.npz ({exc})") from exc
    label_keys = [k for k in arrays if k in LABEL_KEYS and k not in names]
    labels = arrays.pop(label_keys[0]) if label_keys else None
    if not arrays:
        raise InvalidInputError(f"{what}: expected input arrays in {p}, got only labels ({label_keys[0]!r})")
    if len(arrays) == 1 and len(names) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    return arrays, labels


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor on any device, or a (nested) list of numbers.

    Args:
        value: The data. Torch tensors are detached and moved to the CPU (a CPU tensor is viewed, not
            copied).

    Returns:
        The array.

    Raises:
        InvalidInputError: ``value`` is not numeric data (numpy would make an object array of it).
    """
    # The Predictor's conversion, so calibration, validation and prediction treat tensors alike.
    arr = np.asarray(tensor_to_numpy(value))
    if arr.dtype == object:
        raise InvalidInputError(
            f"expected a numpy array, torch tensor or list of numbers, got {type(value).__name__}"
        )
    return arr
