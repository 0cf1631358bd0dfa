"""int8 metrics and the CPU outlook: figures computed on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from infership.convert.int8.metrics import compare_int8, sqnr_db
from infership.convert.int8.outlook import int8_outlook
from infership.runtime.hardware import CpuInfo


def test_sqnr_of_known_noise():
    ref = np.ones((4, 10), np.float32)
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)
    assert compare_int8(ref, ref).sqnr_db == 200.0  # identical: a finite, JSON-safe figure


def test_agreement_accuracy_and_confident_subset():
    ref = np.array([[5.0, 0, 0], [0, 5.0, 0], [1.0, 1.1, 1.05], [0, 0, 5.0]], np.float32)
    cand = ref.copy()
    cand[2] = [1.2, 1.0, 1.0]  # flips only the ambiguous row
    labels = np.array([0, 1, 1, 2])
    m = compare_int8(ref, cand, labels)
    assert m.top1_agreement == 0.75
    assert m.confident_samples == 3 and m.confident_top1_agreement == 1.0
    assert m.top5_containment == 1.0
    assert (m.accuracy_fp32, m.accuracy_int8, m.accuracy_drop) == (100.0, 75.0, 25.0)
    assert m.drop == 25.0
    assert compare_int8(ref, cand).drop == 25.0  # without labels: top-1 disagreement
    assert 0.9 < m.cosine_min < 1.0 and m.cosine_mean > m.cosine_min


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        compare_int8(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="expected 2 labels"):
        compare_int8(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3, int))
    m = compare_int8(np.ones((2, 4, 4)), np.ones((2, 4, 4)))
    assert m.top1_agreement is None and m.drop is None  # not a classifier output


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
