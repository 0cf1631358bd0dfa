"""Load patterns after MLPerf LoadGen, driving a thread-safe ``predict`` callable.

- ``single-stream``: one query at a time, the next issued when the previous returns; per-query latency.
- ``multi-stream``: each query is ``concurrency`` simultaneous calls (one per stream, like N cameras); its
  latency is until the last call returns; the next query is issued when it completes.
- ``server``: queries arrive at Poisson-distributed times at a target rate and are served by
  ``concurrency`` worker threads; latency runs from the query's *scheduled* arrival, so queueing counts.
- ``offline``: ``concurrency`` callers issue queries back to back as fast as they can; throughput is the
  figure of merit (the harness loads the predictor with the throughput hint and larger batches help).

Every call is timed here with ``time.perf_counter_ns()``, never by the backend. Measurement stops after
``duration_s`` once the last windows are stable (or ``max_duration_s`` passes), or after ``max_queries``.
"""

from __future__ import annotations

import enum
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
from infership.runtime.errors import InfershipError, InvalidInputError
from infership.runtime.timing import timed

from .inputs import InputPool
from .stats import Stability, check_rounds, check_stability

log = logging.getLogger(__name__)

Predict = Callable[[Any], Any]

# How often (seconds) the stop rule re-checks stability once the minimum duration has passed.
_STABILITY_CHECK_EVERY_S = 0.05


class MeasurementError(InfershipError, RuntimeError):
    """A scenario ended without measuring anything (no query completed before the stop rule fired)."""


class Scenario(str, enum.Enum):
    """An MLPerf LoadGen-style load pattern (see the module docstring)."""

    SINGLE_STREAM = "single-stream"
    MULTI_STREAM = "multi-stream"
    SERVER = "server"
    OFFLINE = "offline"

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """``"single-stream"``, ``"single_stream"`` or ``"singlestream"`` → the member.

        Raises:
            InvalidInputError: Unknown name (the message lists the known ones).
        """
        norm = text.strip().lower().replace("_", "-")
        for member in cls:
            if norm in (member.value, member.value.replace("-", "")):
                return member
        raise InvalidInputError(f"unknown scenario {text!r}; expected one of {[m.value for m in cls]}")


@dataclass(frozen=True)
class StopRule:
    """When to stop measuring.

    Args:
        duration_s: Measure at least this long (``None``: stop on ``max_queries`` only).
        max_duration_s: Keep measuring past ``duration_s`` while the windows are unstable, up to this long
            (default: twice ``duration_s``). Equal to ``duration_s`` disables the extension.
        min_queries: Never stop (except on ``max_queries``) before this many queries.
        max_queries: Stop after this many queries whatever the time.
        stability_tolerance: Allowed relative deviation between windows (perf_analyzer's stability
            percentage, as a fraction).
        stability_windows: Windows compared; each is ``duration_s / stability_windows`` long.
    """

    duration_s: float | None = 10.0
    max_duration_s: float | None = None
    min_queries: int = 20
    max_queries: int | None = None
    stability_tolerance: float = 0.10
    stability_windows: int = 3

    def __post_init__(self) -> None:
        if self.duration_s is None and self.max_queries is None:
            raise InvalidInputError("a StopRule needs duration_s, max_queries, or both")
        if self.duration_s is not None and self.duration_s <= 0:
            raise InvalidInputError(f"duration_s must be > 0, got {self.duration_s}")
        if self.max_queries is not None and self.max_queries < 1:
            raise InvalidInputError(f"max_queries must be >= 1, got {self.max_queries}")
        if (
            self.max_duration_s is not None
            and self.duration_s is not None
            and self.max_duration_s < self.duration_s
        ):
            raise InvalidInputError(
                f"max_duration_s ({self.max_duration_s}) must be >= duration_s ({self.duration_s})"
            )

    @property
    def limit_s(self) -> float | None:
        if self.duration_s is None:
            return None
        return self.max_duration_s if self.max_duration_s is not None else 2 * self.duration_s

    def split(self, rounds: int) -> StopRule:
        """The rule for one of ``rounds`` rounds: durations and query counts divided (rounded up)."""
        if rounds == 1:
            return self

        def div(v: float | None) -> float | None:
            return None if v is None else v / rounds

        return StopRule(
            duration_s=div(self.duration_s),
            max_duration_s=div(self.limit_s),
            min_queries=-(-self.min_queries // rounds),
            max_queries=None if self.max_queries is None else -(-self.max_queries // rounds),
            stability_tolerance=self.stability_tolerance,
            stability_windows=self.stability_windows,
        )


@dataclass(frozen=True)
class Measurement:
    """What a scenario run measured (the harness turns it into a ``RunResult``).

    Args:
        latencies_ms: Per-query latency, in completion order.
        end_s: Each query's completion time, seconds after measurement started.
        wall_s: Measurement wall time.
        items: Items processed (queries × calls per query × batch size).
        stability: The stability verdict over the last windows.
        warmup_queries: Calls made before measuring. warmup_s: Their wall time.
        warmup_qps: Queries per second during warm-up (the server scenario's automatic rate uses it).
        target_qps: The server scenario's arrival rate, else ``None``.
        rounds: Queries per round when merged from rounds (:func:`merge_rounds`), else empty.
    """

    latencies_ms: np.ndarray
    end_s: np.ndarray
    wall_s: float
    items: int
    stability: Stability
    warmup_queries: int
    warmup_s: float
    warmup_qps: float
    target_qps: float | None = None

    rounds: tuple[int, ...] = ()

    @property
    def queries(self) -> int:
        return int(self.latencies_ms.size)


def merge_rounds(parts: list[Measurement], *, tolerance: float) -> Measurement:
    """One measurement from rounds of the same configuration taken at different times.

    Samples are concatenated in round order (``rounds`` keeps the sizes, for the two-stage bootstrap in
    compare); wall time, items and warm-up add up; stability asks whether the rounds agree with each other
    (:func:`~infership.bench.stats.check_rounds`).

    Raises:
        InvalidInputError: No parts.
    """
    if not parts:
        raise InvalidInputError("merge_rounds needs at least one measurement")
    if len(parts) == 1:
        return parts[0]
    ends, offset = [], 0.0
    for m in parts:
        ends.append(m.end_s + offset)
        offset += m.wall_s
    stability = check_rounds(
        [float(np.median(m.latencies_ms)) for m in parts],
        [m.items / m.wall_s if m.wall_s > 0 else 0.0 for m in parts],
        tolerance=tolerance,
    )
    return Measurement(
        latencies_ms=np.concatenate([m.latencies_ms for m in parts]),
        end_s=np.concatenate(ends),
        wall_s=offset,
        items=sum(m.items for m in parts),
        stability=stability,
        warmup_queries=sum(m.warmup_queries for m in parts),
        warmup_s=sum(m.warmup_s for m in parts),
        warmup_qps=parts[0].warmup_qps,
        target_qps=parts[0].target_qps,
        rounds=tuple(m.queries for m in parts),
    )


class _Recorder:
    """Thread-safe sample store that also applies the stop rule."""

    def __init__(self, rule: StopRule) -> None:
        self.rule = rule
        self._lock = threading.Lock()
        self._lat: list[int] = []
        self._end: list[int] = []
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self._next_check = 0.0
        self.t0 = time.perf_counter_ns()

    @property
    def count(self) -> int:
        return len(self._lat)

    def start(self) -> None:
        self.t0 = time.perf_counter_ns()

    def record(self, latency_ns: int, end_ns: int) -> None:
        with self._lock:
            if self.stopped.is_set():
                return
            self._lat.append(latency_ns)
            self._end.append(end_ns - self.t0)
            if self._should_stop(end_ns):
                self.stopped.set()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
            self.stopped.set()

    def _should_stop(self, now_ns: int) -> bool:
        rule, n = self.rule, len(self._lat)
        if rule.max_queries is not None and n >= rule.max_queries:
            return True
        if rule.duration_s is None:
            return False
        elapsed = (now_ns - self.t0) / 1e9
        # min_queries outranks the time limit: a p99 of a handful of queries means nothing.
        if elapsed < rule.duration_s or n < rule.min_queries:
            return False
        limit = rule.limit_s
        if limit is not None and elapsed >= limit:
            return True
        if elapsed < self._next_check:
            return False
        self._next_check = elapsed + _STABILITY_CHECK_EVERY_S
        return self._stability().met

    def _stability(self) -> Stability:
        rule = self.rule
        lat_ms = np.asarray(self._lat, dtype=np.float64) / 1e6
        end_s = np.asarray(self._end, dtype=np.float64) / 1e9
        if rule.duration_s is not None:
            window = rule.duration_s / rule.stability_windows
        else:
            window = max(float(end_s.max()) if end_s.size else 0.0, 1e-9) / rule.stability_windows
        return check_stability(
            lat_ms, end_s, window_s=window, windows=rule.stability_windows, tolerance=rule.stability_tolerance
        )

    def finish(
        self, items_per_query: int, warm: tuple[int, float, float], target_qps: float | None
    ) -> Measurement:
        with self._lock:
            if self.error is not None:
                raise self.error
            if not self._lat:
                raise MeasurementError("the scenario completed no query")
            stability = self._stability()
            lat = np.asarray(self._lat, dtype=np.float64) / 1e6
            end = np.asarray(self._end, dtype=np.float64) / 1e9
        wall = float(end.max())
        return Measurement(
            latencies_ms=lat,
            end_s=end,
            wall_s=wall,
            items=int(lat.size) * items_per_query,
            stability=stability,
            warmup_queries=warm[0],
            warmup_s=warm[1],
            warmup_qps=warm[2],
            target_qps=target_qps,
        )


def run_scenario(
    scenario: Scenario,
    predict: Predict,
    pool: InputPool,
    *,
    batch_size: int,
    concurrency: int = 1,
    stop: StopRule,
    warmup_queries: int = 10,
    warmup_s: float = 0.0,
    target_qps: float | None = None,
    seed: int = 0,
) -> Measurement:
    """Warm up, then drive ``predict`` with ``scenario``'s load pattern until ``stop`` says so.

    Args:
        scenario: The load pattern.
        predict: A thread-safe callable taking one pool item (``Predictor.predict``).
        pool: Distinct inputs, rotated.
        batch_size: Items per call (for the throughput figure).
        concurrency: Parallel callers (offline, server) or streams per query (multi-stream). Must be 1 for
            single-stream.
        stop: When to stop measuring.
        warmup_queries: Calls per caller before measuring, excluded from the samples.
        warmup_s: Keep warming up at least this long (some runtimes stay slow for many calls).
        target_qps: Server arrival rate; ``None`` uses half the throughput seen during warm-up.
        seed: Seed of the server's arrival times.

    Returns:
        The :class:`Measurement`.

    Raises:
        InvalidInputError: Invalid concurrency or rate for the scenario.
        MeasurementError: No query completed before the stop rule fired.
        InfershipError: Whatever ``predict`` raised (the first error of any caller).
    """
    if concurrency < 1:
        raise InvalidInputError(f"concurrency must be >= 1, got {concurrency}")
    if scenario is Scenario.SINGLE_STREAM and concurrency != 1:
        raise InvalidInputError(
            f"single-stream issues one query at a time: concurrency must be 1, got {concurrency}"
        )
    if target_qps is not None and target_qps <= 0:
        raise InvalidInputError(f"target_qps must be > 0, got {target_qps}")
    if warmup_s < 0 or warmup_queries < 0:
        raise InvalidInputError(f"warm-up must be >= 0, got {warmup_queries} queries and {warmup_s} s")
    warm = _warm_up(predict, pool, concurrency, warmup_queries, warmup_s)
    rec = _Recorder(stop)
    if scenario is Scenario.MULTI_STREAM:
        _multi_stream(predict, pool, concurrency, rec)
        return rec.finish(batch_size * concurrency, warm, None)
    if scenario is Scenario.SERVER:
        rate = target_qps if target_qps is not None else max(warm[2] / 2, 1e-3)
        _server(predict, pool, concurrency, rec, rate, seed)
        return rec.finish(batch_size, warm, rate)
    _closed_loop(predict, pool, concurrency, rec)
    return rec.finish(batch_size, warm, None)


def _warm_up(
    predict: Predict, pool: InputPool, concurrency: int, per_caller: int, seconds: float
) -> tuple[int, float, float]:
    """``concurrency`` callers run at least ``per_caller`` calls each (this warms per-thread runtime state)
    and at least ``seconds`` in all. Returns (calls, seconds, calls per second)."""
    if per_caller <= 0 and seconds <= 0:
        return 0, 0.0, 0.0
    if seconds > 0:
        rule = StopRule(
            duration_s=seconds, max_duration_s=seconds, min_queries=max(per_caller, 1) * concurrency
        )
    else:
        rule = StopRule(duration_s=None, max_queries=per_caller * concurrency)
    counter = itertools.count()
    rec = _Recorder(rule)
    _, elapsed_ms = timed(lambda: _run_threads(concurrency, lambda: _loop(predict, pool, counter, rec), rec))
    elapsed = elapsed_ms / 1e3
    if rec.error is not None:
        raise rec.error
    done = rec.count
    return done, elapsed, done / elapsed if elapsed > 0 else 0.0


def _loop(predict: Predict, pool: InputPool, counter: itertools.count, rec: _Recorder) -> None:
    perf = time.perf_counter_ns
    while not rec.stopped.is_set():
        item = pool[next(counter)]
        t0 = perf()
        predict(item)
        t1 = perf()
        rec.record(t1 - t0, t1)


def _run_threads(n: int, target: Callable[[], None], rec: _Recorder) -> None:
    def guarded() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread by finish()
            rec.fail(exc)

    if n == 1:
        guarded()
        return
    threads = [threading.Thread(target=guarded, name=f"infership-bench-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _closed_loop(predict: Predict, pool: InputPool, concurrency: int, rec: _Recorder) -> None:
    counter = itertools.count()
    rec.start()
    _run_threads(concurrency, lambda: _loop(predict, pool, counter, rec), rec)


def _multi_stream(predict: Predict, pool: InputPool, streams: int, rec: _Recorder) -> None:
    counter = itertools.count()
    perf = time.perf_counter_ns
    with ThreadPoolExecutor(max_workers=streams, thread_name_prefix="infership-stream") as ex:
        rec.start()
        while not rec.stopped.is_set():
            items = [pool[next(counter)] for _ in range(streams)]
            t0 = perf()
            futures = [ex.submit(predict, item) for item in items]
            wait(futures)
            t1 = perf()
            for f in futures:
                exc = f.exception()
                if exc is not None:
                    rec.fail(exc)
                    return
            rec.record(t1 - t0, t1)


def _server(predict: Predict, pool: InputPool, workers: int, rec: _Recorder, rate: float, seed: int) -> None:
    perf = time.perf_counter_ns
    q: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()

    def serve() -> None:
        while True:
            job = q.get()
            if job is None:
                return
            if rec.stopped.is_set():
                continue  # measurement is over: drain without running
            scheduled, item = job
            try:
                predict(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread by finish()
                rec.fail(exc)
                continue
            t1 = perf()
            rec.record(t1 - scheduled, t1)

    threads = [
        threading.Thread(target=serve, name=f"infership-server-{i}", daemon=True) for i in range(workers)
    ]
    for t in threads:
        t.start()
    rng = np.random.default_rng(seed)
    counter = itertools.count()
    rec.start()
    next_ns = float(rec.t0)
    try:
        while not rec.stopped.is_set():
            gaps = rng.exponential(1e9 / rate, size=256)
            for gap in gaps:
                next_ns += gap
                delay = (next_ns - perf()) / 1e9
                if delay > 0:
                    # Wakes up early if the run stops; a late wake-up counts against latency (honest).
                    if rec.stopped.wait(delay):
                        break
                q.put((int(next_ns), pool[next(counter)]))
            else:
                continue
            break
    finally:
        for _ in threads:
            q.put(None)
        for t in threads:
            t.join()
