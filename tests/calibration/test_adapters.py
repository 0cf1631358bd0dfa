"""Adapters: ONNX Runtime's reader rewinds and pauses at chunk boundaries; NNCF's dataset re-iterates."""

from __future__ import annotations

import numpy as np
from infership.calibration import from_numpy, to_nncf_dataset, to_ort_reader
from infership.runtime import TensorSpec

SPEC = TensorSpec("x", "float32", ("batch", 2))


def _cset(n: int = 10, batch_size: int = 3):
    return from_numpy(np.arange(n * 2, dtype=np.float32).reshape(n, 2), batch_size=batch_size).bind([SPEC])


def _drain(reader) -> list[np.ndarray]:
    out = []
    while (batch := reader.get_next()) is not None:
        out.append(batch["x"])
    return out


def test_ort_reader_reads_all_batches_and_rewinds():
    reader = to_ort_reader(_cset())
    first = _drain(reader)
    assert [len(b) for b in first] == [3, 3, 3, 1] and len(reader) == 4
    assert reader.exhausted and reader.get_next() is None
    reader.rewind()
    again = _drain(reader)
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(first))


def test_ort_reader_pauses_at_chunk_boundaries_without_an_empty_last_chunk():
    reader = to_ort_reader(_cset(n=12, batch_size=3), chunk_batches=2)
    chunks = []
    while not reader.exhausted:
        chunks.append(_drain(reader))
        reader.resume()
    assert [len(c) for c in chunks] == [2, 2]  # 4 batches → two full chunks, no third empty one
    assert reader.batches_read == 4


def test_nncf_dataset_is_re_iterable_with_one_sample_per_item():
    dataset = to_nncf_dataset(_cset())
    first = [item["x"] for item in dataset.get_inference_data()]
    second = [item["x"] for item in dataset.get_inference_data()]
    assert len(first) == 10 and all(x.shape == (1, 2) for x in first)
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))


def test_importing_calibration_and_int8_modules_loads_no_runtime():
    import subprocess
    import sys

    code = (
        "import sys, infership.calibration, infership.convert.int8.workflow, infership.convert.int8.cli;"
        "from infership.calibration import from_numpy, from_spec, CalibrationSet, parse_shape, load_array_file;"
        "import infership.calibration.schemes, infership.calibration.arrays, infership.calibration.parsing;"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'nncf', 'onnx', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
