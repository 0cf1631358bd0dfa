"""The re-iterable calibration set: batches of model inputs read on demand from an indexed source.

A :class:`CalibrationSet` never holds more than one batch in memory (the source decides how it reads:
memory-mapped ``.npy`` files, image files decoded one by one, a torch ``Dataset`` indexed item by item).
Every ``for batch in cset`` starts from the first sample again, which is what calibrators that make several
passes (NNCF, ONNX Runtime's histogram methods) need. Subsets (:meth:`CalibrationSet.sample`,
:meth:`CalibrationSet.split`) are index lists over the same source, so they are deterministic and cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from infership.runtime.errors import InvalidInputError
from infership.runtime.spec import TensorSpec

log = logging.getLogger(__name__)

#: The feed name used by sources that hold one unnamed array; :meth:`CalibrationSet.bind` renames it.
UNNAMED = ""


class SampleSource(Protocol):
    """An indexed collection of samples. Sources live in :mod:`infership.calibration.sources`.

    ``read`` returns the inputs of the requested samples stacked along a new axis 0, keyed by input name
    (:data:`UNNAMED` for a single unnamed input), and their labels when the source has any.
    """

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None]: ...

    @property
    def has_labels(self) -> bool: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Batch:
    """One batch: input name → array (batch axis first), and the labels when the source has them."""

    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(next(iter(self.feeds.values())))


@dataclass(frozen=True)
class CalibrationSet:
    """Model inputs for calibration or validation, re-iterable and streamed batch by batch.

    Build one with the functions of :mod:`infership.calibration.sources` (``from_image_folder``,
    ``from_numpy``, ``from_torch``), or from a string with :func:`~infership.calibration.from_spec`.
    Iterating yields ``dict[name, np.ndarray]`` batches; :meth:`batches` yields :class:`Batch` objects that
    carry labels too.

    Args:
        source: Where samples are read from.
        indices: Which samples of the source, in order (``None``: all of them).
        batch_size: Samples per batch; the last batch may be smaller unless ``drop_last``.
        drop_last: Drop a final incomplete batch (for models with a fixed batch size).
        names: Input name for each source key, set by :meth:`bind` (``{"": "x"}`` for an unnamed source).
        dtypes: Input name → dtype the arrays are cast to, set by :meth:`bind` (float → float only).
        progress: A description to show a progress bar with while iterating, or ``None`` for none.
        provenance: Extra facts recorded by :meth:`describe` (e.g. how the set was split).
    """

    source: SampleSource
    indices: tuple[int, ...] | None = None
    batch_size: int = 16
    drop_last: bool = False
    names: Mapping[str, str] = field(default_factory=dict)
    dtypes: Mapping[str, str] = field(default_factory=dict)
    progress: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.indices is not None:
            object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))

    # ------------------------------------------------------------------ size and order
    def _order(self) -> tuple[int, ...]:
        return self.indices if self.indices is not None else tuple(range(len(self.source)))

    def __len__(self) -> int:
        """Number of samples (not batches)."""
        return len(self.indices) if self.indices is not None else len(self.source)

    @property
    def num_batches(self) -> int:
        full, rest = divmod(len(self), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    @property
    def has_labels(self) -> bool:
        return self.source.has_labels

    # ------------------------------------------------------------------ derived sets
    def with_batch_size(self, batch_size: int, *, drop_last: bool = False) -> CalibrationSet:
        """The same samples, batched differently."""
        return replace(self, batch_size=batch_size, drop_last=drop_last)

    def with_progress(self, description: str | None) -> CalibrationSet:
        """The same samples; iterating shows a progress bar (on stderr) when ``description`` is set."""
        return replace(self, progress=description)

    def sample(self, n: int, *, seed: int = 0) -> CalibrationSet:
        """A deterministic random subset of ``n`` samples (all of them, shuffled, if ``n >= len``).

        Sources are often ordered by class (image folders), so the first ``n`` would be a biased subset.

        Raises:
            InvalidInputError: ``n`` is not positive.
        """
        if n < 1:
            raise InvalidInputError(f"the number of samples must be >= 1, got {n}")
        order = np.asarray(self._order())
        pick = np.random.default_rng(seed).permutation(len(order))[: min(n, len(order))]
        prov = {**self.provenance, "sampled": {"n": int(len(pick)), "of": len(order), "seed": seed}}
        return replace(self, indices=tuple(order[np.sort(pick)].tolist()), provenance=prov)

    def shuffled(self, *, seed: int = 0) -> CalibrationSet:
        """The same samples in a deterministic random order (text sets are sorted by length: shuffled, each
        batch mixes lengths and is padded to its longest, as callers' batches are)."""
        order = np.asarray(self._order())
        perm = np.random.default_rng(seed).permutation(len(order))
        return replace(self, indices=tuple(order[perm].tolist()))

    def split(self, calib_fraction: float, *, seed: int = 0) -> tuple[CalibrationSet, CalibrationSet]:
        """Split into disjoint (calibration, held-out) sets, deterministically for a given ``seed``.

        Args:
            calib_fraction: Share of the samples used for calibration, in (0, 1).
            seed: Seed of the permutation.

        Returns:
            The calibration set and the held-out set; both keep this set's batching and binding.

        Raises:
            InvalidInputError: The fraction is outside (0, 1), or one side would be empty.
        """
        if not 0.0 < calib_fraction < 1.0:
            raise InvalidInputError(
                f"calib_fraction must be between 0 and 1 (exclusive), got {calib_fraction}"
            )
        order = np.asarray(self._order())
        n_calib = int(round(len(order) * calib_fraction))
        if n_calib < 1 or n_calib >= len(order):
            raise InvalidInputError(
                f"splitting {len(order)} samples at {calib_fraction:.2f} leaves one side empty; "
                "give more samples or pass a separate held-out set"
            )
        perm = np.random.default_rng(seed).permutation(len(order))
        calib, held = np.sort(perm[:n_calib]), np.sort(perm[n_calib:])
        split = {"seed": seed, "calib_fraction": calib_fraction, "of": len(order)}
        return (
            replace(
                self,
                indices=tuple(order[calib].tolist()),
                provenance={**self.provenance, "split": {**split, "part": "calibration"}},
            ),
            replace(
                self,
                indices=tuple(order[held].tolist()),
                provenance={**self.provenance, "split": {**split, "part": "holdout"}},
            ),
        )

    def subset(self, start: int, stop: int) -> CalibrationSet:
        """Samples ``start:stop`` of this set, in order (used to feed calibrators in bounded chunks)."""
        return replace(self, indices=self._order()[start:stop], progress=None)

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self.batches():
            yield batch.feeds

    def batches(self) -> Iterator[Batch]:
        """Yield :class:`Batch` objects (inputs and labels), starting from the first sample every time."""
        order = self._order()
        starts = range(0, len(order), self.batch_size)
        if self.progress:
            starts = _with_progress(starts, self.num_batches, self.progress)  # type: ignore[assignment]
        for start in starts:
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            feeds, labels = self.source.read(idx)
            yield Batch(self._finish(feeds), labels)

    def _finish(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.names:
            return feeds
        out = {}
        for key, value in feeds.items():
            name = self.names.get(key, key)
            want = self.dtypes.get(name)
            if want is not None and value.dtype.name != want:
                value = value.astype(want)
            out[name] = np.ascontiguousarray(value)
        return out

    def first(self) -> Batch:
        """The first sample as a batch of one (cheap: reads one item).

        Raises:
            InvalidInputError: The set is empty.
        """
        if len(self) == 0:
            raise InvalidInputError(
                f"the calibration set is empty ({self.source.describe().get('kind', 'source')})"
            )
        feeds, labels = self.source.read(self._order()[:1])
        return Batch(self._finish(feeds), labels)

    # ------------------------------------------------------------------ checking against a model
    def check_against(self, specs: Sequence[TensorSpec]) -> None:
        """Refuse a set that cannot feed a model with these inputs, before any calibration work starts.

        Checks that the set is not empty, that its input names match (a single unnamed array matches a
        single-input model), and that the first sample has the right rank, fixed dimensions and a
        compatible dtype (floating data for floating inputs, integer data for integer inputs; a uint8
        array for a float input is refused because it usually means unpreprocessed pixels).

        Raises:
            InvalidInputError: Says what the model expects and what the set holds.
        """
        bound = self.bind(specs)
        del bound

    def bind(self, specs: Sequence[TensorSpec]) -> CalibrationSet:
        """Check against the model inputs (see :meth:`check_against`) and return a set whose batches use
        the model's input names and dtypes. A model with a fixed batch size gets batches of that size.

        Raises:
            InvalidInputError: The set does not match the inputs.
        """
        if not specs:
            raise InvalidInputError("the model declares no inputs")
        if len(self) == 0:
            raise InvalidInputError(
                f"the calibration set is empty ({self.source.describe().get('kind', 'source')})"
            )
        feeds, _ = self.source.read(self._order()[:1])
        want = [s.name for s in specs]
        keys = list(feeds)
        if keys == [UNNAMED]:
            if len(specs) != 1:
                raise InvalidInputError(
                    f"the model has {len(specs)} inputs {want}; the calibration data is one unnamed array "
                    "(give a mapping name → array, or an .npz file with one array per input)"
                )
            names = {UNNAMED: specs[0].name}
        else:
            mapped = {self.names.get(k, k) for k in keys}
            if mapped != set(want):
                raise InvalidInputError(
                    f"the model expects inputs {want}; the calibration data holds {sorted(mapped)}"
                    + (f"; missing {sorted(set(want) - mapped)}" if set(want) - mapped else "")
                    + (f"; unexpected {sorted(mapped - set(want))}" if mapped - set(want) else "")
                )
            names = {k: self.names.get(k, k) for k in keys}
        by_name = {names[k]: v for k, v in feeds.items()}
        dtypes = {}
        batch_sizes = set()
        for spec in specs:
            sample = by_name[spec.name]
            _check_sample(spec, sample)
            dtypes[spec.name] = spec.dtype
            if spec.batch_size is not None:
                batch_sizes.add(spec.batch_size)
        bound = replace(self, names=names, dtypes=dtypes)
        if batch_sizes:
            (fixed,) = batch_sizes if len(batch_sizes) == 1 else (None,)
            if fixed is None:
                raise InvalidInputError(
                    f"the model's inputs have different fixed batch sizes {sorted(batch_sizes)}"
                )
            if len(self) < fixed:
                raise InvalidInputError(
                    f"the model has a fixed batch size of {fixed}; the calibration set has only {len(self)} samples"
                )
            bound = replace(bound, batch_size=fixed, drop_last=True)
        return bound

    def describe(self) -> dict[str, Any]:
        """Provenance for the manifest: the source, how many samples, and how they were selected."""
        return {
            **self.source.describe(),
            "samples": len(self),
            "batch_size": self.batch_size,
            **({"selection": dict(self.provenance)} if self.provenance else {}),
        }


def _check_sample(spec: TensorSpec, batch: np.ndarray) -> None:
    """``batch`` holds one sample with a batch axis; check rank, fixed non-batch dims and dtype kind."""
    if batch.ndim != spec.rank:
        raise InvalidInputError(
            f"input {spec.name!r}: the model expects rank {spec.rank} {spec.shape_str()} (batch axis first); "
            f"a calibration sample has shape {list(batch.shape[1:])} (rank {batch.ndim} with the batch axis)"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, batch.shape, strict=True)):
        if axis > 0 and isinstance(want, int) and want != got:
            raise InvalidInputError(
                f"input {spec.name!r}: the model expects size {want} on axis {axis} (shape {spec.shape_str()}); "
                f"calibration samples have shape {list(batch.shape[1:])}"
            )
    want_kind, got_kind = np.dtype(spec.dtype).kind, batch.dtype.kind
    if want_kind == "f" and got_kind != "f":
        hint = " (raw pixels? run them through the preprocessing first)" if batch.dtype == np.uint8 else ""
        raise InvalidInputError(
            f"input {spec.name!r}: the model expects {spec.dtype}; the calibration data is {batch.dtype.name}{hint}"
        )
    if want_kind in "iub" and got_kind not in "iub":
        raise InvalidInputError(
            f"input {spec.name!r}: the model expects {spec.dtype}; the calibration data is {batch.dtype.name}"
        )


def _with_progress(items: range, total: int, description: str) -> Iterator[int]:
    """Yield ``items`` while a rich progress bar (stderr, transient) counts batches."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
