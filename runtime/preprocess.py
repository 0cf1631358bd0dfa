"""Raw images → model input, using the preprocessing recorded in the artifact (the training transform).

Pillow is imported only when images are actually fed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .manifest import Preprocessing
from .spec import TensorSpec

#: File suffixes read as images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_like(item: Any, preprocessing: Preprocessing | None, *, spec: TensorSpec | None = None) -> bool:
    """Whether ``item`` is a raw image for the preprocessing to turn into a model input.

    Raw images are a path to an image file (by suffix, see :data:`IMAGE_EXTENSIONS`), a PIL image, or an
    HW / HWC uint8 array. Without preprocessing nothing is an image (there is no way to feed one). The one
    rule for the Predictor, calibration, validation and bench inputs.

    Args:
        item: One item of user data.
        preprocessing: The artifact's preprocessing, or ``None``.
        spec: The input the item would feed: a uint8 array is then an image only if the input does not take
            uint8 itself and the array lacks the input's batch axis.

    Returns:
        ``True`` for a raw image.
    """
    if preprocessing is None:
        return False
    if isinstance(item, (str, os.PathLike)):
        return Path(item).suffix.lower() in IMAGE_EXTENSIONS
    if type(item).__module__.startswith("PIL."):
        return True
    if not (isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim in (2, 3)):
        return False
    return spec is None or (spec.dtype != "uint8" and item.ndim < spec.rank)


def tensor_to_numpy(value: Any, *, name: str | None = None) -> Any:
    """A torch tensor as a numpy array (a CPU tensor is viewed, not copied; others are moved to the CPU);
    anything else is returned unchanged. torch is never imported here: a tensor brings its own module.

    Args:
        value: A tensor, or anything else.
        name: The input it feeds, for the message.

    Raises:
        InvalidInputError: A tensor numpy cannot hold: bfloat16, float8, quantized, sparse, nested or
            meta tensors.
    """
    if type(value).__module__.startswith("torch"):
        try:
            if getattr(value, "is_cuda", False) or str(getattr(value, "device", "cpu")) != "cpu":
                value = value.detach().cpu()
            return value.detach().numpy()
        except (TypeError, RuntimeError, NotImplementedError, AttributeError) as exc:
            what = f"input {name!r}" if name else "input"
            kind = f"{getattr(value, 'dtype', '?')} {getattr(value, 'layout', '')}".strip()
            raise InvalidInputError(
                f"{what}: expected a dense tensor numpy can hold (float16/32/64, integers, bool, complex), "
                f"got a torch tensor of {kind} ({exc}); convert it first, e.g. .float() or .to_dense()"
            ) from exc
    return value


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is in the convert extra
        raise InvalidInputError("feeding raw images needs Pillow: pip install pillow") from exc
    return Image


def _open(item: Any, mode: str):
    Image = _pil()
    if isinstance(item, (str, os.PathLike)):
        try:
            img = Image.open(item)
            img.load()
        except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, EOFError,
            # DecompressionBombError... for a bad or hostile file: translated below
            raise InvalidInputError(
                f"cannot read image {os.fspath(item)!r}: {type(exc).__name__}: {exc}"
            ) from exc
    elif isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3):
            raise InvalidInputError(
                f"expected an HWC or HW uint8 image array, got {item.dtype} {list(item.shape)}"
            )
        img = Image.fromarray(item)
    elif type(item).__module__.startswith("PIL."):
        img = item
    else:
        raise InvalidInputError(
            f"expected an image path, PIL image or HWC uint8 array, got {type(item).__name__}"
        )
    try:
        return img.convert(mode)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot convert the image to {mode}: {exc}") from exc


def open_image(item: Any, pre: Preprocessing):
    """An image (a path, PIL image or HW/HWC uint8 array) opened and converted to ``pre``'s channels.

    Raises:
        InvalidInputError: The item is unreadable or not an image.
    """
    return _open(item, "L" if pre.channels == "L" else "RGB")


def preprocess_image(item: Any, pre: Preprocessing) -> np.ndarray:
    """One image → float32 array in the model's layout (CHW or HWC), without the batch axis."""
    Image = _pil()
    img = open_image(item, pre)
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[
        pre.interpolation
    ]
    if pre.resize is not None:
        if isinstance(pre.resize, int):
            # Same arithmetic as torchvision's Resize(int): the short side becomes ``resize`` and the long
            # side is truncated, not rounded, so images match the training transform pixel for pixel.
            w, h = img.size
            r = pre.resize
            size = (r, max(1, int(r * h / w))) if w <= h else (max(1, int(r * w / h)), r)
        else:
            size = (int(pre.resize[1]), int(pre.resize[0]))
        img = img.resize(size, resample)
    if pre.crop is not None:
        ch, cw = pre.crop
        w, h = img.size
        if ch > h or cw > w:
            raise InvalidInputError(f"crop {ch}x{cw} is larger than the resized image {h}x{w}")
        left, top = round((w - cw) / 2), round((h - ch) / 2)
        img = img.crop((left, top, left + cw, top + ch))
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if pre.invert:
        arr = 255.0 - arr
    if pre.channels == "BGR":
        arr = arr[:, :, ::-1]
    arr = arr * np.float32(pre.scale)
    arr = (arr - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)
    if pre.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.float32)


def images_to_tensor(
    items: Iterable[Any], pre: Preprocessing, spec: TensorSpec, *, workers: int | None = 1
) -> np.ndarray:
    """A list of images → one batch tensor that satisfies ``spec`` (checked).

    ``workers`` > 1 (``None``: as many as the process may use) decodes and resizes the images on that many
    threads at once (Pillow releases the GIL while it decodes and resamples): contiguous shares of the
    list, each on one thread of a shared pool, in order. The first unreadable image (in list order) raises,
    as it does on one thread. Lists holding PIL images, and calls the pool no longer takes (the interpreter
    shutting down), are done on one thread.
    """
    items = list(items)
    if not items:
        raise InvalidInputError("no images given")
    if workers is None:
        from .profile import usable_cpus

        workers = usable_cpus()
    shares = min(max(1, int(workers)), len(items))
    if any(type(i).__module__.startswith("PIL.") for i in items):
        shares = 1  # a PIL image may be listed twice, and loading one is not safe from two threads
    arrays = _decode_shares(items, pre, shares) if shares > 1 else None
    if arrays is None:
        arrays = [preprocess_image(i, pre) for i in items]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InvalidInputError(
            f"the images have different sizes after preprocessing ({sorted(shapes)}); record resize/crop in "
            "the artifact's preprocessing or pass images of one size"
        )
    batch = np.stack(arrays)
    return spec.check(batch.astype(spec.dtype, copy=False), check_batch=False)


def _decode_shares(items: list[Any], pre: Preprocessing, shares: int) -> list[np.ndarray] | None:
    """``items`` preprocessed in ``shares`` contiguous shares on the pool, in order; ``None`` when the pool
    takes no more work (after the main thread has ended)."""
    bounds = np.linspace(0, len(items), shares + 1).astype(int)
    parts = [items[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    try:
        futures = [_pool().submit(lambda part: [preprocess_image(i, pre) for i in part], p) for p in parts]
    except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
        return None
    return [a for f in futures for a in f.result()]  # the first share's error first


_POOL: Any = None
_POOL_LOCK = threading.Lock()


def _pool() -> Any:
    """The process's image-decoding threads (as many as it may use), made on first use and shared by every
    Predictor; each call takes at most its own ``workers`` of them."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            from .profile import usable_cpus

            _POOL = ThreadPoolExecutor(max_workers=usable_cpus(), thread_name_prefix="infership-images")
        return _POOL


def _forget_pool() -> None:
    """In a forked child the parent's threads do not exist (work given to its pool would wait forever),
    and its lock may have been held at the fork: the child starts afresh."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
