"""Micro-batching: concurrent callers' requests gathered into one model run.

A model runs a batch of 16 in much less than 16 times the cost of one (weights are read once, the cores are
kept busy), so a server whose callers each send one sample gains throughput by running them together.
:class:`BatchingPredictor` does that in-process: each request is checked on its caller's thread (a bad
input fails only that caller, before it joins a batch), waits at most ``max_wait_ms`` for others, runs in
one batch of up to ``max_batch`` rows, and each caller gets its own rows back. If a merged run fails, its
requests are re-run one by one, so a failure still reaches only the caller whose input caused it.

Requests whose non-batch shapes differ (texts of different lengths) never share a run unless ``buckets`` is
given: then every dynamic non-batch axis is padded up to the smallest bucket that holds it (with
``pad_value``), requests of the same bucket run together, and output axes that carry the same symbolic
name as a padded input axis are cut back to the caller's own length. Padding changes results unless the
model ignores padded positions (an attention mask does); it is the caller's choice, off by default.

The same merge/split functions serve Ray Serve's ``@serve.batch`` in :mod:`infership.serve`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InferenceError, InvalidInputError
from .spec import TensorSpec

if TYPE_CHECKING:
    from .monitoring import Monitor
    from .predictor import Predictor

__all__ = ["BatchingPredictor", "merge_feeds", "pad_feeds", "run_together", "shape_key", "split_outputs"]

log = logging.getLogger(__name__)

_STOP = object()


def shape_key(feeds: Mapping[str, np.ndarray]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Each input's name and shape past the batch axis: requests with equal keys can share a run."""
    return tuple((name, a.shape[1:]) for name, a in feeds.items())


def merge_feeds(requests: Sequence[Mapping[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate requests' feeds along the batch axis.

    Args:
        requests: Feeds with equal names and equal non-batch shapes.

    Returns:
        The merged feeds and each request's row count, in order.
    """
    rows = [next(iter(r.values())).shape[0] for r in requests]
    if len(requests) == 1:
        return dict(requests[0]), rows
    names = list(requests[0])
    return {n: np.concatenate([r[n] for r in requests], axis=0) for n in names}, rows


def split_outputs(outputs: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut batch outputs back into each request's rows.

    Raises:
        InferenceError: An output's first axis is not the merged batch (the model is not batch-major).
    """
    total = sum(rows)
    for name, value in outputs.items():
        if np.ndim(value) == 0 or value.shape[0] != total:
            raise InferenceError(
                f"output {name!r} has shape {list(np.shape(value))}, not a batch of {total}: "
                "outputs cannot be split back per request"
            )
    out, start = [], 0
    for n in rows:
        out.append({k: v[start : start + n] for k, v in outputs.items()})
        start += n
    return out


def run_together(
    predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    requests: Sequence[Mapping[str, np.ndarray]],
    *,
    on_batch: Callable[[list[int], dict[str, np.ndarray], dict[str, np.ndarray]], None] | None = None,
) -> list[dict[str, np.ndarray] | Exception]:
    """Run checked requests in as few model runs as their shapes allow; each gets its own outputs back.

    Requests with equal non-batch shapes are merged into one run. If a merged run fails, its requests are
    run one by one, so an error reaches only the request that caused it.

    Args:
        predict: Runs one batch (``Predictor.predict``).
        requests: Checked feeds, one mapping per request.
        on_batch: Called after each successful merged run with the members' indices, the merged feeds
            and the outputs (for metrics).

    Returns:
        Per request, in order: its outputs, or the exception its run raised (native errors wrapped in
        :class:`InferenceError`).
    """
    results: list[dict[str, np.ndarray] | Exception] = [InferenceError("not run")] * len(requests)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, feeds in enumerate(requests):
        groups.setdefault(shape_key(feeds), []).append(i)
    for members in groups.values():
        try:
            merged, rows = merge_feeds([requests[i] for i in members])
            outputs = predict(merged)
            parts = split_outputs(outputs, rows)
        except Exception as exc:  # noqa: BLE001 - any failure of a merged run: each request re-runs alone
            if len(members) > 1:
                log.info("a run of %d requests failed (%s); running them one by one", len(members), exc)
            for i in members:
                results[i] = _run_one(predict, requests[i]) if len(members) > 1 else _as_error(exc)
            continue
        if on_batch is not None:
            on_batch(members, merged, outputs)
        for i, part in zip(members, parts, strict=True):
            results[i] = part
    return results


def _run_one(
    predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], feeds: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray] | Exception:
    try:
        return predict(dict(feeds))
    except Exception as exc:  # noqa: BLE001 - handed to this request's caller, who sees the real type
        return _as_error(exc)


def _as_error(exc: Exception) -> Exception:
    if isinstance(exc, (InferenceError, InvalidInputError)):
        return exc
    wrapped = InferenceError(f"the model run failed: {type(exc).__name__}: {exc}")
    wrapped.__cause__ = exc
    return wrapped


def pad_feeds(
    feeds: Mapping[str, np.ndarray],
    specs: Sequence[TensorSpec],
    buckets: Sequence[int],
    pad_value: float | Mapping[str, float] = 0,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Pad every dynamic non-batch axis up to the smallest bucket that holds it.

    Args:
        feeds: Checked feeds.
        specs: The model's input specs.
        buckets: Sizes to pad to, ascending; a size beyond the largest is left as it is.
        pad_value: The value padded positions get (per input name, or one for all).

    Returns:
        The padded feeds, and the original size of each padded axis by its symbolic name (to cut outputs
        that share the name).
    """
    out: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    for spec in specs:
        a = feeds[spec.name]
        pad = [(0, 0)] * a.ndim
        for axis, dim in spec.dynamic_axes.items():
            if axis == 0:
                continue
            n = a.shape[axis]
            target = next((b for b in buckets if b >= n), n)
            pad[axis] = (0, target - n)
            if isinstance(dim, str):
                sizes[dim] = n
        if any(p[1] for p in pad):
            value = pad_value.get(spec.name, 0) if isinstance(pad_value, Mapping) else pad_value
            a = np.pad(a, pad, constant_values=np.asarray(value, dtype=a.dtype))
        out[spec.name] = a
    return out, sizes


def _unpad(outputs: dict[str, np.ndarray], specs: Sequence[TensorSpec], sizes: Mapping[str, int]) -> None:
    for spec in specs:
        index = [slice(None)] * spec.rank
        cut = False
        for axis, dim in spec.dynamic_axes.items():
            if axis and isinstance(dim, str) and dim in sizes:
                index[axis] = slice(0, sizes[dim])
                cut = True
        if cut and spec.name in outputs:
            outputs[spec.name] = outputs[spec.name][tuple(index)]


@dataclass
class _Request:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple[Any, ...]
    sizes: dict[str, int]
    enqueued: float
    future: concurrent.futures.Future[dict[str, np.ndarray]] = field(
        default_factory=concurrent.futures.Future
    )


class BatchingPredictor:
    """A front for a :class:`~infership.runtime.Predictor` that runs concurrent callers' requests together.

    Thread-safe; ``predict`` blocks its caller, ``apredict`` awaits without blocking the event loop.
    Worker threads (``max_concurrent_batches``) run the batches; stop them with :meth:`close` (or use a
    ``with`` block), which finishes the requests already queued.

    Args:
        predictor: The model to run (it stays owned by the caller: ``close`` does not close it).
        max_batch: Most rows per run. A single request larger than this runs alone.
        max_wait_ms: Longest a request waits for others before its batch runs. Under load batches fill
            from the queue without waiting.
        buckets: Pad dynamic non-batch axes up to these sizes so that requests of different lengths
            share runs (see the module docstring); ``None``: only equal shapes share a run.
        pad_value: The value padded positions get (one for all inputs, or per input name).
        monitor: Records requests, errors, latency, batch sizes, queue wait and drift.
        max_concurrent_batches: Batches in flight at once (one worker thread each). More than one keeps
            the cores busy while a batch is merged and split, and suits runtimes that run several
            requests in parallel (OpenVINO streams); 1 gives the largest batches. ``None`` (default): the
            predictor's ``optimal_concurrency`` — one batch per OpenVINO stream under the throughput hint
            (a single batch would keep one stream's cores busy and leave the others idle), else 1.
        max_queue: Most requests waiting; beyond it ``predict`` raises ``InferenceError`` at once
            (back-pressure instead of unbounded memory).

    Raises:
        InvalidInputError: A bad option.
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 2.0,
        buckets: Sequence[int] | None = None,
        pad_value: float | Mapping[str, float] = 0,
        monitor: Monitor | None = None,
        max_concurrent_batches: int | None = None,
        max_queue: int = 4096,
    ) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise InvalidInputError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        if max_wait_ms < 0:
            raise InvalidInputError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if max_concurrent_batches is None:
            max_concurrent_batches = predictor.optimal_concurrency
        if not isinstance(max_concurrent_batches, int) or max_concurrent_batches < 1:
            raise InvalidInputError(f"max_concurrent_batches must be >= 1, got {max_concurrent_batches!r}")
        if buckets is not None and (not buckets or any(int(b) < 1 for b in buckets)):
            raise InvalidInputError(f"buckets must be positive sizes, got {buckets!r}")
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.buckets = tuple(sorted(int(b) for b in buckets)) if buckets is not None else None
        self.pad_value = pad_value
        self.monitor = monitor
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._loop, name=f"infership-batching-{i}", daemon=True)
            for i in range(max_concurrent_batches)
        ]
        for worker in self._workers:
            worker.start()

    # ----------------------------------------------------------------------------- callers
    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.predictor.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.predictor.outputs

    def predict(self, inputs: Any) -> dict[str, np.ndarray]:
        """Run ``inputs`` (as for ``Predictor.predict``) in the next batch and return its own outputs.

        Raises:
            InvalidInputError: This caller's input is bad (checked before it joins a batch).
            InferenceError: The run failed for this input, the queue is full, or the front is closed.
        """
        start = time.perf_counter()
        try:
            result = self._submit(inputs).result()
        except BaseException as exc:
            self._record(start, exc)
            raise
        self._record(start, None)
        return result

    async def apredict(self, inputs: Any) -> dict[str, np.ndarray]:
        """:meth:`predict` for asyncio code: awaits the batch without blocking the event loop.

        Raw images are decoded in a worker thread; arrays are checked on the loop (microseconds).
        """
        start = time.perf_counter()
        try:
            if isinstance(inputs, np.ndarray) or (
                isinstance(inputs, Mapping) and all(isinstance(v, np.ndarray) for v in inputs.values())
            ):
                future = self._submit(inputs)
            else:
                future = await asyncio.to_thread(self._submit, inputs)
            result = await asyncio.wrap_future(future)
        except BaseException as exc:
            self._record(start, exc)
            raise
        self._record(start, None)
        return result

    __call__ = predict

    def _record(self, start: float, error: BaseException | None) -> None:
        if self.monitor is not None:
            self.monitor.observe_request(time.perf_counter() - start, error=error)

    def _submit(self, inputs: Any) -> concurrent.futures.Future[dict[str, np.ndarray]]:
        if self._closed:
            raise InferenceError("this BatchingPredictor is closed")
        feeds = self.predictor.prepare(inputs)
        sizes: dict[str, int] = {}
        if self.buckets is not None:
            feeds, sizes = pad_feeds(feeds, self.predictor.inputs, self.buckets, self.pad_value)
        rows = {a.shape[0] for a in feeds.values()}
        if len(rows) != 1:
            raise InvalidInputError(f"all inputs must have the same batch size, got {sorted(rows)}")
        key = shape_key(feeds)
        req = _Request(feeds, rows.pop(), key, sizes, time.perf_counter())
        try:
            self._queue.put_nowait(req)
        except queue.Full as exc:
            raise InferenceError(
                f"{self._queue.maxsize} requests are already waiting; try again later (max_queue)"
            ) from exc
        return req.future

    # ----------------------------------------------------------------------------- worker
    def _loop(self) -> None:
        carry: Any = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            batch, rows = [first], first.rows
            deadline = first.enqueued + self.max_wait_s
            while rows < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    req = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if req is _STOP or rows + req.rows > self.max_batch:
                    carry = req
                    break
                batch.append(req)
                rows += req.rows
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        def on_batch(
            members: list[int], merged: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
        ) -> None:
            if self.monitor is not None:
                started = time.perf_counter()
                rows = sum(batch[i].rows for i in members)
                self.monitor.observe_batch(rows, [started - batch[i].enqueued for i in members])
                self.monitor.observe_data(merged, outputs)

        results = run_together(self.predictor.predict, [r.feeds for r in batch], on_batch=on_batch)
        for req, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                req.future.set_exception(result)
                continue
            if req.sizes:
                _unpad(result, self.predictor.outputs, req.sizes)
            req.future.set_result(result)

    # ----------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Finish the requests already queued, then stop the worker. Idempotent; the Predictor stays open."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._workers:
            self._queue.put(_STOP)
        for worker in self._workers:
            worker.join()

    def __enter__(self) -> BatchingPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"BatchingPredictor({self.predictor!r}, max_batch={self.max_batch}, "
            f"max_wait_ms={self.max_wait_s * 1000:g})"
        )
