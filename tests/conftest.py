"""Shared fixtures: tiny models built in-process, artifacts built from them, and hardware markers.

Markers ``gpu``, ``tensorrt`` and ``openvino`` skip automatically, with the reason, where the hardware or
package is missing; ``slow`` marks tests that take more than a few seconds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.builders import build_artifact_for_tests, tiny_models


def _gpu_skip_reason() -> str | None:
    from infership.runtime.hardware import no_gpu_reason

    return no_gpu_reason()


def _trt_skip_reason() -> str | None:
    reason = _gpu_skip_reason()
    if reason:
        return reason
    from infership.runtime.registry import is_available

    return is_available("ort-trt", "cuda")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {
        "gpu": _gpu_skip_reason(),
        "tensorrt": _trt_skip_reason(),
        "openvino": None if importlib.util.find_spec("openvino") else "openvino is not installed",
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"{marker}: {reason}"))


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def tiny_artifact(artifacts_dir: Path) -> Path:
    """A small CNN (conv-bn-relu-pool-linear), dynamic batch, input x [batch,3,16,16] → logits [batch,5];
    variants: onnx-fp32, torch-export fp32, openvino fp32."""
    model, example = tiny_models.cnn()
    return build_artifact_for_tests(model, example, artifacts_dir / "tiny")


@pytest.fixture(scope="session")
def static_artifact(artifacts_dir: Path) -> Path:
    """The same CNN exported with a static batch of 4."""
    model, example = tiny_models.cnn(batch=4)
    return build_artifact_for_tests(model, example, artifacts_dir / "static4", dynamic_batch=False)


@pytest.fixture(scope="session")
def two_io_artifact(artifacts_dir: Path) -> Path:
    """Two inputs (image [b,3,8,8] float32, extra [b,4] float32) → two outputs (logits [b,3], embed [b,6])."""
    model, example = tiny_models.two_in_two_out()
    return build_artifact_for_tests(
        model,
        example,
        artifacts_dir / "two_io",
        input_names=["image", "extra"],
        output_names=["logits", "embed"],
    )
