"""The one latency timer: autotune, int8 validation and the benchmark harness time calls with it.

Calls are timed here with ``time.perf_counter_ns()``, never by a backend. A short rest before the timed
calls lets another runtime's worker threads, which keep spinning for a while after a call, go idle so they
do not steal the cores from the calls being timed.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .errors import InvalidInputError

K = TypeVar("K")
T = TypeVar("T")


def time_calls(fn: Callable[[], Any], *, runs: int = 20, warmup: int = 3, rest_s: float = 0.0) -> list[float]:
    """Rest ``rest_s`` seconds, call ``fn`` ``warmup`` times untimed, then time ``runs`` calls.

    Returns:
        The ``runs`` latencies in milliseconds, in call order.

    Raises:
        InvalidInputError: ``runs < 1``, ``warmup < 0`` or ``rest_s < 0``.
    """
    if runs < 1 or warmup < 0 or rest_s < 0:
        raise InvalidInputError(
            f"time_calls needs runs >= 1, warmup >= 0 and rest_s >= 0; got {runs}, {warmup}, {rest_s}"
        )
    if rest_s:
        time.sleep(rest_s)
    for _ in range(warmup):
        fn()
    perf = time.perf_counter_ns
    out = []
    for _ in range(runs):
        t0 = perf()
        fn()
        out.append((perf() - t0) / 1e6)
    return out


def median_ms(fn: Callable[[], Any], *, runs: int = 20, warmup: int = 3, rest_s: float = 0.1) -> float:
    """Median latency of ``fn()`` in milliseconds (see :func:`time_calls`)."""
    return float(statistics.median(time_calls(fn, runs=runs, warmup=warmup, rest_s=rest_s)))


def cycling(fn: Callable[[T], Any], items: Sequence[T]) -> Callable[[], Any]:
    """A zero-argument call of ``fn`` on the next of ``items`` each time, round and round: timed calls
    that go through a whole held-out set rather than repeat one input (for :func:`interleaved_medians`)."""
    if not items:
        raise InvalidInputError("cycling needs at least one item")
    it = itertools.cycle(items)
    return lambda: fn(next(it))


def round_order(items: Sequence[T], round_index: int) -> list[T]:
    """``items`` in the order round ``round_index`` of an interleaved measurement runs them: each round
    starts one item later than the last, so no item always follows the same other one (whose spinning
    threads or cache footprint would then weigh on it every round) or always opens a round."""
    if not items:
        return []
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


def interleaved_medians(
    calls: Mapping[K, Callable[[], Any]],
    *,
    blocks: int = 10,
    runs: int = 40,
    warmup: int = 2,
    rest_s: float = 0.1,
) -> dict[K, float]:
    """Median latency in milliseconds of each callable, timed in ``blocks`` interleaved rounds of ``runs``
    calls each (a rest before every block, :func:`time_calls`; each round in :func:`round_order`): a change
    in the machine's load during the measurement falls on every callable alike, so their ratios hold where
    their absolute times move.

    Raises:
        InvalidInputError: ``blocks < 1`` (and what :func:`time_calls` refuses).
    """
    if blocks < 1:
        raise InvalidInputError(f"interleaved_medians needs blocks >= 1, got {blocks}")
    samples: dict[K, list[float]] = {k: [] for k in calls}
    keys = list(calls)
    for rnd in range(blocks):
        for key in round_order(keys, rnd):
            samples[key] += time_calls(calls[key], runs=runs, warmup=warmup, rest_s=rest_s)
    return {k: float(statistics.median(v)) for k, v in samples.items()}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn`` once: its result and the milliseconds it took (load times, first inference)."""
    t0 = time.perf_counter_ns()
    result = fn()
    return result, (time.perf_counter_ns() - t0) / 1e6
