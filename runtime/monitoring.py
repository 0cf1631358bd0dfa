"""Monitoring for production code: Prometheus metrics of a served model, and input / output drift.

:class:`Monitor` keeps, in a ``prometheus_client`` registry: requests, errors by type, a latency histogram,
batch sizes and queue wait (fed by :class:`~infership.runtime.batching.BatchingPredictor`), and drift
gauges. :class:`DriftMonitor` compares a window of live traffic with the reference statistics recorded in
the manifest (:mod:`infership.runtime.statistics`); without them drift monitoring is off, and
``Monitor.drift_off_reason`` (also logged, and exported as ``infership_drift_enabled 0``) says why.

Wrap a Predictor with :class:`MonitoredPredictor`, or pass ``monitor=`` to a ``BatchingPredictor``::

    monitor = Monitor(predictor.manifest)
    served = MonitoredPredictor(predictor, monitor)
    served.predict(x)
    body, content_type = monitor.exposition()      # for a /metrics endpoint

``prometheus_client`` is imported when a Monitor is created (``pip install prometheus-client``). When the
environment variable ``PROMETHEUS_MULTIPROC_DIR`` is set (several server processes on one host),
metrics are written there and :meth:`Monitor.exposition` aggregates every process's (the library's
multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InfershipError
from .manifest import Manifest
from .statistics import REFERENCE_KEY, class_confidence, row_lengths
from .tasks import Task, judge_for

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ["DriftMonitor", "Monitor", "MonitoredPredictor", "MonitoringUnavailable"]

log = logging.getLogger(__name__)

#: Latency buckets (seconds): 0.5 ms … 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class MonitoringUnavailable(InfershipError, ImportError):
    """``prometheus_client`` is not installed."""


class DriftMonitor:
    """Live input and output statistics over the last ``window`` observed batches, against a reference.

    Figures (see :meth:`figures`): per input ``mean``, ``std``, ``mean_shift`` (|live mean − reference
    mean| in reference standard deviations), ``std_ratio``, ``nonfinite_rate`` (NaN/Inf per element),
    ``length_mean`` and ``length_shift`` (integer inputs of rank ≥ 2); for a classification model
    ``class_distance`` (total variation distance between the live and reference predicted-class
    distributions, 0…1), ``confidence_mean`` and ``confidence_shift``.

    Args:
        reference: The record from ``manifest.extra["reference_statistics"]``.
        task: The manifest's task.
        window: How many observed batches the live figures cover.
    """

    def __init__(self, reference: Mapping[str, Any], *, task: Task | str, window: int = 1000) -> None:
        self.reference = reference
        self.task = Task.parse(task)
        self._judge = judge_for(self.task)
        self._inputs = {name: _Window(window) for name in reference.get("inputs", {})}
        self._classes = _Window(window)
        self._confidence = _Window(window)
        outs = reference.get("outputs") or {}
        self._class_output = next((n for n, f in outs.items() if f.get("classes")), None)
        self._ref_classes = np.asarray(outs[self._class_output]["classes"]) if self._class_output else None

    def observe_inputs(self, feeds: Mapping[str, Any]) -> dict[str, int]:
        """Add one batch of feeds (name → array) to the window; returns the NaN/Inf count of each input
        it read, so callers need not count them again."""
        counts: dict[str, int] = {}
        for name, window in self._inputs.items():
            if name in feeds:
                item = _moments(np.asarray(feeds[name]), self._shift(name))
                counts[name] = item["nonfinite"]
                window.push(item)
        return counts

    def _shift(self, name: str) -> float:
        """The centre an input's sums are taken around: its reference mean."""
        mean = self.reference["inputs"][name].get("mean")
        return float(mean) if mean is not None and np.isfinite(mean) else 0.0

    def observe_outputs(self, outputs: Mapping[str, Any]) -> None:
        """Add one batch of outputs to the window (class distribution and confidence)."""
        if self._class_output is None or self._class_output not in outputs:
            return
        scores = np.asarray(outputs[self._class_output])
        pred = np.asarray(self._judge.predictions({self._class_output: scores}))
        counts = np.bincount(pred, minlength=len(self._ref_classes)).astype(np.float64)  # type: ignore[arg-type]
        conf = class_confidence(scores)
        self._classes.push({"counts": counts})
        self._confidence.push({"n": conf.size, "sum": float(conf.sum())})

    def figures(self) -> dict[str, Any]:
        """The live figures and their distance from the reference (``None`` where not yet observed)."""
        out: dict[str, Any] = {"inputs": {}, "outputs": {}}
        for name, window in self._inputs.items():
            ref = self.reference["inputs"][name]
            t = window.totals()
            if not t.get("count"):
                continue
            centred = t["sum"] / t["count"]  # sums are around the reference mean (see _moments)
            mean = self._shift(name) + centred
            std = max(t["sumsq"] / t["count"] - centred * centred, 0.0) ** 0.5
            ref_std = ref.get("std") or 0.0
            f: dict[str, Any] = {
                "mean": mean,
                "std": std,
                "mean_shift": abs(mean - (ref.get("mean") or 0.0)) / ref_std if ref_std > 0 else None,
                "std_ratio": std / ref_std if ref_std > 0 else None,
                "nonfinite_rate": t["nonfinite"] / (t["count"] + t["nonfinite"]),
            }
            lengths = ref.get("lengths")
            if t.get("rows_len"):
                live = t["len_sum"] / t["rows_len"]
                f["length_mean"] = live
                if lengths and lengths.get("std"):
                    f["length_shift"] = abs(live - lengths["mean"]) / lengths["std"]
            out["inputs"][name] = f
        if self._ref_classes is not None:
            counts = self._classes.totals().get("counts")
            conf = self._confidence.totals()
            if counts is not None and counts.sum() > 0:
                live = counts / counts.sum()
                ref_conf = self.reference["outputs"][self._class_output].get("confidence") or {}
                mean = conf["sum"] / conf["n"]
                out["outputs"][self._class_output] = {
                    "class_distance": float(0.5 * np.abs(live - self._ref_classes).sum()),
                    "confidence_mean": mean,
                    "confidence_shift": abs(mean - ref_conf["mean"]) / ref_conf["std"]
                    if ref_conf.get("std")
                    else None,
                }
        return out


class _Window:
    """Sums of per-batch figures over the last ``size`` batches (added and removed exactly)."""

    def __init__(self, size: int) -> None:
        self._items: deque[dict[str, Any]] = deque()
        self._size = max(1, int(size))
        self._totals: dict[str, Any] = {}
        self._lock = threading.Lock()

    def push(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(item)
            for k, v in item.items():
                self._totals[k] = self._totals.get(k, 0) + v
            if len(self._items) > self._size:
                for k, v in self._items.popleft().items():
                    self._totals[k] = self._totals[k] - v

    def totals(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._totals)


def nonfinite_count(a: np.ndarray) -> int:
    """NaN and ±Inf elements of a float array (0 for other dtypes). A batch without any costs one sum: a
    NaN or an infinity makes the sum non-finite, and only then are the elements counted."""
    if a.dtype.kind != "f" or not a.size:
        return 0
    with np.errstate(over="ignore", invalid="ignore"):
        total = a.sum(dtype=np.float32 if a.dtype.itemsize < 4 else None)
    if np.isfinite(total):
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))  # or the sum overflowed: count exactly


#: Elements per float32 block of the sum of squares (the blocks' sums are added in float64).
_SQUARES_BLOCK = 4096


def _sum_squares(values: np.ndarray) -> float:
    """Σ x² of a 1-D array: float32 dot products over blocks of ``_SQUARES_BLOCK`` (each exact to a few
    float32 roundings), their sums added in float64 — a fraction of a millisecond on a batch of images,
    where one float64 pass over a converted copy costs several."""
    if values.dtype != np.float32:
        v = values.astype(np.float64, copy=False)
        return float(np.dot(v, v))
    n = values.size - values.size % _SQUARES_BLOCK
    blocks = values[:n].reshape(-1, _SQUARES_BLOCK)
    tail = values[n:].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.einsum("ij,ij->i", blocks, blocks).sum(dtype=np.float64)) + float(np.dot(tail, tail))
    if not np.isfinite(total):  # squares past float32's range (|x| > 1.8e19): in float64 after all
        v = values.astype(np.float64)
        total = float(np.dot(v, v))
    return total


def _moments(a: np.ndarray, shift: float = 0.0) -> dict[str, Any]:
    """One batch's count, Σ(x − shift) and Σ(x − shift)² over its finite values, and its NaN/Inf count.

    Sums are taken around ``shift`` (the reference mean): far from zero — prices, years, unnormalised
    pixels — the spread is then still exact where Σx² − n·mean² would cancel to nothing. float32 inputs
    are summed in float32 (pairwise) and squared in float32 blocks added in float64; others in float64.
    """
    flat = a.reshape(-1)
    bad = 0
    with np.errstate(over="ignore", invalid="ignore"):
        if flat.dtype == np.float32:
            centred = flat - np.float32(shift)
        else:
            centred = flat.astype(np.float64) - shift
        total = centred.sum()
        if not np.isfinite(total):  # a NaN or an infinity (or an overflow): count and leave them out
            finite = np.isfinite(flat) if flat.dtype.kind == "f" else np.ones(flat.size, bool)
            bad = int(flat.size - np.count_nonzero(finite))
            centred = flat[finite].astype(np.float64) - shift
            total = centred.sum()
    item: dict[str, Any] = {
        "count": centred.size,
        "sum": float(total),
        "sumsq": _sum_squares(centred),
        "nonfinite": bad,
    }
    if a.dtype.kind in "iu" and a.ndim >= 2 and a.shape[0]:
        lengths = row_lengths(a)
        item.update(rows_len=lengths.size, len_sum=float(lengths.sum()))
    return item


class Monitor:
    """Prometheus metrics (and drift, when the manifest records reference statistics) of one model.

    Args:
        manifest: The served artifact's manifest (its name labels the metrics; its reference
            statistics enable drift monitoring).
        registry: A ``prometheus_client.CollectorRegistry`` to register in (default: a new one, so
            that several Monitors in one process never collide).
        model: The ``model`` label (default: the manifest's name).
        drift: Set ``False`` to turn drift monitoring off.
        window: Batches the drift figures cover.
        sample_every: Compute drift statistics on every n-th batch only (they cost a pass over the data).

    Raises:
        MonitoringUnavailable: ``prometheus_client`` is not installed.
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        registry: Any = None,
        model: str | None = None,
        drift: bool = True,
        window: int = 1000,
        sample_every: int = 1,
    ) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise MonitoringUnavailable(
                "monitoring needs prometheus_client: pip install 'infership[serve]' (or prometheus-client)"
            ) from exc
        self._prom = prom
        self.model = model or manifest.name
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self._multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self._sample_every = max(1, int(sample_every))
        self._seen = 0
        reference = manifest.extra.get(REFERENCE_KEY)
        self.drift: DriftMonitor | None = None
        self.drift_off_reason: str | None = None
        if not drift:
            self.drift_off_reason = "turned off by the caller (drift=False)"
        elif not reference or not reference.get("inputs"):
            self.drift_off_reason = (
                f"the artifact records no reference statistics (manifest.extra[{REFERENCE_KEY!r}]); "
                "`infership quantize` records them, and `infership export` when given validation data"
            )
        else:
            self.drift = DriftMonitor(reference, task=manifest.task or Task.TENSOR, window=window)
        if self.drift_off_reason:
            log.info("drift monitoring is off for %s: %s", self.model, self.drift_off_reason)
        self._define(prom)

    def _define(self, prom: Any) -> None:
        reg, p = self.registry, "infership_"
        self.requests = prom.Counter(p + "requests", "Prediction requests", ["model"], registry=reg)
        self.errors = prom.Counter(
            p + "request_errors", "Failed requests by error type", ["model", "type"], registry=reg
        )
        self.latency = prom.Histogram(
            p + "request_latency_seconds",
            "Request latency, from submission to result",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_size = prom.Histogram(
            p + "batch_size", "Rows per model run", ["model"], buckets=BATCH_BUCKETS, registry=reg
        )
        self.queue_wait = prom.Histogram(
            p + "queue_wait_seconds",
            "Time a request waited to join a batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        mode = {"multiprocess_mode": "livemostrecent"}
        self.drift_enabled = prom.Gauge(
            p + "drift_enabled", "1 when drift is monitored, 0 when off", ["model"], registry=reg, **mode
        )
        self.drift_enabled.labels(self.model).set(1 if self.drift else 0)
        self.input_drift = prom.Gauge(
            p + "input_drift",
            "Live input figures vs the reference (figure: mean, std, mean_shift, std_ratio, "
            "nonfinite_rate, length_mean, length_shift)",
            ["model", "input", "figure"],
            registry=reg,
            **mode,
        )
        self.output_drift = prom.Gauge(
            p + "output_drift",
            "Live output figures vs the reference (figure: class_distance, confidence_mean, "
            "confidence_shift)",
            ["model", "output", "figure"],
            registry=reg,
            **mode,
        )
        self.nonfinite = prom.Counter(
            p + "input_nonfinite", "NaN or Inf values seen in inputs", ["model", "input"], registry=reg
        )

    # --------------------------------------------------------------------------- hooks
    def observe_request(self, latency_s: float, *, error: BaseException | None = None) -> None:
        """Record one request: its latency, and its error type when it failed."""
        self.requests.labels(self.model).inc()
        self.latency.labels(self.model).observe(latency_s)
        if error is not None:
            self.errors.labels(self.model, type(error).__name__).inc()

    def observe_batch(self, rows: int, queue_waits_s: list[float]) -> None:
        """Record one model run of ``rows`` rows and how long each of its requests waited to join it."""
        self.batch_size.labels(self.model).observe(rows)
        for wait in queue_waits_s:
            self.queue_wait.labels(self.model).observe(wait)

    def observe_data(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any] | None) -> None:
        """Feed the drift monitor one batch (every ``sample_every``-th call) and update the drift gauges."""
        drift = self.drift
        sampled = drift is not None and self._seen % self._sample_every == 0
        self._seen += 1
        counts = drift.observe_inputs(feeds) if sampled and drift is not None else {}
        for name, value in feeds.items():
            bad = counts[name] if name in counts else nonfinite_count(np.asarray(value))
            if bad:
                self.nonfinite.labels(self.model, name).inc(bad)
        if not sampled or drift is None:
            return
        if outputs is not None:
            drift.observe_outputs(outputs)
        figures = drift.figures()
        for name, f in figures["inputs"].items():
            for key, value in f.items():
                if value is not None:
                    self.input_drift.labels(self.model, name, key).set(value)
        for name, f in figures["outputs"].items():
            for key, value in f.items():
                if value is not None:
                    self.output_drift.labels(self.model, name, key).set(value)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus text format, with its content type (for a ``/metrics`` endpoint).

        In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) every process's metrics in that
        directory are aggregated.
        """
        prom = self._prom
        registry = self.registry
        if self._multiprocess_dir:
            from prometheus_client import multiprocess

            registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self._multiprocess_dir)
        return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST


class MonitoredPredictor:
    """A Predictor that reports every call to a :class:`Monitor`.

    (A :class:`~infership.runtime.batching.BatchingPredictor` takes ``monitor=`` itself: it also knows
    batch sizes and queue wait.)

    Args:
        predictor: What runs the model.
        monitor: Where the figures go.
    """

    def __init__(self, predictor: Predictor, monitor: Monitor) -> None:
        self.predictor = predictor
        self.monitor = monitor

    def predict(self, inputs: Any) -> dict[str, np.ndarray]:
        """Run ``predictor.predict`` and record latency, errors and drift.

        Raises:
            Whatever the wrapped ``predict`` raises (also counted by type).
        """
        start = time.perf_counter()
        try:
            feeds = self.predictor.prepare(inputs)
            outputs = self.predictor.predict(feeds)
        except BaseException as exc:
            self.monitor.observe_request(time.perf_counter() - start, error=exc)
            raise
        self.monitor.observe_request(time.perf_counter() - start)
        self.monitor.observe_data(feeds, outputs)
        return outputs

    async def apredict(self, inputs: Any) -> dict[str, np.ndarray]:
        """:meth:`predict` in a worker thread, for asyncio code."""
        import asyncio

        return await asyncio.to_thread(self.predict, inputs)
