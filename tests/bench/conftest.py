"""Fixtures for the harness tests: a model-less artifact for the fake backend, and synthetic runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from infership.bench.results import BenchResults, RunResult, RunSettings
from infership.bench.stats import Stability, summarize


@pytest.fixture(scope="session")
def fake_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact whose only variant is a placeholder file: runnable on the ``fake`` backend only
    (x [batch, 3, 8, 8] float32 → logits [batch, 5]). Builds in milliseconds, no torch."""
    from tests.builders import build_fake_artifact

    return build_fake_artifact(
        tmp_path_factory.mktemp("bench") / "fakeonly",
        input_shape=("batch", 3, 8, 8),
        num_outputs=5,
        validation={"top1_agreement": 0.99, "tolerance": {"min_top1": 0.9}},
    )


def synthetic_run(
    samples: Sequence[float] | np.ndarray,
    *,
    backend: str = "ort-cpu",
    scenario: str = "single-stream",
    accuracy: dict | None = None,
    stable: bool = True,
) -> RunResult:
    """A RunResult around given samples (for statistics tests that must not depend on timing)."""
    x = np.asarray(samples, dtype=np.float64)
    settings = RunSettings(
        intra_op_threads=None, inter_op_threads=None, num_streams=None, hint="latency",
        include_preprocessing=False, host_device_copies="none", input_source="random", pool_size=16,
        input_shapes={"x": [1, 3, 8, 8]}, warmup_queries=10, warmup_s=0.01,
    )  # fmt: skip
    return RunResult(
        model="m", backend=backend, device="cpu", variant="onnx-fp32", precision="fp32", scenario=scenario,
        batch_size=1, concurrency=1, latency_ms=summarize(x), throughput=1000.0 / float(x.mean()),
        queries_per_s=1000.0 / float(x.mean()), samples_ms=tuple(float(v) for v in x), duration_s=float(x.sum()) / 1000,
        stability=Stability(stable, 0.1, 3, 0.01, 0.01, "" if stable else "window medians vary"),
        settings=settings, accuracy=accuracy,
    )  # fmt: skip


def synthetic_results(*runs: RunResult, fingerprint: str = "f" * 16, env: dict | None = None) -> BenchResults:
    env = (
        env
        if env is not None
        else {"cpu": {"model": "Test CPU", "flags": ["avx2"]}, "gpus": [], "libraries": {}}
    )
    return BenchResults(runs=runs, environment=env, fingerprint=fingerprint)


def lognormal(n: int, *, seed: int, scale: float = 1.0) -> np.ndarray:
    """Latency-like samples: lognormal around 1 ms with a heavier tail."""
    rng = np.random.default_rng(seed)
    return scale * rng.lognormal(mean=0.0, sigma=0.25, size=n)


@pytest.fixture(scope="session")
def ab_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Artifacts of the tiny CNN for A/B runs (ONNX Runtime only, so they build fast):

    - ``base`` and ``same``: the same model exported twice (16×16 input);
    - ``big``: the same weights exported for a 96×96 input (36× the convolution work: a real slowdown);
    - ``flipped``: the classifier's weights negated (other predictions: an accuracy regression).
    """
    import torch
    from infership.runtime import Artifact, ArtifactWriter
    from infership.runtime.tasks import Task

    from tests.builders import build_artifact_for_tests, tiny_models

    root = tmp_path_factory.mktemp("ab")
    model, example = tiny_models.cnn()
    out = {
        "base": build_artifact_for_tests(model, example, root / "base", openvino=False),
        "same": build_artifact_for_tests(model, example, root / "same", openvino=False),
        "big": build_artifact_for_tests(model, (torch.randn(2, 3, 96, 96),), root / "big", openvino=False),
    }
    flipped, _ = tiny_models.cnn()
    with torch.no_grad():
        flipped.fc.weight.mul_(-1)
    out["flipped"] = build_artifact_for_tests(flipped, example, root / "flipped", openvino=False)
    for path in out.values():  # a classifier: the gate judges its validation outputs by top-1 and accuracy
        writer = ArtifactWriter.update(Artifact.load(path))
        writer.set_manifest(task=Task.CLASSIFICATION, labels=tuple("abcde"))
        writer.commit()
    return out


@pytest.fixture(scope="session")
def validation_npz(ab_artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 inputs for the 16×16 models, labelled with the base model's own predictions (it scores 100 %)."""
    from infership.runtime import Predictor
    from infership.runtime.tasks import judge_for

    x = np.random.default_rng(7).standard_normal((64, 3, 16, 16)).astype(np.float32)
    with Predictor.load(ab_artifacts["base"], backend="ort-cpu") as p:
        y = judge_for("classification").predictions(p.predict(x))
    path = tmp_path_factory.mktemp("val") / "val.npz"
    np.savez(path, x=x, labels=y)
    return path
