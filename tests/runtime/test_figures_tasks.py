"""The typed record of figures and the task layer: directions, units, comparisons and scores."""

from __future__ import annotations

import numpy as np
import pytest
from infership.runtime import Agreement, Better, InvalidInputError, Task, TensorSpec, figure_info, infer_task
from infership.runtime.figures import SQNR_CAP_DB, Unit, sqnr_db
from infership.runtime.tasks import judge_for


@pytest.mark.parametrize(
    ("name", "better"),
    [
        ("accuracy", Better.HIGHER),
        ("accuracy_drop", Better.LOWER),
        ("accuracy_reference", Better.HIGHER),
        ("top1_agreement", Better.HIGHER),
        ("top5_containment", Better.HIGHER),
        ("max_abs_err", Better.LOWER),
        ("outputs.logits.max_rel_err", Better.LOWER),
        ("sqnr_db", Better.HIGHER),
        ("nonfinite", Better.LOWER),
        ("samples", Better.NEITHER),
        ("p99_ms", Better.LOWER),
        ("throughput", Better.HIGHER),
    ],
)
def test_every_figure_declares_its_direction(name, better):
    info = figure_info(name)
    assert info is not None and info.better is better


def test_undeclared_names_are_not_figures():
    assert figure_info("tolerance.min_top1") is None
    assert figure_info("max_accuracy_drop") is None


def test_worsening_in_points_follows_direction_and_unit():
    drop = figure_info("accuracy_drop")
    assert drop.worsening_points(0.5, 3.0) == pytest.approx(2.5)  # the drop grew: worse
    assert drop.worsening_points(3.0, 0.5) == pytest.approx(-2.5)  # the drop shrank: better
    agree = figure_info("top1_agreement")
    assert agree.unit is Unit.FRACTION
    assert agree.worsening_points(0.99, 0.97) == pytest.approx(2.0)
    assert figure_info("sqnr_db").worsening_points(30.0, 20.0) is None  # not a points figure


def test_sqnr_is_capped_once():
    assert sqnr_db(1.0, 0.0) == SQNR_CAP_DB
    assert sqnr_db(0.0, 1.0) == -SQNR_CAP_DB
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)


def test_infer_task():
    logits = TensorSpec("logits", "float32", ("batch", 10))
    assert infer_task([logits]) is Task.TENSOR  # could be an embedding: not obvious
    assert (
        infer_task([logits], images=True) is Task.CLASSIFICATION
    )  # an image model with one [batch, N] output
    assert infer_task([logits], labels=[str(i) for i in range(10)]) is Task.CLASSIFICATION
    assert infer_task([logits], labels=["a", "b"]) is Task.TENSOR  # labels that do not fit are no evidence
    assert infer_task([TensorSpec("p", "float32", ("batch", 1))], images=True) is Task.TENSOR
    assert infer_task([TensorSpec("y", "float32", ("batch", 3, 8, 8))]) is Task.TENSOR
    assert infer_task([logits, TensorSpec("z", "float32", ("batch", 4))]) is Task.TENSOR
    assert infer_task(
        [logits, TensorSpec("z", "float32", ("batch", 4))], labels=[str(i) for i in range(10)]
    ) is (Task.CLASSIFICATION)
    with pytest.raises(
        InvalidInputError, match="unknown task 'keypoints'; expected one of: tensor, classification"
    ):
        Task.parse("keypoints")


def test_classification_compare_and_score():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((40, 10)).astype(np.float32) * 4
    labels = ref.argmax(1).copy()
    labels[:4] = (labels[:4] + 1) % 10  # the reference gets 36 of 40 right
    cand = ref.copy()
    cand[4:6] = -cand[4:6]  # two samples the reference gets right now disagree (argmin is not the argmax)
    judge = judge_for("classification")
    a = judge.compare([{"logits": ref}], [{"logits": cand}], labels=labels)
    assert a.task == "classification"
    assert a.top1_agreement == pytest.approx(38 / 40)
    assert a.accuracy_reference == pytest.approx(90.0)
    assert a.accuracy == pytest.approx(85.0)  # 34 of 40
    assert a.accuracy_drop == pytest.approx(5.0)
    assert a.loss_points == a.accuracy_drop
    top5 = np.argsort(-cand, axis=1)[:, :5]
    assert a.top5_containment == pytest.approx(float(np.mean((top5 == ref.argmax(1)[:, None]).any(1))))
    assert judge.score([{"logits": ref}], labels) == pytest.approx(90.0)
    assert Agreement.from_dict(a.to_dict()) == a


def test_tensor_task_is_elementwise_and_refuses_labels():
    ref = {"y": np.ones((2, 3, 4), np.float32), "z": np.arange(4, dtype=np.float32).reshape(2, 2)}
    cand = {"y": ref["y"] + 1e-3, "z": ref["z"].copy()}
    judge = judge_for(Task.TENSOR)
    a = judge.compare([ref], [cand])
    assert a.max_abs_err == pytest.approx(1e-3, rel=1e-3)
    assert a.outputs["z"].max_abs_err == 0.0 and a.outputs["z"].sqnr_db == SQNR_CAP_DB
    assert a.top1_agreement is None and a.loss_points is None
    with pytest.raises(InvalidInputError, match="no score against labels"):
        judge.compare([ref], [cand], labels=np.zeros(2))
    with pytest.raises(InvalidInputError, match="reference shape"):
        judge.compare([ref], [{"y": ref["y"][:1], "z": ref["z"]}])


def test_nonfinite_candidate_values_are_counted_and_have_no_honest_error():
    ref = {"y": np.ones((2, 4), np.float32)}
    cand = {"y": np.array([[1, 1, np.nan, 1], [1, 1, 1, 1]], np.float32)}
    a = judge_for("tensor").compare([ref], [cand])
    assert a.nonfinite == 1 and a.max_abs_err is None


def test_manifest_records_and_reads_the_task():
    from infership.runtime import Manifest

    m = Manifest(
        name="m",
        inputs=(TensorSpec("x", "float32", ("batch", 4)),),
        outputs=(TensorSpec("logits", "float32", ("batch", 3)),),
        labels=("a", "b", "c"),
    )
    assert m.task is Task.CLASSIFICATION
    data = m.to_dict()
    assert data["task"] == "classification"
    data["task"] = "tensor"
    assert Manifest.from_dict(data).task is Task.TENSOR
    del data["task"]  # written by an older infership: inferred
    assert Manifest.from_dict(data).task is Task.CLASSIFICATION


def test_one_timer_counts_calls_and_refuses_nonsense():
    from infership.runtime.timing import median_ms, time_calls

    calls = []
    samples = time_calls(lambda: calls.append(1), runs=7, warmup=2)
    assert len(samples) == 7 and len(calls) == 9 and all(s >= 0 for s in samples)
    assert median_ms(lambda: None, runs=3, warmup=0, rest_s=0) >= 0
    with pytest.raises(InvalidInputError, match="runs >= 1"):
        time_calls(lambda: None, runs=0)


def test_interleaved_timing_takes_turns_block_by_block():
    from infership.runtime.timing import interleaved_medians

    order: list[str] = []
    medians = interleaved_medians(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, blocks=3, runs=2, warmup=1, rest_s=0
    )
    assert set(medians) == {"a", "b"} and all(m >= 0 for m in medians.values())
    # per block: one side's warm-up and runs, then the other's; each round starts one side later
    assert order == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3 + ["a"] * 3 + ["b"] * 3
    with pytest.raises(InvalidInputError, match="blocks >= 1"):
        interleaved_medians({"a": lambda: None}, blocks=0)


def test_each_round_starts_one_item_later():
    from infership.runtime.timing import round_order

    assert [round_order("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert round_order([], 5) == []


def test_cycling_goes_round_the_items():
    from infership.runtime.timing import cycling

    seen: list[int] = []
    call = cycling(seen.append, [1, 2, 3])
    for _ in range(7):
        call()
    assert seen == [1, 2, 3, 1, 2, 3, 1]
    with pytest.raises(InvalidInputError, match="at least one item"):
        cycling(seen.append, [])


def test_summaries_speak_in_the_users_terms():
    scores = {"logits": np.array([[0.1, 2.0, 0.5], [3.0, 0.0, 1.0]], np.float32)}
    lines = judge_for("classification").summarise(scores, labels=["cat", "dog", "owl"], top=2)
    assert lines == ["dog (2), owl (0.5)", "cat (3), owl (1)"]
    assert judge_for("tensor").summarise(scores) == [
        "logits: [3] float32 mean 0.8667",
        "logits: [3] float32 mean 1.333",
    ]


def test_probability_outputs_count_as_confident():
    probs = np.array([[0.9, 0.05, 0.03, 0.02], [0.1, 0.8, 0.05, 0.05]], np.float32)
    a = judge_for("classification").compare([{"p": probs}], [{"p": probs.copy()}])
    assert a.confident_samples == 2 and a.confident_top1_agreement == 1.0


def test_empty_inputs_are_clear_errors():
    judge = judge_for("classification")
    with pytest.raises(InvalidInputError, match="nothing to score"):
        judge.score([], np.zeros(0))
    with pytest.raises(InvalidInputError, match="every batch is empty"):
        judge.compare([{"y": np.zeros((0, 3))}], [{"y": np.zeros((0, 3))}])


def test_records_of_earlier_versions_are_read():
    a = Agreement.from_dict({"accuracy_int8": 98.0, "accuracy_fp32": 99.0, "accuracy_drop": 1.0})
    assert a.accuracy == 98.0 and a.accuracy_reference == 99.0
    assert figure_info("accuracy_int8").better is Better.HIGHER
