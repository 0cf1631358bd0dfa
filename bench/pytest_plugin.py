"""pytest plugin (entry point ``pytest11: infership``): benchmark a Predictor under pytest-benchmark.

The ``predictor_benchmark`` fixture wraps pytest-benchmark's ``benchmark`` fixture. It rotates distinct
inputs (a single cached tensor flatters runtimes that cache), warms up before timing, and records the
backend, variant, precision, placement, thread settings and the environment fingerprint in
``benchmark.extra_info``. Everything pytest-benchmark offers keeps working: ``--benchmark-json``,
``--benchmark-autosave``, ``--benchmark-compare`` and ``--benchmark-compare-fail=median:10%``::

    from infership import Predictor

    def test_resnet_latency(predictor_benchmark):
        with Predictor.load("artifacts/resnet", backend="ort-cpu", intra_op_threads=2) as p:
            outputs = predictor_benchmark(p, batch_size=1)
        assert outputs["logits"].shape == (1, 1000)

This module imports only pytest at import time: pytest loads it in every session of every project that
has infership installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest


def _make_runner(benchmark: Any) -> Callable[..., Any]:
    def run(
        predictor: Any,
        *,
        batch_size: int = 1,
        pool_size: int = 16,
        warmup: int = 10,
        seed: int = 0,
        shapes: Mapping[str, Sequence[int]] | None = None,
        inputs: Mapping[str, Any] | None = None,
        include_preprocessing: bool = False,
    ) -> Any:
        from infership.bench.runner import make_pool, recorded_options
        from infership.runtime import hardware

        pool = make_pool(
            predictor, batch_size=batch_size, size=pool_size, seed=seed, shapes=shapes, inputs=inputs,
            include_preprocessing=include_preprocessing,
        )  # fmt: skip
        options = recorded_options(predictor)
        for i in range(warmup):
            predictor.predict(pool[i])
        position = [0]

        def one() -> Any:
            i = position[0]
            position[0] = i + 1
            return predictor.predict(pool[i])

        benchmark.extra_info.update(
            {
                "model": predictor.manifest.name,
                "backend": predictor.backend,
                "variant": predictor.variant.id,
                "precision": predictor.variant.precision,
                "batch_size": batch_size,
                "pool_size": len(pool),
                "input_source": pool.source,
                "include_preprocessing": pool.include_preprocessing,
                "input_shapes": pool.shapes,
                "placement": predictor.placement.to_dict(),
                "threads": {
                    "intra_op": options["intra_op_threads"],
                    "inter_op": options["inter_op_threads"],
                    "streams": options["num_streams"],
                    "hint": options["hint"],
                },
                "fingerprint": hardware.fingerprint(),
            }
        )
        return benchmark(one)

    return run


_DOC = """Return ``run(predictor, *, batch_size=1, ...)`` that benchmarks ``predictor.predict``.

    ``run`` keyword options: ``batch_size`` (1), ``pool_size`` distinct inputs (16), ``warmup`` calls
    before timing (10), ``seed`` (0), ``shapes`` for dynamic axes, ``inputs`` (name → array or ``.npy``
    path of real samples), ``include_preprocessing`` (feed raw uint8 images). It returns the outputs of
    the last timed call, so the test can check them too.
    """

# The fixture must request ``benchmark`` by name: pytest-benchmark recognises benchmark tests (for
# --benchmark-only / --benchmark-skip) from their fixture closure, which getfixturevalue() would hide.
if importlib.util.find_spec("pytest_benchmark") is not None:

    @pytest.fixture
    def predictor_benchmark(benchmark: Any) -> Callable[..., Any]:
        return _make_runner(benchmark)

else:  # pragma: no cover - exercised only without pytest-benchmark

    @pytest.fixture
    def predictor_benchmark() -> Callable[..., Any]:
        pytest.fail(
            "predictor_benchmark needs the pytest-benchmark plugin: pip install 'infership[bench]'",
            pytrace=False,
        )


predictor_benchmark.__doc__ = _DOC
