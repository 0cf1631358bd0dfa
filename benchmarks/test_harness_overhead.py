"""The benchmark harness's own cost, measured on an empty predictor (the ``fake`` backend).

``make bench`` runs this with pytest-benchmark enabled. Two figures: the cost of one ``predict`` call on
the fake backend through the ``predictor_benchmark`` fixture (Predictor input checks + fixture rotation),
and the per-query cost of the harness's own single-stream loop (timing + recording + stop rule).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def fake_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.builders import build_fake_artifact

    return build_fake_artifact(
        tmp_path_factory.mktemp("overhead") / "fake", input_shape=("batch", 3, 224, 224), num_outputs=1000
    )


def test_fixture_overhead_on_the_empty_predictor(predictor_benchmark, fake_artifact: Path) -> None:
    from infership import Predictor

    with Predictor.load(fake_artifact, backend="fake") as p:
        out = predictor_benchmark(p, batch_size=1)
    assert out["logits"].shape == (1, 1000)


def test_harness_loop_overhead_per_query(benchmark, fake_artifact: Path) -> None:
    """1000 single-stream queries on the empty predictor: the wall time per query is what the loop costs
    in all (timed call + recording + stop rule); ``timed_p50_us`` is the part inside the timed region."""
    from infership.bench import StopRule, random_pool, run_benchmark

    from infership import Predictor

    with Predictor.load(fake_artifact, backend="fake") as p:
        pool = random_pool(p.inputs, batch_size=1)
        run = benchmark.pedantic(
            run_benchmark, args=(p,), rounds=5, iterations=1,
            kwargs={"stop": StopRule(duration_s=None, max_queries=1000), "warmup_queries": 10, "pool": pool},
        )  # fmt: skip
    benchmark.extra_info["queries_per_round"] = 1000
    benchmark.extra_info["timed_p50_us"] = run.latency_ms.p50 * 1000
    assert run.latency_ms.count == 1000
