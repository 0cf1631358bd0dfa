"""Where calibration samples come from: image folders, numpy files and arrays, torch datasets.

Each ``from_*`` function returns a :class:`~infership.calibration.dataset.CalibrationSet` over an indexed
source that reads only the samples asked for, so memory stays bounded by one batch (``.npy`` files are
memory-mapped; images are decoded one by one through the artifact's preprocessing).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from infership.runtime.errors import InvalidInputError
from infership.runtime.manifest import Preprocessing

from .arrays import ARRAY_SUFFIXES, IMAGE_EXTENSIONS, is_image_like, load_array_file, to_numpy
from .dataset import UNNAMED, CalibrationSet


def _check_labels(labels: Any, n: int, what: str) -> np.ndarray | None:
    """Labels as one integer array with the samples along axis 0: class indices ``[n]``, or masks
    ``[n, H, W]`` (any trailing shape, the same for every sample). Per-sample lists of different lengths
    (detection boxes) are not labels of this kind."""
    if labels is None:
        return None
    try:
        arr = to_numpy(labels)
    except ValueError as exc:  # numpy refuses ragged nesting: samples whose labels differ in shape
        raise InvalidInputError(
            f"{what}: labels must be one array with the samples along axis 0 (class indices [n] or masks "
            f"[n, H, W]); got per-sample labels of different shapes ({exc})"
        ) from exc
    if arr.ndim == 0:
        raise InvalidInputError(
            f"{what}: labels must hold one entry per sample along axis 0 ({n} samples), got a scalar"
        )
    if len(arr) != n:
        raise InvalidInputError(
            f"{what}: the inputs hold {n} samples but the labels {len(arr)} (labels shape "
            f"{list(arr.shape)}); labels need one entry per sample along axis 0: class indices [{n}] or "
            f"masks [{n}, H, W]"
        )
    if arr.dtype.kind not in "iu":
        raise InvalidInputError(f"{what}: labels must be integer class indices, got {arr.dtype.name}")
    # Masks keep their integer type (uint8 masks would take eight times the memory as int64).
    return arr.astype(np.int64, copy=False) if arr.ndim == 1 else arr


# ---------------------------------------------------------------------------------------------- arrays
class ArraySource:
    """Named arrays sharing axis 0 (possibly memory-mapped, possibly several files concatenated)."""

    def __init__(
        self,
        parts: Sequence[Mapping[str, np.ndarray]],
        *,
        labels: np.ndarray | None,
        description: dict[str, Any],
    ) -> None:
        if not parts:
            raise InvalidInputError(f"{description.get('path', 'arrays')}: no arrays given")
        keys = list(parts[0])
        for i, part in enumerate(parts):
            if list(part) != keys:
                raise InvalidInputError(f"numpy part {i} holds arrays {list(part)}, the first holds {keys}")
            scalars = sorted(k for k, v in part.items() if np.ndim(v) == 0)
            if scalars:
                raise InvalidInputError(f"expected samples along axis 0 in {scalars}, got a scalar")
            lengths = {k: (len(v) if np.ndim(v) else 0) for k, v in part.items()}
            if len(set(lengths.values())) != 1:
                raise InvalidInputError(f"arrays must share their first (sample) axis, got lengths {lengths}")
        self._parts = list(parts)
        self._starts = np.cumsum([0] + [len(next(iter(p.values()))) for p in parts])
        self._labels = _check_labels(labels, int(self._starts[-1]), description.get("path", "arrays"))
        self._description = description

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    def read(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        idx = np.asarray(indices, dtype=np.int64)
        part_of = np.searchsorted(self._starts, idx, side="right") - 1
        out: dict[str, list[np.ndarray]] = {k: [] for k in self._parts[0]}
        for p in np.unique(part_of):
            local = idx[part_of == p] - self._starts[p]
            for k, v in self._parts[p].items():
                out[k].append(np.asarray(v[local]))
        order = np.argsort(np.argsort(part_of, kind="stable"), kind="stable")
        feeds = {k: np.concatenate(v)[order] if len(v) > 1 else v[0] for k, v in out.items()}
        labels = self._labels[idx] if self._labels is not None else None
        return feeds, labels

    def describe(self) -> dict[str, Any]:
        return dict(self._description)


def from_numpy(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | np.ndarray | Mapping[str, np.ndarray],
    *,
    labels: Any = None,
    input_name: str | None = None,
    batch_size: int = 16,
    description: Mapping[str, Any] | None = None,
) -> CalibrationSet:
    """Calibration data from numpy: an array, a mapping name → array, or ``.npy`` / ``.npz`` files.

    Every array holds samples along axis 0. ``.npy`` files are memory-mapped, so only the batches read
    are in memory; ``.npz`` members are loaded whole on first use (numpy cannot map them). Several files,
    or a directory of them, are concatenated in sorted order. In an ``.npz``, a key named ``labels``,
    ``label``, ``y`` or ``targets`` holds labels instead of an input: class indices ``[n]``, or masks
    ``[n, H, W]`` for a segmenter.

    Args:
        data: The arrays or files.
        labels: One label per sample along axis 0, for task accuracy during validation: class indices
            ``[n]``, or integer masks ``[n, H, W]``; batches slice them with the inputs.
        input_name: Name of the model input a single unnamed array feeds (default: the model's only input).
        batch_size: Samples per batch.
        description: The provenance :meth:`CalibrationSet.describe` records (in the manifest) instead of the
            default (``{"kind": "arrays", "shapes": ...}`` or ``{"kind": "numpy", "path": ...}``): name a data
            set, e.g. ``{"kind": "digits", "split": "test"}``.

    Returns:
        A re-iterable calibration set.

    Raises:
        InvalidInputError: A file is missing or unreadable, arrays disagree in length, or labels are malformed.
    """
    if isinstance(data, np.generic) or (isinstance(data, np.ndarray) and data.ndim == 0):
        raise InvalidInputError(f"expected samples along axis 0, got a scalar ({data!r})")
    if isinstance(data, np.ndarray):
        parts: list[Mapping[str, np.ndarray]] = [{input_name or UNNAMED: data}]
        desc: dict[str, Any] = {"kind": "arrays", "shapes": {input_name or "input": list(data.shape)}}
    elif isinstance(data, Mapping):
        parts = [{str(k): np.asarray(v) for k, v in data.items()}]
        desc = {"kind": "arrays", "shapes": {k: list(v.shape) for k, v in parts[0].items()}}
    else:
        files = _numpy_files(data)
        parts, file_labels = [], []
        for f in files:
            arrays, lab = load_array_file(f, [input_name] if input_name else [], mmap=True)
            parts.append(arrays)
            file_labels.append(lab)
        if labels is None and any(lab is not None for lab in file_labels):
            if any(lab is None for lab in file_labels):
                raise InvalidInputError("some .npz files hold labels and some do not")
            shapes = {np.shape(lab)[1:] for lab in file_labels}
            if len(shapes) > 1:
                raise InvalidInputError(
                    f"the .npz files' labels differ in shape per sample: {sorted(list(t) for t in shapes)}"
                )
            labels = np.concatenate(file_labels)
        desc = {
            "kind": "numpy",
            "path": ", ".join(str(f) for f in files[:3]) + (" …" if len(files) > 3 else ""),
            "files": len(files),
        }
    if description is not None:
        desc = dict(description)
    return CalibrationSet(ArraySource(parts, labels=labels, description=desc), batch_size=batch_size)


def _numpy_files(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    paths = [Path(data)] if isinstance(data, (str, os.PathLike)) else [Path(p) for p in data]
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in ARRAY_SUFFIXES)
            if not found:
                raise InvalidInputError(f"{p}: no .npy or .npz files in this directory")
            files.extend(found)
        elif p.is_file() and p.suffix.lower() in ARRAY_SUFFIXES:
            files.append(p)
        elif not p.exists():
            raise InvalidInputError(f"calibration data not found: {p}")
        else:
            raise InvalidInputError(f"{p}: expected a .npy or .npz file or a directory of them")
    return files


# ---------------------------------------------------------------------------------------------- images
class ImageFolderSource:
    """Image files, flat or one subfolder per class, decoded and preprocessed one by one."""

    def __init__(
        self, root: Path, preprocessing: Preprocessing, *, class_names: Sequence[str] | None
    ) -> None:
        if not root.is_dir():
            raise InvalidInputError(f"image folder not found: {root}")
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        flat = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if subdirs and flat:
            raise InvalidInputError(
                f"{root}: holds both images and subfolders; use a flat folder of images or one subfolder per class"
            )
        self.classes: tuple[str, ...] | None = None
        files: list[Path] = []
        labels: list[int] = []
        if subdirs:
            names = [d.name for d in subdirs]
            if class_names is not None:
                unknown = sorted(set(names) - set(class_names))
                if unknown:
                    raise InvalidInputError(
                        f"{root}: class folders {unknown} are not among the model's labels"
                    )
                index = {c: i for i, c in enumerate(class_names)}
            else:
                index = {c: i for i, c in enumerate(names)}
            for d in subdirs:
                imgs = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
                files.extend(imgs)
                labels.extend([index[d.name]] * len(imgs))
            self.classes = tuple(class_names) if class_names is not None else tuple(names)
        else:
            files = flat
        if not files:
            raise InvalidInputError(f"{root}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
        self._root, self._files, self._pre = root, files, preprocessing
        self._labels = np.asarray(labels, dtype=np.int64) if subdirs else None

    def __len__(self) -> int:
        return len(self._files)

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    def read(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        labels = self._labels[list(indices)] if self._labels is not None else None
        return {self._pre.input: _read_images(self._files, indices, self._pre, str(self._root))}, labels

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "image-folder", "path": str(self._root), "files": len(self._files)}
        if self.classes is not None:
            d["classes"] = len(self.classes)
        return d


def from_image_folder(
    path: str | os.PathLike[str],
    preprocessing: Preprocessing,
    *,
    class_names: Sequence[str] | None = None,
    batch_size: int = 16,
) -> CalibrationSet:
    """Images in a folder, turned into model inputs by the artifact's own preprocessing.

    A flat folder gives unlabelled samples. One subfolder per class (as torchvision's ``ImageFolder``)
    gives labels: the class index is the folder's position in ``class_names`` (the artifact's labels) when
    given, else in the sorted folder names.

    Args:
        path: The folder.
        preprocessing: The artifact's :class:`~infership.runtime.manifest.Preprocessing`.
        class_names: The model's class names, to map class folders to output indices.
        batch_size: Samples per batch.

    Raises:
        InvalidInputError: The folder is missing, empty, mixes images with subfolders, or has class folders
            that are not among ``class_names``.
    """
    source = ImageFolderSource(Path(path), preprocessing, class_names=class_names)
    return CalibrationSet(source, batch_size=batch_size)


class ImageListSource:
    """Images given one by one — file paths, PIL images or HWC uint8 arrays — preprocessed when read."""

    def __init__(self, images: Sequence[Any], preprocessing: Preprocessing) -> None:
        if not images:
            raise InvalidInputError("no images given")
        self._items, self._pre = list(images), preprocessing

    def __len__(self) -> int:
        return len(self._items)

    @property
    def has_labels(self) -> bool:
        return False

    def read(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        return {self._pre.input: _read_images(self._items, indices, self._pre, "images")}, None

    def describe(self) -> dict[str, Any]:
        return {"kind": "images", "items": len(self._items)}


def from_images(
    images: Sequence[Any], preprocessing: Preprocessing, *, batch_size: int = 16
) -> CalibrationSet:
    """Images given one by one (paths, PIL images, HWC uint8 arrays), turned into model inputs by the
    artifact's preprocessing — for a few images at hand rather than a folder (:func:`from_image_folder`).

    Args:
        images: The images, in order; unlabelled.
        preprocessing: The artifact's :class:`~infership.runtime.manifest.Preprocessing`.
        batch_size: Samples per batch.

    Raises:
        InvalidInputError: No images given (a bad image is refused when it is read).
    """
    return CalibrationSet(ImageListSource(images, preprocessing), batch_size=batch_size)


def _read_images(items: Sequence[Any], indices: Sequence[int], pre: Preprocessing, where: str) -> np.ndarray:
    from infership.runtime.preprocess import preprocess_image

    images = [preprocess_image(items[i], pre) for i in indices]
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise InvalidInputError(
            f"{where}: preprocessed images differ in shape {sorted(shapes)}; the preprocessing needs "
            "a resize to a fixed size or a crop"
        )
    return np.stack(images)


# ---------------------------------------------------------------------------------------------- torch
class TorchDatasetSource:
    """A map-style torch ``Dataset``: items are tensors, ``(input, label)`` pairs, or dicts of inputs."""

    def __init__(self, dataset: Any, *, preprocessing: Preprocessing | None, input_name: str | None) -> None:
        self._ds, self._pre, self._name = dataset, preprocessing, input_name
        self._has_labels: bool | None = None

    def __len__(self) -> int:
        return len(self._ds)

    @property
    def has_labels(self) -> bool:
        if self._has_labels is None:
            self._has_labels = len(self) > 0 and self._split(self._ds[0])[1] is not None
        return self._has_labels

    def _split(self, item: Any) -> tuple[dict[str, np.ndarray], int | np.ndarray | None]:
        label = None
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise InvalidInputError(
                    f"torch dataset items must be x, (x, label) or a dict; got a {len(item)}-tuple"
                )
            item, label = item
            label = _item_label(label)
        if isinstance(item, Mapping):
            return {str(k): self._array(v) for k, v in item.items()}, label
        return {self._name or UNNAMED: self._array(item)}, label

    def _array(self, value: Any) -> np.ndarray:
        if not type(value).__module__.startswith("PIL."):
            value = to_numpy(value)
        if self._pre is not None and is_image_like(value, self._pre):
            from infership.runtime.preprocess import preprocess_image

            return preprocess_image(value, self._pre)
        return value

    def read(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        items = [self._split(self._ds[int(i)]) for i in indices]
        keys = list(items[0][0])
        feeds = {k: np.stack([it[0][k] for it in items]) for k in keys}
        return feeds, _stack_labels([it[1] for it in items])

    def describe(self) -> dict[str, Any]:
        return {"kind": "torch-dataset", "type": type(self._ds).__name__, "items": len(self)}


def from_torch(
    data: Any,
    *,
    samples: int | None = None,
    preprocessing: Preprocessing | None = None,
    input_name: str | None = None,
    batch_size: int | None = None,
) -> CalibrationSet:
    """Calibration data from a torch ``Dataset`` or ``DataLoader``.

    A map-style dataset (``__len__`` and ``__getitem__``) is read item by item; a ``DataLoader`` over one is
    read through its ``dataset`` (infership batches itself, so the loader's shuffling is not used and every
    pass sees the same order) and keeps the loader's batch size. An iterable-style dataset cannot be
    re-read from a given index: its first ``samples`` items are materialized in memory.

    Args:
        data: The dataset or loader. Items: a tensor, ``(input, label)``, or a dict name → tensor; a label
            is a class index or an integer mask ``[H, W]`` (a tensor, array or PIL image).
        samples: Required for iterable-style data: how many items to take.
        preprocessing: Applied to items that are PIL images or HWC uint8 arrays.
        input_name: The model input a single unnamed tensor feeds (default: the model's only input).
        batch_size: Samples per batch (default: the loader's, else 16).

    Raises:
        InvalidInputError: Iterable-style data without ``samples``, or malformed items.
    """
    dataset = (
        getattr(data, "dataset", None) if hasattr(data, "batch_size") and hasattr(data, "dataset") else None
    )
    loader_batch = getattr(data, "batch_size", None) if dataset is not None else None
    target = dataset if dataset is not None else data
    bs = batch_size or loader_batch or 16
    if hasattr(target, "__getitem__") and hasattr(target, "__len__"):
        try:
            len(target)
        except TypeError as exc:
            raise InvalidInputError(
                f"{type(target).__name__} has no length; pass samples= to read it as a stream"
            ) from exc
        source = TorchDatasetSource(target, preprocessing=preprocessing, input_name=input_name)
        return CalibrationSet(source, batch_size=bs)
    if samples is None:
        raise InvalidInputError(
            f"{type(target).__name__} is iterable-only (it cannot be re-read from an index); pass samples=N "
            "to take its first N items"
        )
    reader = TorchDatasetSource([], preprocessing=preprocessing, input_name=input_name)
    items: list[tuple[dict[str, np.ndarray], int | np.ndarray | None]] = []
    for item in data if dataset is None else dataset:
        items.append(reader._split(item))
        if len(items) >= samples:
            break
    if not items:
        raise InvalidInputError(f"{type(target).__name__} yielded no items")
    keys = list(items[0][0])
    arrays = {k: np.stack([it[0][k] for it in items]) for k in keys}
    labels = _stack_labels([it[1] for it in items])
    desc = {"kind": "torch-iterable", "type": type(target).__name__, "items": len(items)}
    return CalibrationSet(ArraySource([arrays], labels=labels, description=desc), batch_size=bs)


def _item_label(value: Any) -> int | np.ndarray:
    """A torch dataset item's label: a class index, or an integer mask (a tensor, array or PIL image)."""
    arr = np.asarray(value) if type(value).__module__.startswith("PIL.") else to_numpy(value)
    if arr.ndim == 0:
        return int(arr)
    if arr.dtype.kind not in "iu":
        raise InvalidInputError(
            f"torch dataset labels must be class indices or integer masks, got a {arr.dtype.name} array "
            f"of shape {list(arr.shape)}"
        )
    return arr


def _stack_labels(got: Sequence[int | np.ndarray | None]) -> np.ndarray | None:
    """One batch's labels stacked along axis 0 (``None`` unless every item has one)."""
    if any(g is None for g in got):
        return None
    shapes = {np.shape(g) for g in got}
    if len(shapes) > 1:
        raise InvalidInputError(
            f"torch dataset labels differ in shape between items: {sorted(list(t) for t in shapes)}"
        )
    return np.stack(got) if shapes != {()} else np.asarray(got, dtype=np.int64)
