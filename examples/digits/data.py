"""scikit-learn's bundled handwritten digits (offline, 8×8 grayscale) with a fixed train/test split.

The data of the digits example, shared by training, calibration and validation so they agree on which
images are held out. infership itself knows nothing of this data set; this file plugs it in two ways:

* as ``FILE.py:FUNCTION`` sources — ``data.py:train`` / ``data.py:test`` in ``pipeline.toml``, or
  ``--calibration examples/digits/data.py:train`` on the command line;
* as a ``digits`` scheme (``digits:train``, ``digits:test``, ``digits:all``), registered when this file is
  imported, e.g. by ``load_callable("examples/digits/data.py:from_digits")`` (which imports it once)::

      from infership.calibration import from_spec, load_callable
      from_digits = load_callable("examples/digits/data.py:from_digits")
      holdout = from_spec("digits:test")
"""

from __future__ import annotations

import numpy as np
from infership.calibration import CalibrationSet, from_numpy, register_source
from infership.runtime import InvalidInputError, Preprocessing

SPLITS = ("train", "test", "all")
_TEST_SIZE = 360  # 20% of 1,797, stratified


def load_split(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``(images, labels)``: float32 ``[n, 1, 8, 8]`` scaled to [0, 1], int64 labels.

    The train/test split (1,437 / 360, stratified, seed 0) is fixed.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.

    Returns:
        ``(images, labels)``.

    Raises:
        InvalidInputError: ``split`` is not ``train``, ``test`` or ``all``.
    """
    if split not in SPLITS:
        raise InvalidInputError(f"digits split: expected one of {', '.join(SPLITS)}, got {split!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    if split == "all":
        return images, labels
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=_TEST_SIZE, random_state=0, stratify=labels)
    pick = np.sort(train_idx if split == "train" else test_idx)
    return images[pick], labels[pick]


def from_digits(
    split: str = "train",
    *,
    preprocessing: Preprocessing | None = None,
    input_name: str | None = None,
    batch_size: int = 16,
) -> CalibrationSet:
    """The digits as a labelled calibration set.

    Args:
        split: ``"train"`` (1,437), ``"test"`` (360) or ``"all"``; see :func:`load_split`.
        preprocessing: When given, each digit becomes an 8-bit grayscale image fed through it (for models
            with another input size or normalisation); otherwise inputs are ``[n, 1, 8, 8]`` in [0, 1].
        input_name: The model input the images feed (default: the model's only input).
        batch_size: Samples per batch.

    Returns:
        The calibration set; its provenance reads ``{"kind": "digits", "split": split}``.
    """
    images, labels = load_split(split)
    if preprocessing is not None:
        from infership.runtime.preprocess import preprocess_image

        pixels = np.round(images[:, 0] * 255.0).astype(np.uint8)
        images = np.stack([preprocess_image(p, preprocessing) for p in pixels])
        input_name = input_name or preprocessing.input
    # Record the data set by name in the manifest, not as anonymous arrays.
    desc = {"kind": "digits", "split": split, **({"preprocessing": True} if preprocessing else {})}
    return from_numpy(images, labels=labels, input_name=input_name, batch_size=batch_size, description=desc)


def train(*, preprocessing: Preprocessing | None = None, batch_size: int = 16) -> CalibrationSet:
    """The training split (``data.py:train``): calibration data."""
    return from_digits("train", preprocessing=preprocessing, batch_size=batch_size)


def test(*, preprocessing: Preprocessing | None = None, batch_size: int = 16) -> CalibrationSet:
    """The held-out split (``data.py:test``): 360 labelled digits never used for training or calibration."""
    return from_digits("test", preprocessing=preprocessing, batch_size=batch_size)


def digits_source(
    argument: str, *, preprocessing: Preprocessing | None = None, batch_size: int = 16, **_: object
) -> CalibrationSet:
    """The ``digits[:split]`` scheme's factory (``digits`` alone is the training split)."""
    return from_digits(argument or "train", preprocessing=preprocessing, batch_size=batch_size)


register_source(
    "digits", digits_source, description="scikit-learn's digits: digits:train, digits:test, digits:all"
)
