"""Property-based fuzzing of calibration and validation data: empty sets, NaN, mismatched shapes and
names, labels out of range. Every case feeds the model and scores it, or is refused with an InfershipError;
an accuracy is never computed from labels that are not class indices of the model."""

from __future__ import annotations

import numpy as np
import pytest
from infership.runtime import Task, judge_for

from infership import InfershipError, Predictor

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CLASSES = 5


@pytest.fixture(scope="module")
def predictor(tiny_artifact):
    with Predictor.load(tiny_artifact, backend="ort-cpu") as p:
        yield p


@st.composite
def data_sets(draw):
    n = draw(st.integers(0, 6))
    shape = [n, 3, 16, 16]
    if draw(st.integers(0, 4)) == 0:
        shape[draw(st.integers(1, 3))] = draw(st.integers(0, 20))
    if draw(st.integers(0, 6)) == 0:
        shape = shape[: draw(st.integers(0, 3))]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    array = rng.standard_normal(shape).astype(
        draw(st.sampled_from(["float32", "float64", "float16", "uint8", "int64"]))
    )
    if array.size and array.dtype.kind == "f" and draw(st.booleans()):
        array.reshape(-1)[:: max(1, array.size // 5)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    name = draw(st.sampled_from(["x", "x", "unnamed", "y", "mapping-extra"]))
    if name == "unnamed":
        data = array
    elif name == "mapping-extra":
        data = {"x": array, "z": array}
    else:
        data = {name: array}
    label_kind = draw(st.sampled_from(["none", "valid", "out-of-range", "negative", "float", "short", "2-D"]))
    count = shape[0] if shape else 1
    labels = {
        "none": None,
        "valid": rng.integers(0, CLASSES, count),
        "out-of-range": rng.integers(CLASSES, CLASSES + 100, count),
        "negative": -rng.integers(1, 3, count),
        "float": rng.random(count) * CLASSES,
        "short": rng.integers(0, CLASSES, max(0, count - 1)),
        "2-D": rng.integers(0, CLASSES, (count, 2)),
    }[label_kind]
    return data, labels, label_kind


@given(case=data_sets(), batch_size=st.integers(1, 4))
def test_calibration_and_validation_data(predictor, case, batch_size, tally):
    from infership.calibration import from_numpy

    data, labels, label_kind = case
    judge = judge_for(Task.CLASSIFICATION)
    try:
        cset = from_numpy(data, labels=labels, batch_size=batch_size).bind(predictor.inputs)
        outputs, all_labels = [], []
        for batch in cset.batches():
            outputs.append(predictor.predict(batch.feeds))
            if batch.labels is not None:
                all_labels.append(batch.labels)
        accuracy = judge.score(outputs, np.concatenate(all_labels)) if all_labels else None
    except InfershipError as exc:
        assert str(exc)
        tally.add("calibration and validation data", type(exc).__name__)
        return
    tally.add("calibration and validation data", "accepted")
    if accuracy is not None:
        assert label_kind == "valid", f"an accuracy ({accuracy}) was computed from {label_kind} labels"


@pytest.mark.parametrize("labels", [[0, 1, 2, 7], [-1, 0, 0, 0]])
def test_labels_out_of_range_are_refused(labels):
    judge = judge_for(Task.CLASSIFICATION)
    outputs = [{"logits": np.eye(4, CLASSES, dtype=np.float32)}]
    with pytest.raises(InfershipError, match="class"):
        judge.score(outputs, np.array(labels))


def test_a_reference_with_nothing_finite_is_not_perfect_agreement():
    judge = judge_for(Task.CLASSIFICATION)
    nan = [{"logits": np.full((2, CLASSES), np.nan, np.float32)}]
    zeros = [{"logits": np.zeros((2, CLASSES), np.float32)}]
    try:
        figures = judge.compare(nan, zeros)
    except InfershipError:
        return
    assert figures.sqnr_db is None or figures.sqnr_db < 200, (
        "nothing was compared: no figure may say identical"
    )


def test_a_scalar_array_is_refused():
    from infership.calibration import from_numpy

    with pytest.raises(InfershipError, match="scalar|axis 0"):
        from_numpy(np.float32(1.0) * np.ones(()), batch_size=1)
