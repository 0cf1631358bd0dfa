"""pytest plugin (entry point ``pytest11: infership``): benchmark a Predictor under pytest-benchmark.

Provides the ``predictor_benchmark`` fixture: it wraps pytest-benchmark's ``benchmark`` fixture, rotates
distinct inputs (so a single cached tensor does not flatter the figures), warms up first, and records the
backend, variant and placement in ``benchmark.extra_info`` — so ``--benchmark-compare-fail`` and
``--benchmark-json`` work as usual::

    def test_speed(predictor_benchmark):
        p = Predictor.load("artifact", backend="ort-cpu")
        predictor_benchmark(p, batch_size=1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def _inputs_for(predictor: Any, batch_size: int, count: int, seed: int) -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        item = {}
        for spec in predictor.inputs:
            shape = [batch_size if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) else 1) for i, d in enumerate(spec.shape)]
            if spec.dtype.startswith("float"):
                item[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            else:
                item[spec.name] = rng.integers(0, 2, size=shape).astype(spec.dtype)
        feeds.append(item)
    return feeds


@pytest.fixture
def predictor_benchmark(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Return ``run(predictor, *, batch_size=1, distinct_inputs=8, warmup=3, seed=0)``."""
    benchmark = request.getfixturevalue("benchmark")

    def run(predictor: Any, *, batch_size: int = 1, distinct_inputs: int = 8, warmup: int = 3, seed: int = 0) -> Any:
        feeds = _inputs_for(predictor, batch_size, max(1, distinct_inputs), seed)
        for i in range(warmup):
            predictor.predict(feeds[i % len(feeds)])
        counter = iter(range(1 << 62))

        def one() -> Any:
            return predictor.predict(feeds[next(counter) % len(feeds)])

        benchmark.extra_info.update(
            {
                "backend": predictor.backend,
                "variant": predictor.variant.id,
                "precision": predictor.variant.precision,
                "batch_size": batch_size,
                "placement": predictor.placement.to_dict(),
            }
        )
        return benchmark(one)

    return run
