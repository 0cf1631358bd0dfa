"""int8 validation figures (the classification judge's Agreement, as int8 reads it) and the CPU outlook,
computed on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from infership.convert.int8.outlook import int8_outlook
from infership.runtime.errors import InvalidInputError
from infership.runtime.figures import SQNR_CAP_DB
from infership.runtime.hardware import CpuInfo
from infership.runtime.tasks import judge_for

CLASSIFY = judge_for("classification")


def _compare(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None = None):
    return CLASSIFY.compare([{"logits": ref}], [{"logits": cand}], labels=labels)


def test_sqnr_of_known_noise():
    ref = np.ones((4, 10), np.float32)
    ref[:, 0] = 2.0  # class scores with a top class
    noisy = ref.copy()
    noisy[:, 1] += 0.1 * np.sqrt(np.sum(ref[0] ** 2))  # noise energy 1 % of the signal per row
    assert _compare(ref, noisy).sqnr_db == pytest.approx(20.0, abs=1e-3)
    assert _compare(ref, ref).sqnr_db == SQNR_CAP_DB == 200.0  # identical: a finite, JSON-safe figure


def test_agreement_accuracy_and_confident_subset():
    ref = np.array([[5.0, 0, 0], [0, 5.0, 0], [1.0, 1.1, 1.05], [0, 0, 5.0]], np.float32)
    cand = ref.copy()
    cand[2] = [1.2, 1.0, 1.0]  # flips only the ambiguous row
    labels = np.array([0, 1, 1, 2])
    m = _compare(ref, cand, labels)
    assert m.top1_agreement == 0.75
    assert m.confident_samples == 3 and m.confident_top1_agreement == 1.0
    assert m.top5_containment == 1.0  # the reference's top class is in the candidate's top 5
    assert (m.accuracy_reference, m.accuracy, m.accuracy_drop) == (100.0, 75.0, 25.0)
    assert m.loss_points == 25.0  # the figure the accuracy budget checks
    assert _compare(ref, cand).loss_points == 25.0  # without labels: top-1 disagreement
    assert 0.9 < m.cosine_min < 1.0 and m.cosine_mean > m.cosine_min


def _two_class(margins: list[float], changes: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose top class (0) leads by ``margins`` and a candidate that moves each lead by ``changes``."""
    ref = np.zeros((len(margins), 2), np.float32)
    ref[:, 0] = margins
    cand = ref.copy()
    cand[:, 0] += changes
    return ref, cand


def test_expected_disagreement_pairs_every_margin_with_every_error():
    # one pair of the 16 flips: the smallest margin (1) under the largest error (-1.5); the observed
    # disagreement is that one sample's own flip, 1 of 4
    ref, cand = _two_class([1.0, 2.0, 3.0, 4.0], [-1.5, 0.0, 0.0, 0.0])
    m = _compare(ref, cand)
    assert m.expected_disagreement == pytest.approx(1 / 16)
    assert m.top1_agreement == 0.75 and m.loss_points == 25.0  # the larger of the two
    assert _compare(ref, ref).expected_disagreement == 0.0


def test_a_lucky_set_still_pays_for_its_near_tie():
    # nothing flips: the near-tie (margin 0.1) happened to get no error, the error (-0.5) fell on a sample
    # with a large margin; on other samples like these the two meet, so the budget reads 1/16, not 0
    ref, cand = _two_class([0.1, 5.0, 5.0, 5.0], [0.0, -0.5, 0.0, 0.0])
    m = _compare(ref, cand)
    assert m.top1_agreement == 1.0
    assert m.expected_disagreement == pytest.approx(1 / 16) and m.loss_points == pytest.approx(6.25)
    assert m.to_dict()["expected_disagreement"] == pytest.approx(1 / 16)  # recorded with the validation
    with_labels = _compare(ref, cand, np.zeros(4, int))
    assert with_labels.loss_points == with_labels.accuracy_drop == 0.0  # labels: the budget is accuracy


def test_bad_inputs_are_refused():
    with pytest.raises(InvalidInputError, match="reference shape"):
        _compare(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(InvalidInputError, match="expected 2 labels"):
        _compare(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3, int))
    m = judge_for("tensor").compare([{"y": np.ones((2, 4, 4))}], [{"y": np.ones((2, 4, 4))}])
    assert m.top1_agreement is None and m.loss_points is None  # no class scores: no budget figure


def _cpu(*flags: str, cores: int = 2) -> CpuInfo:
    return CpuInfo(model="test", arch="x86_64", logical_cores=cores, physical_cores=cores, flags=flags)


@pytest.mark.parametrize(
    ("flags", "verdict"),
    [
        (("avx2", "avx512f", "avx512bw", "amx_int8"), "fast"),
        (("avx2", "avx512f", "avx512bw", "avx512_vnni"), "fast"),
        (("avx2", "avx512f", "avx512bw"), "limited"),
        (("avx2",), "limited"),
        ((), "slow"),
    ],
)
def test_outlook_follows_the_cpus_int8_support(flags, verdict):
    assert int8_outlook(_cpu(*flags)).verdict == verdict


def test_outlook_warns_about_s8s8_on_cpu_and_missing_reduce_range():
    vnni = _cpu("avx2", "avx512bw", "avx512_vnni")
    s8s8 = int8_outlook(vnni, activation_type="int8", target="ort-cpu")
    assert s8s8.verdict == "limited" and any("S8S8" in n for n in s8s8.notes)
    assert int8_outlook(vnni, activation_type="int8", target="ort-trt").verdict == "fast"  # GPU target
    avx2 = int8_outlook(_cpu("avx2"), activation_type="uint8", reduce_range=False)
    assert any("reduce_range" in n for n in avx2.notes)


def test_layer_ranking_keeps_a_fixed_batch():
    """The ranking set of a model with a fixed batch size (a detector: one image per run) keeps that batch;
    other models rank on batches of two."""
    from infership.calibration import CalibrationSet
    from infership.calibration.sources import ArraySource
    from infership.convert.int8.workflow import _rank_set
    from infership.runtime.spec import TensorSpec

    images = np.zeros((6, 3, 8, 8), np.float32)
    fixed = CalibrationSet(ArraySource([{"images": images}], labels=None, description={})).bind(
        [TensorSpec("images", "float32", (1, 3, 8, 8))]
    )
    ranked = _rank_set(fixed, 4)
    assert len(ranked) == 4 and ranked.batch_size == 1 and all(b["images"].shape[0] == 1 for b in ranked)
    free = CalibrationSet(ArraySource([{"images": images}], labels=None, description={})).bind(
        [TensorSpec("images", "float32", (None, 3, 8, 8))]
    )
    assert _rank_set(free, 4).batch_size == 2
