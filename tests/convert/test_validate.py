"""compare_outputs / Tolerance: the figures every variant's validation is judged by (numpy only, fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from infership.convert.validate import Tolerance, compare_outputs


def _logits(n: int = 6, c: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32) * 5


def test_identical_outputs_pass_with_perfect_figures():
    ref = {"logits": _logits()}
    val = compare_outputs(ref, {"logits": ref["logits"].copy()})
    assert val["passed"] is True and val["failures"] == []
    assert val["max_abs_err"] == 0.0 and val["max_rel_err"] == 0.0
    assert val["cosine_min"] == pytest.approx(1.0)
    assert val["top1_agreement"] == 1.0 and val["top1_in_top5"] == 1.0
    assert val["sqnr_db"] == 300.0
    assert val["samples"] == 6 and val["batches"] == 1 and val["nonfinite"] == 0
    json.dumps(val, allow_nan=False)  # manifest-ready: plain JSON, no NaN/Inf


def test_error_is_judged_against_the_output_scale():
    ref = _logits()
    scale = float(np.abs(ref).max())
    small = ref + np.float32(scale * 5e-4)  # 0.05 % of the scale: inside rtol 1e-3
    big = ref + np.float32(scale * 5e-3)
    assert compare_outputs({"y": ref}, {"y": small})["passed"]
    bad = compare_outputs({"y": ref}, {"y": big})
    assert not bad["passed"]
    assert bad["max_rel_err"] == pytest.approx(5e-3, rel=1e-3)
    assert "max_abs_err" in bad["failures"][0] and "y:" in bad["failures"][0]


def test_nan_in_candidate_fails_and_is_counted():
    ref = _logits()
    cand = ref.copy()
    cand[2, 3] = np.nan
    cand[4, 0] = np.inf
    val = compare_outputs({"y": ref}, {"y": cand}, tolerance=Tolerance(atol=1e9, rtol=1.0, min_cosine=-1.0))
    assert not val["passed"]
    assert val["nonfinite"] == 2
    assert val["max_abs_err"] is None
    assert any("NaN/Inf" in f for f in val["failures"])
    json.dumps(val, allow_nan=False)


def test_matching_nonfinite_values_agree():
    ref = _logits()
    ref[0, 0] = -np.inf  # a masked logit, on both sides
    val = compare_outputs({"y": ref}, {"y": ref.copy()})
    assert val["passed"] and val["nonfinite"] == 0


def test_top1_agreement_counts_flipped_rows():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0], [2.0, 2.5, 0.0]], dtype=np.float32)
    cand = ref.copy()
    cand[3] = [2.6, 2.5, 0.0]  # argmax flips 1 → 0
    val = compare_outputs(
        {"y": ref}, {"y": cand}, tolerance=Tolerance(atol=1.0, min_cosine=0.9, min_top1=0.8)
    )
    assert val["top1_agreement"] == 0.75
    assert val["top1_in_top5"] == 1.0
    assert not val["passed"] and "top1_agreement" in val["failures"][0]


def test_several_batches_and_outputs_aggregate_worst_case():
    refs = [{"a": _logits(2, seed=i), "b": _logits(2, 4, seed=10 + i)} for i in range(3)]
    cands = [{k: v.copy() for k, v in r.items()} for r in refs]
    cands[1]["b"] = cands[1]["b"] * -1.0  # one sample of one output reversed
    val = compare_outputs(refs, cands)
    assert val["batches"] == 3 and val["samples"] == 6
    assert val["outputs"]["a"]["cosine_min"] == pytest.approx(1.0)
    assert val["outputs"]["b"]["cosine_min"] == pytest.approx(-1.0)
    assert val["cosine_min"] == pytest.approx(-1.0)
    assert not val["passed"]


def test_structure_mismatches_raise():
    ref = {"y": _logits()}
    with pytest.raises(ValueError, match="no output 'y'"):
        compare_outputs(ref, {"z": ref["y"]})
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(ref, {"y": ref["y"][:2]})
    with pytest.raises(ValueError, match="batches"):
        compare_outputs([ref, ref], [ref])


def test_tolerance_presets_and_checks():
    assert Tolerance.fp16().rtol > Tolerance.fp32().rtol
    assert Tolerance.fp32().to_dict() == {"atol": 1e-4, "rtol": 1e-3, "min_cosine": 0.9999, "min_top1": None}
    with pytest.raises(ValueError, match="atol"):
        Tolerance(atol=-1)
    with pytest.raises(ValueError, match="min_top1"):
        Tolerance(min_top1=2.0)
