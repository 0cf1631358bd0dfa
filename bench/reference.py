"""A small fixed reference workload, timed before every round of a benchmark, so a comparison of two runs
measured in different jobs can tell how far apart the machine's speed was between them.

A runner that is busier (or clocked lower) in one job than in another slows the model and the reference
alike. The stored-results gate uses the difference the reference measured as a bias its intervals must
allow for (:func:`~infership.bench.rule.with_job_drift`): when the machine ran 30 % slower in the current job
than in the baseline's, a 30 % slower model proves nothing, and the verdict says "inconclusive" instead of
"regression". Dividing the latencies by the reference instead (``compare_results(normalise=True)``) was
measured not to help on a shared 2-core machine (``benchmarks/gate_study.py``, docs/bench.md): under
contention the model and a BLAS kernel do not slow down alike. The workload is numpy only (a float32 matrix
product and an element-wise pass), a few milliseconds per round.
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
