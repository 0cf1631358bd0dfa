"""examples/segmentation: the evaluation's figures and the two pipeline configurations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from infership.calibration import import_file

from infership.pipeline_config import PipelineConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "segmentation"
evaluate = import_file(EXAMPLE / "evaluate.py")


def test_fastest_paths_compare_the_fastest_int8_with_the_fastest_fp32_across_backends():
    ms = {
        ("torch", "fp32"): 0.5,  # the reference, never a deployment path here
        ("ort-cpu", "fp32"): 1.48,
        ("ort-cpu", "int8"): 1.34,
        ("openvino", "fp32"): 2.05,
        ("openvino", "int8"): 1.30,
    }
    out = evaluate.fastest_paths(ms)
    assert out["fastest_fp32"] == {"backend": "ort-cpu", "batch1_ms": 1.48}
    assert out["fastest_int8"] == {"backend": "openvino", "batch1_ms": 1.30}
    assert out["fastest_int8_speedup"] == pytest.approx(round(1.48 / 1.30, 2))
    # Without an int8 path there is no speedup to state, rather than a made-up one.
    only_fp32 = evaluate.fastest_paths({("ort-cpu", "fp32"): 1.0, ("torch", "fp32"): 0.1})
    assert only_fp32["fastest_int8"] is None and only_fp32["fastest_int8_speedup"] is None


def test_miou_and_its_bootstrap_interval_from_per_scene_confusions():
    truth = np.array([[[0, 0], [1, 255]], [[1, 1], [0, 0]]], np.uint8)
    same = truth.copy()
    same[same == 255] = 0
    conf = evaluate.confusions(same.astype(np.int64), truth, 2)
    assert conf.shape == (2, 2, 2) and conf.sum() == 7  # the void pixel is not counted
    assert evaluate.miou(conf.sum(0)) == 1.0
    wrong = np.zeros_like(same, dtype=np.int64)  # every pixel background: class 1 never found
    bad = evaluate.confusions(wrong, truth, 2)
    # background: 4 right of 7 predicted → IoU 4/7; class 1: IoU 0.
    assert evaluate.miou(bad.sum(0)) == pytest.approx((4 / 7 + 0) / 2)
    lo, hi = evaluate.bootstrap_drop(conf, bad, rounds=200)
    assert 0 < lo <= hi <= 100


@pytest.mark.parametrize(("name", "model", "arch"), [
    ("pipeline.toml", "lraspp.pt", "torchvision:lraspp_mobilenet_v3_large"),
    ("unet.toml", "unet.pt", "unet.py:build_unet"),
])  # fmt: skip
def test_each_segmenter_has_a_pipeline_on_the_same_held_out_scenes(name, model, arch):
    config = PipelineConfig.from_toml(EXAMPLE / name)
    assert Path(config.model).name == model and config.arch.endswith(arch)
    if not arch.startswith("torchvision:"):
        assert Path(config.arch.split(":")[0]).is_file()  # the module file the export builds from
    assert config.task == "segmentation" and config.holdout.endswith("data.py:holdout")
    assert config.max_accuracy_drop == 1.0 and set(config.int8_targets) == {"ort", "openvino"}
