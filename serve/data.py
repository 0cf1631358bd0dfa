"""Batch inference on Ray Data: a callable class for ``map_batches`` and ``infership batch-predict``.

:class:`ArtifactBatchPredictor` holds one Predictor per actor, with intra-op threads matched to the actor's
``num_cpus``; use it on any dataset whose columns are named like the model's inputs::

    ds.map_batches(
        ArtifactBatchPredictor,
        fn_constructor_kwargs={"artifact": "artifacts/mobilenet", "threads": 1},
        concurrency=2, num_cpus=1, batch_size=32, batch_format="numpy",
    )

:func:`batch_predict` builds the dataset from a file or folder and writes the outputs in input order. An
image folder and ``.npy`` / ``.npz`` files travel as paths and row indices: each actor reads its own rows
(images decoded through the artifact's preprocessing, arrays memory-mapped), so no data passes through the
object store and no read task competes with the actors for CPUs. A text file (one text per line, for an
artifact that carries a tokenizer) travels as its lines. Parquet is read by Ray Data's reader.
Paths must be readable at the same place on every node of a cluster.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from infership.runtime.errors import InvalidInputError
from infership.runtime.preprocess import IMAGE_EXTENSIONS

__all__ = ["ArtifactBatchPredictor", "BatchPredictResult", "batch_predict", "describe_input"]

log = logging.getLogger(__name__)

#: Column that carries image paths through the dataset (and into the output).
PATH_COLUMN = "path"
#: Column that carries texts (one line of a text file each).
TEXT_COLUMN = "text"


@dataclass(frozen=True)
class BatchPredictResult:
    """What :func:`batch_predict` did."""

    rows: int
    output: Path
    seconds: float
    #: Seconds from the start to the first batch of outputs (the actor pool's start-up and one batch);
    #: ``None`` where the output is written by Ray (Parquet).
    first_batch_s: float | None = None
    first_batch_rows: int = 0

    @property
    def steady_rows_per_s(self) -> float | None:
        """Rows per second after the first batch: throughput without the actor pool's start-up."""
        if self.first_batch_s is None or self.rows <= self.first_batch_rows:
            return None
        return (self.rows - self.first_batch_rows) / max(self.seconds - self.first_batch_s, 1e-9)


def describe_input(path: str | os.PathLike[str]) -> tuple[str, int | None]:
    """The kind of ``path`` (``images``, ``npy``, ``npz``, ``text``, ``parquet``) and its row count when
    known without reading it all.

    Raises:
        InvalidInputError: A path that is none of these.
    """
    p = Path(path)
    if p.is_dir():
        if any(f.suffix.lower() == ".parquet" for f in p.iterdir()):
            return "parquet", None
        images = _image_files(p)
        if images:
            return "images", len(images)
        raise InvalidInputError(
            f"{p}: no images ({', '.join(IMAGE_EXTENSIONS)}) or .parquet files in the folder"
        )
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return "npy", None
    if suffix == ".npz":
        return "npz", None
    if suffix == ".parquet":
        return "parquet", None
    if suffix == ".txt":
        return "text", None
    if not p.exists():
        raise InvalidInputError(f"{p}: no such file or folder")
    raise InvalidInputError(f"{p}: expected an image folder, .npy, .npz, .txt or Parquet")


def _image_files(folder: Path) -> list[str]:
    return sorted(str(f) for f in folder.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())


class ArtifactBatchPredictor:
    """A Ray Data ``map_batches`` callable: one Predictor per actor.

    Batches hold either the model's inputs as columns, a ``path`` column of image files (artifacts with
    preprocessing), a ``text`` column (artifacts with a tokenizer), or an ``id`` column of row indices into
    ``source`` (an ``.npy`` / ``.npz`` file).
    Returned batches hold the outputs, plus ``path`` when images were read.

    Args:
        artifact: The artifact directory.
        backend, precision, variant: What to load (as for ``Predictor.load``).
        threads: Intra-op threads: the actor's ``num_cpus``.
        source: An ``.npy`` / ``.npz`` file the ``id`` column indexes.
        warmup: Warm-up calls at start.
    """

    def __init__(
        self,
        artifact: str,
        *,
        backend: str = "auto",
        precision: str | None = None,
        variant: str | None = None,
        threads: int = 1,
        source: str | None = None,
        warmup: int = 1,
    ) -> None:
        from infership.runtime import Predictor

        self.predictor = Predictor.load(
            artifact,
            backend=backend,
            precision=precision if variant is None else None,
            variant=variant,
            intra_op_threads=max(1, int(threads)),
            warmup=warmup,
        )
        self._arrays: dict[str, np.ndarray] | None = None
        if source is not None:
            self._arrays = _open_arrays(source, [s.name for s in self.predictor.inputs])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep: dict[str, np.ndarray] = {}
        if PATH_COLUMN in batch:
            paths = [str(p) for p in batch[PATH_COLUMN]]
            inputs: Any = paths
            keep[PATH_COLUMN] = np.asarray(paths)
        elif TEXT_COLUMN in batch and self.predictor.manifest.tokenizer is not None:
            inputs = [str(t) for t in batch[TEXT_COLUMN]]
        elif self._arrays is not None:
            idx = np.asarray(batch["id"], dtype=np.int64)
            inputs = {name: np.asarray(a[idx]) for name, a in self._arrays.items()}
        else:
            inputs = {s.name: _column(batch, s) for s in self.predictor.inputs}
        return {**keep, **self.predictor.predict(inputs)}


def _open_arrays(source: str, names: list[str]) -> dict[str, np.ndarray]:
    """The input arrays of an ``.npy`` / ``.npz`` file (memory-mapped where the format allows), by name."""
    from infership.calibration import load_array_file

    arrays, _labels = load_array_file(source, names, mmap=True, what="batch-predict input")
    missing = sorted(set(names) - set(arrays))
    if missing:
        raise InvalidInputError(f"{source}: no array for input(s) {missing} (arrays: {sorted(arrays)})")
    lengths = {a.shape[0] for a in arrays.values()}
    if len(lengths) != 1:
        raise InvalidInputError(f"{source}: arrays of different lengths {sorted(lengths)}")
    return {n: arrays[n] for n in names}


def _column(batch: dict[str, np.ndarray], spec: Any) -> np.ndarray:
    if spec.name not in batch:
        raise InvalidInputError(f"the dataset has no column {spec.name!r} (columns: {sorted(batch)})")
    col = batch[spec.name]
    if col.dtype == object:  # variable-length lists from Parquet: one array per row
        col = np.stack([np.asarray(v) for v in col])
    fixed = spec.shape[1:]
    if col.ndim == 2 and len(fixed) > 1 and all(isinstance(d, int) for d in fixed):
        col = col.reshape(col.shape[0], *fixed)  # flattened tensors
    return col.astype(spec.dtype, copy=False)


def batch_predict(
    artifact: str | os.PathLike[str],
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    concurrency: int = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    backend: str = "auto",
    precision: str | None = None,
    variant: str | None = None,
    address: str | None = None,
    progress: bool = False,
) -> BatchPredictResult:
    """Predict every row of ``source`` on Ray Data and write the outputs in input order.

    Args:
        artifact: The artifact directory.
        source: An image folder, ``.npy`` / ``.npz`` file, or Parquet file/folder (see
            :func:`describe_input`).
        output: ``*.npz`` (one array per output, plus ``path`` for images), else a folder of Parquet files.
        batch_size: Rows per model run.
        concurrency: Actors in the pool.
        num_cpus: CPUs per actor; its Predictor's intra-op threads.
        num_gpus: GPUs per actor.
        backend, precision, variant: What each actor loads.
        address: A Ray cluster to join; ``None`` starts a local Ray (stopped again at the end).
        progress: Show Ray Data's progress bars.

    Returns:
        Rows, output path, wall-clock seconds (Ray start-up excluded).

    Raises:
        InvalidInputError: An input the artifact cannot take (text without a tokenizer, images without
            preprocessing, an unknown kind of file).
        ArtifactError: The artifact cannot be read.
    """
    import ray
    from infership.runtime import Artifact

    from .local_ray import init_local_ray

    manifest = Artifact.load(artifact).manifest
    kind, _ = describe_input(source)
    if kind == "text" and manifest.tokenizer is None:
        raise InvalidInputError(f"artifact {manifest.name!r} records no tokenizer: it cannot take raw text")
    if kind == "images" and manifest.preprocessing is None:
        raise InvalidInputError(
            f"artifact {manifest.name!r} records no preprocessing: it cannot take raw images"
        )
    started_ray = not ray.is_initialized()
    if started_ray:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            init_local_ray(include_dashboard=False, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # outputs in input order
        ctx.enable_progress_bars = progress
        start = time.perf_counter()
        ds, source_arg = _dataset(ray, kind, Path(source), [s.name for s in manifest.inputs], batch_size)
        predicted = ds.map_batches(
            ArtifactBatchPredictor,
            fn_constructor_kwargs={
                "artifact": str(Path(artifact).resolve()),
                "backend": backend,
                "precision": precision,
                "variant": variant,
                "threads": max(1, int(num_cpus)),
                "source": source_arg,
            },
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            batch_size=batch_size,
            batch_format="numpy",
        )
        out = Path(output)
        rows, first = _write(predicted, out, start)
        seconds = time.perf_counter() - start
    finally:
        if started_ray:
            ray.shutdown()
    log.info("batch-predict: %d rows in %.1f s (%.1f rows/s)", rows, seconds, rows / max(seconds, 1e-9))
    return BatchPredictResult(rows, out, seconds, *(first or (None, 0)))


def _dataset(ray: Any, kind: str, source: Path, names: list[str], batch_size: int) -> tuple[Any, str | None]:
    if kind == "images":
        return _items(ray, [{PATH_COLUMN: p} for p in _image_files(source)], batch_size), None
    if kind == "text":
        lines = [t for t in source.read_text(encoding="utf-8").splitlines() if t.strip()]
        if not lines:
            raise InvalidInputError(f"{source}: no text (one text per line)")
        return _items(ray, [{TEXT_COLUMN: t} for t in lines], batch_size), None
    if kind in ("npy", "npz"):
        rows = next(iter(_open_arrays(str(source), names).values())).shape[0]
        # Row indices made in the driver (ray.data.range would start read tasks, which wait for CPUs the
        # actors hold on a small machine).
        return _items(ray, [{"id": i} for i in range(rows)], batch_size), str(source.resolve())
    # Parquet: Ray Data's reader. Its read tasks reserve no CPU: otherwise they wait for the CPUs the actors
    # hold when the pool covers the machine.
    return ray.data.read_parquet(str(source), num_cpus=0), None


#: Most input blocks a dataset made in the driver is cut into.
MAX_BLOCKS = 1000


def _items(ray: Any, rows: list[dict[str, Any]], batch_size: int) -> Any:
    """``rows`` as a dataset of about one block per batch (at most :data:`MAX_BLOCKS`).

    The actor pool hands out whole blocks, bundled until they hold ``batch_size`` rows: a dataset of one
    block runs on one actor whatever the pool's size, and Ray Data's default of 200 small blocks costs an
    object-store put each (a quarter of a second for 1,000 paths) and leaves a short batch after nearly every
    full one. Blocks of ``len(rows) / blocks`` rows (rounded either way) keep most batches full."""
    blocks = max(1, min(-(-len(rows) // max(1, batch_size)), MAX_BLOCKS))
    return ray.data.from_items(rows, override_num_blocks=blocks)


def _write(ds: Any, out: Path, start: float) -> tuple[int, tuple[float, int] | None]:
    """Write the outputs; returns the rows and, for ``.npz``, when the first batch came (seconds after
    ``start``) with its rows."""
    if out.suffix.lower() != ".npz":
        ds.write_parquet(str(out))
        return int(ds.count()), None
    parts: dict[str, list[np.ndarray]] = {}
    first: tuple[float, int] | None = None
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        if first is None and batch:
            first = (time.perf_counter() - start, len(next(iter(batch.values()))))
        for k, v in batch.items():
            parts.setdefault(k, []).append(np.asarray(v))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    # Ray hands strings back as object arrays; .npz files must load without pickle.
    arrays = {k: a.astype(str) if a.dtype == object else a for k, a in arrays.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".npz", dir=out.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return (int(next(iter(arrays.values())).shape[0]) if arrays else 0), first
