"""PyTorch's own int8 (FX graph mode, x86) as a measured peer: saved as TorchScript, run by the torch backend."""

from __future__ import annotations

import numpy as np
import pytest
from infership.convert.int8 import quantize
from infership.runtime import Artifact, InvalidInputError, Predictor
from infership.runtime.tasks import judge_for

from tests.calibration.digits import (
    DATA_PY,
    copy_artifact,
    digits_artifact,
    from_digits,
    load_digits_split,
    load_trained,
    shared_base,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    return shared_base(tmp_path_factory)


def test_torch_int8_variant_loads_on_the_torch_backend(base, tmp_path):
    root = copy_artifact(digits_artifact(base), tmp_path / "d")
    report = quantize(
        root,
        from_digits("train"),
        holdout=from_digits("test"),
        targets="torch",
        torch_model=load_trained(base),
        max_accuracy_drop=1.0,
    )
    (t,) = report.targets
    assert t.variant_id == "torch-int8" and t.passed and t.metrics.accuracy_drop <= 1.0
    v = Artifact.load(root).manifest.variant("torch-int8")
    assert (v.format, v.precision, v.target) == ("torchscript", "int8", "torch")
    assert v.steps[0].name == "torch.ao.quantize_fx" and v.steps[0].result["quantized_modules"] > 0
    x, y = load_digits_split("test")
    with Predictor.load(root, backend="torch", precision="int8") as p:
        assert p.variant.id == "torch-int8"
        pred = judge_for(p.manifest.task).predictions(p.predict(x[:100]))
    assert float((pred == y[:100]).mean()) > 0.95


def test_torch_target_needs_the_model(base, tmp_path):
    root = copy_artifact(digits_artifact(base), tmp_path / "d")
    with pytest.raises(InvalidInputError, match="torch_model"):
        quantize(root, from_digits("train"), targets="all")


def test_cli_builds_all_three_from_a_checkpoint(base, tmp_path, capsys):
    import json
    from pathlib import Path

    from infership.cli import main
    from tests.calibration.digits import trained_checkpoint

    root = copy_artifact(digits_artifact(base), tmp_path / "d")
    model_py = Path(__file__).resolve().parents[3] / "examples" / "digits" / "model.py"
    rc = main(
        [
            "quantize",
            str(root),
            "--calibration",
            f"{DATA_PY}:train",
            "--holdout",
            f"{DATA_PY}:test",
            "--samples",
            "64",
            "--target",
            "all",
            "--torch-model",
            f"{model_py}:build_model",
            "--torch-weights",
            str(trained_checkpoint(base)),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["variant"] for t in out["targets"]] == ["onnx-int8", "openvino-int8", "torch-int8"]
    assert all(np.isfinite(t["latency_ms"]) for t in out["targets"])
