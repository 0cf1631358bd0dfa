"""compare_outputs / Tolerance / Check: the figures every variant's validation is judged by (numpy only, fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from infership.convert.validate import Check, Tolerance, compare_outputs
from infership.runtime import Agreement, InvalidInputError
from infership.runtime.figures import SQNR_CAP_DB


def _logits(n: int = 6, c: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32) * 5


def test_identical_outputs_pass_with_perfect_figures():
    ref = {"logits": _logits()}
    check = compare_outputs(ref, {"logits": ref["logits"].copy()}, task="classification")
    assert isinstance(check, Check) and isinstance(check.agreement, Agreement)
    assert check.passed is True and check.failures == ()
    a = check.agreement
    assert a.task == "classification"
    assert a.max_abs_err == 0.0 and a.max_rel_err == 0.0
    assert a.cosine_min == pytest.approx(1.0)
    assert a.top1_agreement == 1.0 and a.top5_containment == 1.0
    assert a.sqnr_db == SQNR_CAP_DB
    assert a.samples == 6 and check.batches == 1 and a.nonfinite == 0
    val = check.to_dict()
    json.dumps(val, allow_nan=False)  # manifest-ready: plain JSON, no NaN/Inf
    assert val["passed"] is True and val["failures"] == [] and val["batches"] == 1
    assert val["max_abs_err"] == 0.0 and val["top1_agreement"] == 1.0 and val["samples"] == 6
    assert val["tolerance"] == Tolerance.fp32().to_dict()
    assert Check.from_dict(json.loads(json.dumps(val))) == check


def test_tensor_task_is_judged_element_wise_only():
    ref = {"logits": _logits()}
    check = compare_outputs(ref, {"logits": ref["logits"].copy()})  # the default task
    assert check.passed and check.agreement.task == "tensor"
    assert check.agreement.top1_agreement is None and check.agreement.top5_containment is None
    assert "top1_agreement" not in check.to_dict()


def test_error_is_judged_against_the_output_scale():
    ref = _logits()
    scale = float(np.abs(ref).max())
    small = ref + np.float32(scale * 5e-4)  # 0.05 % of the scale: inside rtol 1e-3
    big = ref + np.float32(scale * 5e-3)
    assert compare_outputs({"y": ref}, {"y": small}).passed
    bad = compare_outputs({"y": ref}, {"y": big})
    assert not bad.passed
    assert bad.agreement.max_rel_err == pytest.approx(5e-3, rel=1e-3)
    assert bad.agreement.outputs["y"].scale == pytest.approx(scale)
    assert "max_abs_err" in bad.failures[0] and "y:" in bad.failures[0]
    assert bad.to_dict()["passed"] is False and bad.to_dict()["failures"] == list(bad.failures)


def test_nan_in_candidate_fails_and_is_counted():
    ref = _logits()
    cand = ref.copy()
    cand[2, 3] = np.nan
    cand[4, 0] = np.inf
    check = compare_outputs({"y": ref}, {"y": cand}, tolerance=Tolerance(atol=1e9, rtol=1.0, min_cosine=-1.0))
    assert not check.passed
    assert check.agreement.nonfinite == 2
    assert check.agreement.max_abs_err is None
    assert any("NaN/Inf" in f for f in check.failures)
    val = check.to_dict()
    json.dumps(val, allow_nan=False)
    assert val["nonfinite"] == 2 and "max_abs_err" not in val  # no honest figure: left out, not NaN


def test_matching_nonfinite_values_agree():
    ref = _logits()
    ref[0, 0] = -np.inf  # a masked logit, on both sides
    check = compare_outputs({"y": ref}, {"y": ref.copy()})
    assert check.passed and check.agreement.nonfinite == 0


def test_top1_agreement_counts_flipped_rows():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0], [2.0, 2.5, 0.0]], dtype=np.float32)
    cand = ref.copy()
    cand[3] = [2.6, 2.5, 0.0]  # the top class flips 1 → 0
    tol = Tolerance(atol=1.0, min_cosine=0.9, min_top1=0.8)
    check = compare_outputs({"y": ref}, {"y": cand}, tolerance=tol, task="classification")
    assert check.agreement.top1_agreement == 0.75
    assert check.agreement.top5_containment == 1.0  # the reference's top class is in the candidate's top 5
    assert check.failures == ("top1_agreement 0.7500 < 0.8",)
    # The same outputs judged as plain tensors have no top class: a min_top1 would check nothing, so it is
    # refused rather than ignored.
    with pytest.raises(InvalidInputError, match=r"min_top1=0.8 needs a top-1 agreement.*'tensor'"):
        compare_outputs({"y": ref}, {"y": cand}, tolerance=tol)
    with pytest.raises(InvalidInputError, match="min_top1"):
        tol.judge(Agreement(max_abs_err=0.0, cosine_min=1.0))
    assert compare_outputs({"y": ref}, {"y": cand}, tolerance=Tolerance(atol=1.0, min_cosine=0.9)).passed


def test_a_record_without_per_output_figures_is_judged_on_its_aggregate():
    bad = Tolerance().judge(Agreement(max_abs_err=100.0, cosine_min=-1.0, nonfinite=3))
    assert len(bad) == 3
    assert "all outputs: 3 NaN/Inf" in bad[0] and "max_abs_err 100 > allowed" in bad[1]
    assert "cosine_min -1 < 0.9999" in bad[2]
    assert Tolerance().judge(Agreement()) != ()  # no figures at all is no evidence of agreement
    good = Agreement(max_abs_err=1e-3, scale=10.0, cosine_min=1.0)  # within atol + rtol × scale
    assert Tolerance().judge(good) == ()
    # Per-output figures, when present, are what is judged (the aggregate's scale-free max is not).
    per_output = Agreement(max_abs_err=1e-3, cosine_min=1.0, outputs={"y": good})
    assert Tolerance().judge(per_output) == ()


def test_several_batches_and_outputs_aggregate_worst_case():
    refs = [{"a": _logits(2, seed=i), "b": _logits(2, 4, seed=10 + i)} for i in range(3)]
    cands = [{k: v.copy() for k, v in r.items()} for r in refs]
    cands[1]["b"] = cands[1]["b"] * -1.0  # one batch of one output reversed
    check = compare_outputs(refs, cands)
    assert check.batches == 3 and check.agreement.samples == 6
    assert check.agreement.outputs["a"].cosine_min == pytest.approx(1.0)
    assert check.agreement.outputs["b"].cosine_min == pytest.approx(-1.0)
    assert check.agreement.cosine_min == pytest.approx(-1.0)
    assert not check.passed and all(f.startswith("b:") for f in check.failures)
    assert check.to_dict()["outputs"]["b"]["cosine_min"] == pytest.approx(-1.0)


def test_structure_mismatches_raise():
    ref = {"y": _logits()}
    with pytest.raises(InvalidInputError, match="no output 'y'"):
        compare_outputs(ref, {"z": ref["y"]})
    with pytest.raises(InvalidInputError, match="shape"):
        compare_outputs(ref, {"y": ref["y"][:2]})
    with pytest.raises(InvalidInputError, match="batches"):
        compare_outputs([ref, ref], [ref])
    with pytest.raises(InvalidInputError, match="tensor, classification"):
        compare_outputs(ref, ref, task="keypoints")


def test_extra_failures_fail_the_check():
    ref = {"y": _logits()}
    check = compare_outputs(ref, ref).with_failures("y: returned float16, the manifest says float32")
    assert not check.passed and check.to_dict()["passed"] is False


def test_tolerance_presets_and_checks():
    assert Tolerance.fp16().rtol > Tolerance.fp32().rtol
    assert Tolerance.fp32().to_dict() == {
        "atol": 1e-4,
        "rtol": 1e-3,
        "min_cosine": 0.9999,
        "min_top1": None,
        "min_matched": 0.99,
        "min_box_iou": 0.99,
    }
    assert Tolerance.from_dict(Tolerance.bf16().to_dict()) == Tolerance.bf16()
    with pytest.raises(InvalidInputError, match="atol"):
        Tolerance(atol=-1)
    with pytest.raises(InvalidInputError, match="min_top1"):
        Tolerance(min_top1=2.0)
