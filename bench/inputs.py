"""Inputs for timed calls: a pool of distinct tensors, rotated so no single cached tensor flatters a run.

Random tensors follow the model's input specs: the batch axis takes the sweep's batch size; other dynamic
axes need an explicit shape (``shapes={"x": (1, 3, 224, 224)}``; the batch entry is replaced). Real data
comes from arrays (``.npy``, or an ``.npz`` holding one array) whose axis 0 indexes samples. With
``include_preprocessing`` each call feeds raw HWC uint8 images, so the artifact's preprocessing is inside the
timed call. Text encoders take token batches (:func:`token_pool`): rows of one sequence length for a sweep
point, or the token lengths of real texts to replay, padded as a deployment would pad them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from infership.calibration import load_array_file
from infership.calibration.text import DEFAULT_BUCKETS, length_summary, replay_lengths, token_batches
from infership.runtime.errors import InvalidInputError
from infership.runtime.manifest import Preprocessing
from infership.runtime.spec import TensorSpec, random_array
from infership.runtime.text import TextEncoder

DEFAULT_POOL_SIZE = 16
# A pool never holds more than this many bytes of tensors (batch 64 of 3x224x224 float32 is 38 MB).
POOL_BYTES_LIMIT = 256 << 20


@dataclass(frozen=True)
class InputPool:
    """Distinct inputs to rotate through.

    Args:
        items: What each timed call passes to ``Predictor.predict`` (a mapping, or a list of raw images).
        source: ``"random"``, ``"npy"``, ``"tokens"`` (rows of one sequence length) or ``"replay"`` (the
            token lengths of real texts).
        shapes: Input name → shape of one call's tensor (raw image shape, batch first, with preprocessing;
            the widest batch when token batches differ in width).
        include_preprocessing: Whether the items are raw images.
        key: Parts added to the key of the runs fed from this pool (``sequence=128``, ``padding=bucket``),
            so compare and the CI gate match runs of the same shape bucket only.
        tokens: For token batches: the sequence length (or ``"replay"``), the padding, and the row lengths'
            distribution.
    """

    items: tuple[Any, ...]
    source: str
    shapes: dict[str, list[int]]
    include_preprocessing: bool
    key: tuple[str, ...] = ()
    tokens: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i % len(self.items)]


def resolve_shape(spec: TensorSpec, batch_size: int, shapes: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """The concrete shape of one call's tensor for ``spec`` at ``batch_size``.

    Raises:
        InvalidInputError: A dynamic non-batch axis without a shape in ``shapes``, or a given shape that
            contradicts a fixed dimension.
    """
    given = shapes.get(spec.name)
    if given is not None:
        if len(given) != spec.rank:
            raise InvalidInputError(
                f"--shape for {spec.name!r}: expected rank {spec.rank} {spec.shape_str()}, got {list(given)}"
            )
        out = [batch_size, *given[1:]] if spec.rank else []
        for axis, (want, got) in enumerate(zip(spec.shape, out, strict=True)):
            if axis and isinstance(want, int) and want != got:
                raise InvalidInputError(
                    f"--shape for {spec.name!r}: axis {axis} is fixed at {want} in {spec.shape_str()}, got {got}"
                )
        return tuple(out)
    out = []
    for axis, dim in enumerate(spec.shape):
        if axis == 0:
            out.append(batch_size)
        elif isinstance(dim, int):
            out.append(dim)
        else:
            raise InvalidInputError(
                f"input {spec.name!r} has dynamic axis {axis} ({dim or 'unnamed'}) in {spec.shape_str()}: "
                f"give its size, e.g. --shape {spec.name}:{batch_size}x..."
            )
    return tuple(out)


def random_pool(
    specs: Sequence[TensorSpec],
    *,
    batch_size: int,
    shapes: Mapping[str, Sequence[int]] | None = None,
    size: int = DEFAULT_POOL_SIZE,
    seed: int = 0,
) -> InputPool:
    """Distinct random tensors that satisfy ``specs`` (floats: standard normal; integers: 0 or 1).

    Args:
        specs: The model's input specs.
        batch_size: Axis-0 size of every tensor.
        shapes: Sizes for dynamic non-batch axes (name → full shape; axis 0 is replaced).
        size: How many distinct inputs; reduced so the pool stays under :data:`POOL_BYTES_LIMIT` (at least 2).
        seed: Random seed.

    Returns:
        The :class:`InputPool`.

    Raises:
        InvalidInputError: A dynamic axis without a size, or a non-positive batch or pool size.
    """
    _check_counts(batch_size, size)
    concrete = {s.name: resolve_shape(s, batch_size, shapes or {}) for s in specs}
    per_item = sum(int(np.prod(concrete[s.name])) * np.dtype(s.dtype).itemsize for s in specs)
    count = max(2, min(size, POOL_BYTES_LIMIT // max(per_item, 1)))
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(count):
        feed = {}
        for s in specs:
            feed[s.name] = random_array(s.dtype, concrete[s.name], rng)
        items.append(feed)
    return InputPool(tuple(items), "random", {k: list(v) for k, v in concrete.items()}, False)


def array_pool(
    specs: Sequence[TensorSpec],
    arrays: Mapping[str, np.ndarray | str | os.PathLike[str]],
    *,
    batch_size: int,
    size: int = DEFAULT_POOL_SIZE,
) -> InputPool:
    """Batches cut from real data: each array's axis 0 indexes samples (``.npy`` paths are loaded).

    Consecutive batches take consecutive samples, wrapping around, so distinct batches rotate as long as
    there are more samples than ``batch_size``.

    Args:
        specs: The model's input specs; every input needs an array.
        arrays: Input name → array or ``.npy`` path, shape ``[samples, *item_shape]``.
        batch_size: Samples per call.
        size: How many distinct batches.

    Returns:
        The :class:`InputPool`.

    Raises:
        InvalidInputError: A missing or unexpected input name, an unreadable file, or arrays with different
            sample counts.
    """
    _check_counts(batch_size, size)
    names = {s.name for s in specs}
    if set(arrays) != names:
        raise InvalidInputError(f"--inputs: expected arrays for {sorted(names)}, got {sorted(arrays)}")
    data = {name: _load_array(name, arr) for name, arr in arrays.items()}
    counts = {name: a.shape[0] for name, a in data.items()}
    if len(set(counts.values())) != 1:
        raise InvalidInputError(f"--inputs: arrays must hold the same number of samples, got {counts}")
    n = next(iter(counts.values()))
    if n == 0:
        raise InvalidInputError("--inputs: the arrays hold no samples")
    distinct = max(1, min(size, -(-n // batch_size)))
    items = []
    for b in range(distinct):
        idx = (np.arange(batch_size) + b * batch_size) % n
        items.append({name: np.ascontiguousarray(a[idx]) for name, a in data.items()})
    shapes = {name: list(v.shape) for name, v in items[0].items()}
    return InputPool(tuple(items), "npy", shapes, False)


def image_pool(
    pre: Preprocessing,
    *,
    batch_size: int,
    image_size: tuple[int, int] | None = None,
    images: np.ndarray | str | os.PathLike[str] | None = None,
    size: int = DEFAULT_POOL_SIZE,
    seed: int = 0,
) -> InputPool:
    """Lists of raw HWC uint8 images, so the artifact's preprocessing runs inside the timed call.

    Args:
        pre: The artifact's preprocessing (decides channels and, by default, the raw image size).
        batch_size: Images per call.
        image_size: Raw (height, width); default: the resize target, else the crop, else 256×256.
        images: Real images instead: a uint8 array (or ``.npy``) of shape ``[N, H, W, C]`` or ``[N, H, W]``.
        size: How many distinct batches.
        seed: Random seed for random images.

    Returns:
        The :class:`InputPool` (``include_preprocessing`` is set).

    Raises:
        InvalidInputError: Images that are not uint8 ``[N, H, W(, C)]``.
    """
    _check_counts(batch_size, size)
    if images is not None:
        data = _load_array("images", images)
        if data.dtype != np.uint8 or data.ndim not in (3, 4):
            raise InvalidInputError(
                f"--inputs images: expected uint8 [N, H, W(, C)], got {data.dtype} {list(data.shape)}"
            )
        source = "npy"
    else:
        if image_size is None:
            if isinstance(pre.resize, tuple):
                image_size = (int(pre.resize[0]), int(pre.resize[1]))
            elif isinstance(pre.resize, int):
                image_size = (pre.resize, pre.resize)
            elif pre.crop is not None:
                image_size = (int(pre.crop[0]), int(pre.crop[1]))
            else:
                image_size = (256, 256)
        channels = () if pre.channels == "L" else (3,)
        per_batch = batch_size * image_size[0] * image_size[1] * (channels[0] if channels else 1)
        count = max(2, min(size, POOL_BYTES_LIMIT // max(per_batch, 1)))
        rng = np.random.default_rng(seed)
        data = rng.integers(0, 256, size=(count * batch_size, *image_size, *channels), dtype=np.uint8)
        source = "random"
    n = data.shape[0]
    distinct = max(1, min(size, -(-n // batch_size)))
    items = [[data[(b * batch_size + i) % n] for i in range(batch_size)] for b in range(distinct)]
    return InputPool(tuple(items), source, {pre.input: [batch_size, *data.shape[1:]]}, True)


#: How a batch of token rows is padded: to its longest row (what ``Predictor.predict`` does with texts), to
#: the tokenizer's maximum length (what a fixed-shape export does), or up to the next bucket of 8, 16, 32...
#: tokens (the shapes a static-shape runtime compiles: OpenVINO reshaped per bucket, TensorRT profiles).
PADDINGS = ("longest", "max_length", "bucket")
#: The most distinct batches a replay pool holds (each a different slice of the texts' lengths).
REPLAY_POOL_MAX = 512


def parse_padding(value: str) -> str:
    """A padding strategy of :data:`PADDINGS` (``buckets`` is read as ``bucket``).

    Raises:
        InvalidInputError: An unknown strategy.
    """
    v = value.strip().lower().replace("-", "_")
    v = "bucket" if v == "buckets" else v
    if v not in PADDINGS:
        raise InvalidInputError(f"padding must be one of {', '.join(PADDINGS)}; got {value!r}")
    return v


def token_pool(
    encoder: TextEncoder,
    *,
    batch_size: int,
    sequence: int | None = None,
    replay: str | os.PathLike[str] | None = None,
    padding: str = "longest",
    size: int = DEFAULT_POOL_SIZE,
    seed: int = 0,
) -> InputPool:
    """Token batches for a text encoder: every row ``sequence`` tokens long (a sweep point), or rows whose
    lengths are those of the texts in ``replay`` (one per line, tokenized with the artifact's tokenizer, in
    file order), padded by ``padding``.

    A replay pool holds enough batches to go through the file once (up to :data:`REPLAY_POOL_MAX`, and
    within :data:`POOL_BYTES_LIMIT`), so the timed calls follow the texts' real length distribution.

    Args:
        encoder: The artifact's tokenizer (ids below its vocabulary, its padding id and side, its maximum).
        batch_size: Rows per call.
        sequence: Tokens per row.
        replay: A ``.txt`` file of texts (or ``.tsv``, ``label<TAB>text``) instead of ``sequence``.
        padding: One of :data:`PADDINGS`.
        size: Distinct batches (for ``sequence``; a replay pool holds at least this many).
        seed: Seed of the random token ids.

    Returns:
        The :class:`InputPool`, keyed ``sequence=N`` or ``sequence=replay`` (and ``padding=...`` unless
        padded to the longest row).

    Raises:
        InvalidInputError: Neither or both of ``sequence`` and ``replay``, a length outside
            1..max_length, an unknown padding, or an unreadable replay file.
    """
    _check_counts(batch_size, size)
    padding = parse_padding(padding)
    if (sequence is None) == (replay is None):
        raise InvalidInputError("token inputs need a sequence length or a replay file (one of them)")
    if replay is not None:
        lengths = [int(n) for n in replay_lengths(replay, encoder)]
        per_batch = batch_size * encoder.max_length * 8 * len(encoder.record.inputs)
        count = max(size, min(REPLAY_POOL_MAX, -(-len(lengths) // batch_size)))
        count = max(2, min(count, POOL_BYTES_LIMIT // max(per_batch, 1)))
        label: str | int = "replay"
    else:
        lengths, count, label = [int(sequence)], size, int(sequence)  # type: ignore[arg-type]
    # "max_length" is one bucket, closed by the tokenizer's maximum; "bucket" the edges 8, 16, 32, ...
    strategy = "longest" if padding == "longest" else "buckets"
    edges = DEFAULT_BUCKETS if padding == "bucket" else ()
    items = token_batches(
        encoder, lengths, batch_size=batch_size, count=count, strategy=strategy, buckets=edges, seed=seed
    )
    used = np.asarray([lengths[i % len(lengths)] for i in range(count * batch_size)])
    tokens: dict[str, Any] = {"sequence": label, "padding": padding}
    if replay is not None:
        tokens["replay"] = os.fspath(replay)
    tokens["lengths"] = length_summary(used)
    widest = max(items, key=lambda feeds: next(iter(feeds.values())).shape[1])
    shapes = {name: list(a.shape) for name, a in widest.items()}
    key = (f"sequence={label}",) + (() if padding == "longest" else (f"padding={padding}",))
    return InputPool(tuple(items), "replay" if replay else "tokens", shapes, False, key=key, tokens=tokens)


def model_pool(
    manifest: Any,
    root: str | os.PathLike[str],
    *,
    batch_size: int,
    shapes: Mapping[str, Sequence[int]] | None = None,
    size: int = DEFAULT_POOL_SIZE,
) -> InputPool:
    """Inputs shaped for one measurement of an artifact: for a text encoder with its tokenizer, token
    batches (ids in its vocabulary, masks of ones) whose sequence length is the one ``shapes`` gives (each
    row that long); for anything else, :func:`random_pool`.

    Raises:
        InvalidInputError: A dynamic axis without a size, or a length outside the tokenizer's range.
    """
    from infership.runtime.text import encoder_for

    encoder = encoder_for(manifest, root)
    if encoder is not None and shapes:
        token_inputs = [s for s in manifest.inputs if s.name in encoder.record.inputs and s.name in shapes]
        if token_inputs:
            sequence = int(shapes[token_inputs[0].name][-1])
            return token_pool(encoder, batch_size=batch_size, sequence=sequence, size=size)
    return random_pool(manifest.inputs, batch_size=batch_size, shapes=shapes, size=size)


def _check_counts(batch_size: int, size: int) -> None:
    if batch_size < 1 or size < 1:
        raise InvalidInputError(f"batch size and pool size must be >= 1, got {batch_size} and {size}")


def _load_array(name: str, value: np.ndarray | str | os.PathLike[str]) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    else:
        arrays, _ = load_array_file(value, [name], what=f"--inputs {name}")
        if name not in arrays:
            raise InvalidInputError(f"--inputs {name}: expected one array in {value}, got {sorted(arrays)}")
        arr = arrays[name]
    if arr.ndim < 1:
        raise InvalidInputError(
            f"--inputs {name}: expected an array whose axis 0 indexes samples, got a scalar"
        )
    return arr
