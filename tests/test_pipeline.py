"""The main job: resumable, hash-keyed steps; a failed step keeps what earlier steps produced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from infership.runtime import Artifact
from infership.runtime.errors import InvalidInputError

from infership.pipeline import PipelineConfig, run_pipeline
from tests.calibration.digits import DATA_PY

ROOT = Path(__file__).resolve().parents[1]
MODEL_PY = ROOT / "examples" / "digits" / "model.py"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An (untrained) digits CNN state_dict, saved the way users save theirs."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("_digits_model_for_tests", MODEL_PY)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses in the module look themselves up there
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    torch.save(mod.build_model().state_dict(), path)
    return path


def _config(checkpoint: Path, out: Path, **changes) -> PipelineConfig:
    base = dict(
        model=str(checkpoint),
        arch=f"{MODEL_PY}:build_model",
        output=out,
        input_shape=(1, 1, 8, 8),
        task="classification",
        calibration=f"{DATA_PY}:train",
        holdout=f"{DATA_PY}:test",
        calibration_samples=32,
        int8_targets=("ort",),
        max_accuracy_drop=None,
        backends=("torch", "ort-cpu", "ort-cuda"),
        precisions=("fp32", "int8"),
        batch_sizes=(1,),
        scenarios=("single-stream",),
        duration_s=0.2,
        fp16=False,
        openvino=False,
    )
    base.update(changes)
    return PipelineConfig(**base)


@pytest.mark.slow
def test_runs_then_skips_then_redoes_only_what_changed(checkpoint, tmp_path):
    out = tmp_path / "run"
    first = run_pipeline(_config(checkpoint, out))
    assert first.steps_run == ("build", "quantize", "accuracy", "bench", "report")
    rows = {(r["backend"], r["precision"]): r for r in first.rows}
    assert {("torch", "fp32"), ("ort-cpu", "fp32"), ("ort-cpu", "int8")} <= set(rows)
    assert rows[("ort-cpu", "fp32")]["agreement"] == 100.0  # fp32 ONNX agrees with the torch program
    assert all(r["p50_ms"] > 0 for r in first.rows)
    assert any(label.startswith("ort-cuda") for label, _ in first.skipped) or "ort-cuda" in {
        r["backend"] for r in first.rows
    }
    assert first.report.is_file() and "Accuracy and speed" in first.report.read_text()
    assert {v.id for v in Artifact.load(out / "artifact").manifest.variants} >= {
        "onnx-fp32",
        "onnx-int8",
        "torch-fp32",
    }

    # The build checked each variant against torch on the held-out data's first batches too.
    from infership.convert.inputs import SOURCE_BATCHES

    checked = Artifact.load(out / "artifact").manifest.variant("onnx-fp32").validation
    assert (
        checked["real_samples"] == SOURCE_BATCHES * 16 and checked["real"]["passed"]
    )  # 360 held out, batches of 16

    again = run_pipeline(_config(checkpoint, out))
    assert again.steps_run == ()

    changed = run_pipeline(_config(checkpoint, out, duration_s=0.3))  # only the benchmark's inputs changed
    assert changed.steps_run == ("bench", "report")

    # A damaged artifact is rebuilt, and a rebuilt artifact has lost its int8 variants: int8 is redone
    # even though the quantize step's own inputs did not change.
    model_onnx = out / "artifact" / "model.onnx"
    model_onnx.write_bytes(model_onnx.read_bytes()[:-1] + b"\x00")
    repaired = run_pipeline(_config(checkpoint, out, duration_s=0.3))
    assert repaired.steps_run[:2] == ("build", "quantize")
    assert "onnx-int8" in {v.id for v in Artifact.load(out / "artifact").manifest.variants}


@pytest.mark.slow
def test_failed_step_keeps_earlier_results_and_resume_skips_them(checkpoint, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InvalidInputError):
        run_pipeline(_config(checkpoint, out, calibration="no/such/calibration.npz"))
    state = json.loads((out / "pipeline.json").read_text())
    assert set(state["steps"]) == {"build"}
    Artifact.load(out / "artifact").verify_all()  # the build step's artifact is intact
    resumed = run_pipeline(_config(checkpoint, out))
    assert resumed.steps_run[0] == "quantize", "the build step is not redone"


@pytest.mark.slow
def test_a_bench_with_failed_runs_is_kept_and_runs_again_next_time(checkpoint, tmp_path, monkeypatch):
    """A run that failed at run time may not fail again (memory, a fixed runtime): its results and report are
    written, but the step is not marked done. (The failure count is what the sweep reports; here the real
    step runs and its count is replaced, since no tiny model fails on demand in torch and not in ONNX.)"""
    import infership.pipeline as pipeline_module

    real = pipeline_module._step_bench
    monkeypatch.setattr(pipeline_module, "_step_bench", lambda *a: real(*a) or 1)
    out = tmp_path / "run"
    first = run_pipeline(_config(checkpoint, out))
    assert first.steps_run[-2:] == ("bench", "report") and (out / "bench.json").is_file()
    state = json.loads((out / "pipeline.json").read_text())
    assert "bench" not in state["steps"] and "accuracy" in state["steps"]
    monkeypatch.setattr(pipeline_module, "_step_bench", real)  # this time nothing fails
    second = run_pipeline(_config(checkpoint, out))
    assert second.steps_run == ("bench", "report")
    assert run_pipeline(_config(checkpoint, out)).steps_run == ()


def test_toml_config_paths_are_relative_to_the_file_and_flags_win(tmp_path):
    cfg = tmp_path / "conf" / "p.toml"
    cfg.parent.mkdir()
    cfg.write_text(
        '[pipeline]\nmodel = "../m.pt"\narch = "model.py:build"\noutput = "out"\nduration_s = 2.0\n'
    )
    c = PipelineConfig.from_toml(cfg, duration_s=0.5)
    assert c.model == str((tmp_path / "m.pt").resolve())
    assert c.arch == str((cfg.parent / "model.py").resolve()) + ":build"
    assert c.output == (cfg.parent / "out").resolve()
    assert c.duration_s == 0.5


def test_toml_bare_file_names_are_relative_to_the_file(tmp_path):
    cfg = tmp_path / "conf" / "p.toml"
    cfg.parent.mkdir()
    (cfg.parent / "images").mkdir()
    cfg.write_text(
        '[pipeline]\nmodel = "m.pt"\noutput = "out"\ncalibration = "calib.npz"\nholdout = "images"\n'
        'arch = "torchvision:resnet18"\n'
    )
    c = PipelineConfig.from_toml(cfg)
    assert c.model == str((cfg.parent / "m.pt").resolve())
    assert c.calibration == str((cfg.parent / "calib.npz").resolve())
    assert c.holdout == str((cfg.parent / "images").resolve())
    assert c.arch == "torchvision:resnet18"  # not a path


def test_unknown_task_is_refused_before_any_work(tmp_path):
    with pytest.raises(InvalidInputError, match="unknown task 'detector'"):
        PipelineConfig(model="m", output=tmp_path, task="detector")


def test_toml_unknown_key_and_bad_values(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text('[pipeline]\nmodel = "m.pt"\noutput = "o"\nbatch = 3\n')
    with pytest.raises(InvalidInputError, match=r"unknown key\(s\) \['batch'\]"):
        PipelineConfig.from_toml(cfg)
    cfg.write_text("[pipeline\n")
    with pytest.raises(InvalidInputError, match="not valid TOML"):
        PipelineConfig.from_toml(cfg)
    with pytest.raises(InvalidInputError, match="duration_s must be > 0"):
        PipelineConfig(model="m", output=tmp_path, duration_s=0)


def test_cli_help_and_missing_arguments():
    res = subprocess.run([sys.executable, "-m", "infership", "pipeline"], capture_output=True, text=True)
    assert res.returncode == 1 and "give MODEL and -o OUTPUT, or --config FILE" in res.stderr
    assert (
        "resumable"
        in subprocess.run(
            [sys.executable, "-m", "infership", "--help"], capture_output=True, text=True, check=True
        ).stdout
    )
