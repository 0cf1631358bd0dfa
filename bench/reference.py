"""A small fixed reference workload, timed next to every round of a benchmark, so a comparison of two runs
measured at different times can take the machine's speed at those times out.

A runner that is busier (or clocked lower) in one job than in another slows the model and the reference
alike; dividing each round's latencies by the reference's median at that round leaves the model's own
change. The workload is numpy only (a float32 matrix product through the same multi-threaded BLAS-style
kernels inference runtimes use, plus an element-wise pass), a few milliseconds per round.

Whether it helps depends on the machine: ``benchmarks/gate_study.py`` measures the false-alarm rate of
stored-baseline comparisons with and without it (docs/bench.md).
"""

from __future__ import annotations

import statistics
from functools import lru_cache

import numpy as np
from infership.runtime.timing import time_calls

#: Side of the square matrices multiplied (≈ 2·384³ ≈ 113 MFLOP per call: about a millisecond on a CPU core or two).
SIZE = 384
#: Calls timed per measurement (after 2 untimed ones); their median is the figure.
CALLS = 15


@lru_cache(maxsize=1)
def _operands() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    b = rng.standard_normal((SIZE, SIZE), dtype=np.float32)
    return a, b, np.empty((SIZE, SIZE), dtype=np.float32)


def _workload() -> None:
    a, b, out = _operands()
    np.matmul(a, b, out=out)
    np.tanh(out, out=out)


def reference_ms(*, calls: int = CALLS) -> float:
    """Median milliseconds of the reference workload over ``calls`` timed calls (after 2 untimed ones).

    Raises:
        InvalidInputError: ``calls < 1``.
    """
    return float(statistics.median(time_calls(_workload, runs=calls, warmup=2)))
