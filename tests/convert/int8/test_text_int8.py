"""int8 for text models: calibration from text, the transformer recipes, the embedding judge, routes by length.

A tiny random-weight BERT (tests/convert/text_models.py) exported with its tokenizer; sentences made from its
vocabulary. Accuracy figures of a random model mean little: the tests check that the figures are the task's
(cosine and nearest-neighbour agreement), that recipes build what they say, and that routes are measured,
recorded and followed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.convert.text_models import sentences, tiny_bert_folder

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def text_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infership.convert import build_artifact

    root = tmp_path_factory.mktemp("int8text")
    folder = tiny_bert_folder(root / "hf", seed=3)
    out = root / "art"
    build_artifact(f"hf:{folder}", out, fp16=False, openvino=False, torch_program=False, samples=2)
    return out


@pytest.fixture
def artifact(text_artifact: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "art"
    shutil.copytree(text_artifact, copy)
    return copy


def test_text_calibration_file_is_tokenized_batched_by_length_and_described(
    text_artifact: Path, tmp_path: Path
):
    from infership.calibration import from_spec
    from infership.runtime import Artifact, InvalidInputError
    from infership.runtime.text import TextEncoder

    m = Artifact.load(text_artifact).manifest
    enc = TextEncoder(m.tokenizer, text_artifact)
    path = tmp_path / "calib.txt"
    texts = sentences(40, seed=0)
    path.write_text("\n".join(texts) + "\n\n")
    cset = from_spec(str(path), tokenizer=enc, batch_size=8).bind(m.inputs)
    widths = [b["input_ids"].shape[1] for b in cset]
    assert widths == sorted(widths)  # shortest first: each batch pads only to its own longest
    lengths = cset.describe()["lengths"]
    assert lengths["count"] == 40 and lengths["min"] >= 3 and lengths["max"] <= 42
    assert sum(lengths["buckets"].values()) == 40
    assert len(cset) == 40 and cset.split(0.5)[1].describe()["lengths"]["count"] == 40  # source-wide record
    with pytest.raises(InvalidInputError, match="no tokenizer"):
        from_spec(str(path))


def test_labelled_text_file(text_artifact: Path, tmp_path: Path):
    from infership.calibration import from_spec
    from infership.runtime import Artifact, InvalidInputError
    from infership.runtime.text import TextEncoder

    m = Artifact.load(text_artifact).manifest
    enc = TextEncoder(m.tokenizer, text_artifact)
    path = tmp_path / "labelled.tsv"
    path.write_text("0\tthe cat sat\ncat_b\ta dog ran on the mat\n")
    cset = from_spec(str(path), tokenizer=enc, class_names=["cat_a", "cat_b"])
    labels = np.concatenate([b.labels for b in cset.batches()])
    assert sorted(labels.tolist()) == [0, 1]
    path.write_text("dog\tthe cat sat\n")
    with pytest.raises(InvalidInputError, match="unknown label"):
        from_spec(str(path), tokenizer=enc, class_names=["cat_a"])


def test_transformer_recipes_are_judged_by_the_embedding_task(artifact: Path):
    """A text model's default targets are the three transformer recipes, each judged as embeddings."""
    from infership.convert.int8 import quantize
    from infership.runtime import Artifact, Predictor

    report = quantize(
        artifact,
        sentences(60, seed=1),
        holdout=sentences(40, seed=2),
        samples=30,
        latency_runs=3,
        routes=False,
    )
    m = Artifact.load(artifact).manifest
    ids = {v.id for v in m.variants}
    assert {"onnx-int8-dynamic", "openvino-int8-weights", "openvino-int8"} <= ids
    assert [r.target.value for r in report.targets] == ["ort-dynamic", "openvino", "openvino-weights"]
    for rep in report.targets:
        assert rep.metrics.task == "embedding"
        assert rep.metrics.top1_agreement is not None and rep.metrics.top5_containment is not None
        assert rep.metrics.cosine_mean is not None and rep.metrics.cosine_mean > 0.9
    dyn = m.variant("onnx-int8-dynamic")
    step = next(s for s in dyn.steps if s.name == "quantize_dynamic")
    assert (
        step.params["mode"] == "mixed"
    )  # the default: blockwise only where one scale per tensor is too coarse
    chosen = next(s for s in dyn.steps if s.name == "choose_blockwise")
    assert chosen.params["threshold_db"] == 30.0
    figures = chosen.result["input_sqnr_db"]
    assert sorted(chosen.result["blockwise"]) == sorted(n for n, db in figures.items() if db < 30.0)
    assert step.params["blockwise_nodes"] == chosen.result["blockwise"]
    ops = step.result["quantized_ops"]
    assert ops["MatMulNBits"] == len(chosen.result["blockwise"])
    assert ops["MatMulNBits"] + ops["DynamicQuantizeMatMul"] + ops["MatMulInteger"] == len(figures)
    assert ops["QAttention"] == 2  # fused Attention → QAttention
    nncf = next(s for s in m.variant("openvino-int8").steps if s.name == "nncf.quantize")
    assert nncf.params["transformer"] is True  # transformer default for a text artifact
    assert m.variant("openvino-int8").calibration["lengths"]["count"] > 0
    with Predictor.load(artifact, variant="onnx-int8-dynamic", backend="ort-cpu") as p:
        assert p.predict(["hello world", "a cat sat on the mat"])["embedding"].shape == (2, 32)


def test_per_channel_dynamic_recipe(artifact: Path):
    from infership.convert.int8 import quantize
    from infership.convert.int8.transformer import OrtDynamicConfig
    from infership.runtime import Artifact

    quantize(
        artifact,
        sentences(20, seed=1),
        holdout=sentences(20, seed=2),
        targets="ort-dynamic",
        dynamic_config=OrtDynamicConfig.per_channel(),
        latency_runs=3,
    )
    step = next(
        s
        for s in Artifact.load(artifact).manifest.variant("onnx-int8-dynamic").steps
        if s.name == "quantize_dynamic"
    )
    assert step.params["mode"] == "per-channel"
    assert step.result["quantized_ops"]["MatMulNBits"] == 0
    assert (
        step.result["quantized_ops"]["DynamicQuantizeMatMul"] + step.result["quantized_ops"]["MatMulInteger"]
        > 0
    )


def test_budget_writes_routes_that_the_predictor_follows(artifact: Path):
    from infership.convert.int8 import quantize
    from infership.runtime import Artifact, Predictor
    from infership.runtime.routing import read_routes

    report = quantize(
        artifact,
        sentences(20, seed=1),
        holdout=sentences(30, seed=2),
        targets="ort-dynamic,openvino-weights",
        max_accuracy_drop=100.0,
        latency_runs=3,
    )
    table = read_routes(Artifact.load(artifact).manifest, "int8")
    assert table is not None and report.routes == table.to_dict()
    assert table.routes[-1].max is None
    assert set(table.measured_ms) == {"onnx-int8-dynamic", "openvino-int8-weights"}
    assert set(table.measured_ms["onnx-int8-dynamic"]) == {
        "sequence=8",
        "sequence=16",
        "sequence=32",
        "sequence=64",
    }
    with Predictor.load(artifact, precision="int8") as p:
        assert p.placement.details["routes"] == [r.to_dict() for r in table.routes]
        out = p.predict(sentences(3, seed=5))["embedding"]
    assert out.shape == (3, 32) and np.isfinite(out).all()
    with Predictor.load(artifact, precision="int8", backend="ort-cpu") as p:  # explicit backend: no routes
        assert "routes" not in p.placement.details
    # optimize's extra candidate (OpenVINO int8 of the converted graph) joins the artifact without
    # replacing the routes measured between the variants above
    from infership.optimize_checks import make_int8

    calib = artifact.parent / "calibration.txt"
    calib.write_text("".join(t + "\n" for t in sentences(40, seed=1)))
    made = make_int8(artifact, str(calib), budget=100.0, targets=("openvino-ir",))
    assert [(r["variant"], r["status"]) for r in made] == [("openvino-int8-ir", "made")], made
    assert read_routes(Artifact.load(artifact).manifest, "int8") == table


def test_quantizing_one_target_at_a_time_routes_between_all_that_passed(artifact: Path):
    from infership.convert.int8 import quantize
    from infership.runtime import Artifact, Predictor
    from infership.runtime.routing import read_routes

    def one(target: str, budget: float):
        return quantize(
            artifact,
            sentences(20, seed=1),
            holdout=sentences(30, seed=2),
            targets=target,
            max_accuracy_drop=budget,
            latency_runs=3,
        )

    one("ort-dynamic", 100.0)
    first = read_routes(Artifact.load(artifact).manifest, "int8")
    assert first is not None and set(first.measured_ms) == {"onnx-int8-dynamic"}
    one("openvino-weights", 100.0)  # the second call times the first call's variant beside its own
    both = read_routes(Artifact.load(artifact).manifest, "int8")
    assert both is not None and set(both.measured_ms) == {"onnx-int8-dynamic", "openvino-int8-weights"}
    with Predictor.load(artifact, precision="int8") as p:
        assert p.placement.details["routes"] == [r.to_dict() for r in both.routes]
    # which earlier variants a call routes between: those it does not replace, within its own budget
    from types import SimpleNamespace

    from infership.convert.int8.routes import kept_variants

    art = Artifact.load(artifact)
    loss = float(art.manifest.variant("onnx-int8-dynamic").validation["loss_points"])
    replacing_ov = [(SimpleNamespace(variant_id="openvino-int8-weights"), [])]
    assert kept_variants(SimpleNamespace(artifact=art, budget=loss + 0.5), replacing_ov) == {
        "onnx-int8-dynamic": "ort-cpu"
    }
    assert kept_variants(SimpleNamespace(artifact=art, budget=loss - 0.5), replacing_ov) == {}
    assert kept_variants(SimpleNamespace(artifact=art, budget=100.0), []) == {
        "onnx-int8-dynamic": "ort-cpu",
        "openvino-int8-weights": "openvino",
    }


def test_route_timings_only_grow_with_length():
    from infership.convert.int8.routes import monotone

    assert monotone({64: 3.0, 8: 1.0, 32: 1.5, 16: 2.0}) == {8: 1.0, 16: 2.0, 32: 2.0, 64: 3.0}


def test_routes_change_variant_only_where_it_pays():
    from infership.convert.int8.routes import SWITCH_MARGIN, assign

    lengths = [8, 16, 32, 64, 128]
    # "ort" wins short inputs by far, "ov" long ones; at 32 "ov" is ahead by 2 %, at 64 "ort" by 1 %: within
    # the noise, a lone length must not become a route of its own (an ORT / OV / ORT / OV table).
    settled = {
        "ort": {8: 1.0, 16: 1.5, 32: 2.04, 64: 3.96, 128: 9.0},
        "ov": {8: 2.0, 16: 2.2, 32: 2.0, 64: 4.0, 128: 6.0},
    }
    assert assign(settled, lengths) == ["ort", "ort", "ov", "ov", "ov"]  # one boundary, least loss
    # a lone length won by more than the margin, between lengths the other wins by far, is kept
    settled["ov"][32], settled["ov"][64] = 2.04 / (1 + 3 * SWITCH_MARGIN), 4.6
    assert assign(settled, lengths) == ["ort", "ort", "ov", "ort", "ov"]
    # one variant: one route; ties keep the first variant
    assert assign({"a": {8: 1.0, 16: 2.0}}, [8, 16]) == ["a", "a"]
    assert assign({"a": {8: 1.0}, "b": {8: 1.0}}, [8]) == ["a"]


def test_dynamic_int8_of_the_fused_graph_does_not_tell_the_user_to_pre_process_it(tmp_path, caplog):
    """ONNX Runtime's ``quantize_dynamic`` logs a hint on the root logger for every graph without its
    pre-processing mark; infership quantizes the fused graph on purpose, so the hint is filtered out there
    (and only there)."""
    import logging

    import onnx
    from infership.convert.int8.transformer import without_preprocess_hint
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    src = tmp_path / "m.onnx"
    onnx.save(model, src)

    def hints() -> int:
        return sum("pre-processing" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING):
        quantize_dynamic(str(src), str(tmp_path / "a.onnx"), weight_type=QuantType.QInt8)
        assert hints() == 1  # the hint the filter exists for
        with without_preprocess_hint():
            quantize_dynamic(str(src), str(tmp_path / "b.onnx"), weight_type=QuantType.QInt8)
        assert hints() == 1
        logging.getLogger().warning("Please consider to run pre-processing: outside the filter again")
        assert hints() == 2


def test_blockwise_recipe_leaves_the_programs_logging_alone():
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from infership.convert.int8.transformer import _nbits_quantizer\n"
        "_nbits_quantizer()\n"
        "root = logging.getLogger()\n"
        "print(root.handlers, logging.getLevelName(root.level))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] WARNING"


def test_dynamic_recipe_ranks_the_tensors_its_quantizers_hurt(text_artifact: Path):
    from infership.calibration import from_texts
    from infership.convert.int8.repair import rank_layers
    from infership.convert.int8.transformer import OrtDynamicConfig, dynamic_quantizers
    from infership.runtime import Artifact
    from infership.runtime.text import TextEncoder

    art = Artifact.load(text_artifact)
    fused = art.root / art.manifest.variant("onnx-fp32-fused").files[0].path
    quantizers = dynamic_quantizers(fused, OrtDynamicConfig.blockwise(block_size=16))
    owners = {n for q in quantizers.values() for n in q.nodes}
    assert any(n.startswith("Attention") for n in owners)
    assert any(n.endswith("output/dense/MatMul") for n in owners)
    x = np.linspace(-3, 3, 64, dtype=np.float32).reshape(2, 32)
    block = next(q for q in quantizers.values() if not any(n.startswith("Attention") for n in q.nodes))
    assert 0 < np.abs(block.fake_quant(x) - x).max() < 3 / 127 + 1e-6  # per-block symmetric int8 steps
    cset = from_texts(sentences(8, seed=4), TextEncoder(art.manifest.tokenizer, art.root)).bind(
        art.manifest.inputs
    )
    ranking = rank_layers(fused, quantizers, cset.with_batch_size(2))
    assert ranking and all(e.nodes for e in ranking)
    assert [e.channel_sqnr_db for e in ranking] == sorted(e.channel_sqnr_db for e in ranking)


def test_mixed_recipe_quantizes_blockwise_exactly_the_inputs_below_the_threshold(
    text_artifact: Path, tmp_path: Path
):
    """The threshold decides each MatMul's quantizer from its measured input SQNR: above every input's
    figure, all go blockwise; below every figure, all per-channel; in between, exactly those below it."""
    import onnx
    from infership.calibration import from_texts
    from infership.convert.int8.transformer import (
        OrtDynamicConfig,
        choose_blockwise,
        dynamic_quantizers,
        quantize_dynamic_model,
        weight_matmuls,
    )
    from infership.runtime import Artifact, InvalidInputError
    from infership.runtime.text import TextEncoder

    art = Artifact.load(text_artifact)
    fused = art.root / art.manifest.variant("onnx-fp32-fused").files[0].path
    cset = from_texts(sentences(8, seed=4), TextEncoder(art.manifest.tokenizer, art.root)).bind(
        art.manifest.inputs
    )
    matmuls = weight_matmuls(fused)
    assert matmuls
    cset = cset.with_batch_size(2)
    config, step, _ = choose_blockwise(fused, OrtDynamicConfig.mixed(), cset)
    figures = step.result["input_sqnr_db"]
    assert set(figures) == set(matmuls) and all(np.isfinite(v) for v in figures.values())
    values = sorted(set(figures.values()))
    assert len(values) > 1
    gap = int(np.argmax(np.diff(values)))
    middle = (values[gap] + values[gap + 1]) / 2  # between two measured figures, clear of rounding
    for threshold, expected in (
        (1000.0, set(matmuls)),
        (-1000.0, set()),
        (middle, {n for n, db in figures.items() if db < middle}),
    ):
        config, step, per_tensor = choose_blockwise(
            fused, OrtDynamicConfig.mixed(mixed_sqnr_db=threshold), cset
        )
        assert set(config.blockwise_nodes) == expected
        # the rest, one entry per MatMul, lowest figure first: what the mixed repair moves to blockwise
        assert [e.nodes[0] for e in per_tensor] == sorted(
            set(matmuls) - expected, key=lambda n: (figures[n], n)
        )
        out = tmp_path / f"q{threshold}.onnx"
        ops = quantize_dynamic_model(fused, out, config).result["quantized_ops"]
        assert ops["MatMulNBits"] == len(expected)
        assert ops["DynamicQuantizeMatMul"] + ops["MatMulInteger"] == len(matmuls) - len(expected)
        graph = onnx.load(str(out)).graph
        assert not any(n.op_type == "MatMul" and n.name in matmuls for n in graph.node)  # nothing left float
        assert not list(tmp_path.glob("*.nbits.onnx"))  # the intermediate model is removed
        # The repair ranking models each input with the quantizer the mixed graph applies to it.
        # small values in one block, an outlier channel in the next: per block they keep their precision
        x = np.concatenate([np.linspace(-0.01, 0.01, 128), np.full(128, 100.0)]).astype(np.float32)[None]
        for q in dynamic_quantizers(fused, config).values():
            err = float(np.abs(q.fake_quant(x) - x)[0, :128].max())
            if set(q.nodes) & set(matmuls):
                assert (err < 1e-3) == bool(set(q.nodes) <= expected), (q.nodes, err)
    with pytest.raises(InvalidInputError, match="mixed mode"):
        OrtDynamicConfig.blockwise(blockwise_nodes=("x",))
    with pytest.raises(InvalidInputError, match="not in the graph"):
        quantize_dynamic_model(
            fused, tmp_path / "bad.onnx", OrtDynamicConfig.mixed(blockwise_nodes=("nope",))
        )
    with pytest.raises(InvalidInputError, match="dB"):
        OrtDynamicConfig.mixed(mixed_sqnr_db="30")


def test_mixed_repair_moves_matmuls_to_per_block_int8_before_keeping_anything_in_float(tmp_path: Path):
    """An encoder with outlier channels, every MatMul starting per tensor (threshold below every figure) and
    a budget it cannot meet: the repair moves MatMuls to blockwise int8, worst input first, and keeps a node
    in float only once no MatMul is left per tensor; the record says which was done at each step."""
    from infership.convert import build_artifact
    from infership.convert.int8 import AccuracyBudgetError, quantize
    from infership.convert.int8.transformer import OrtDynamicConfig

    folder = tiny_bert_folder(tmp_path / "hf", seed=3, outliers=30.0)
    art = tmp_path / "art"
    build_artifact(f"hf:{folder}", art, fp16=False, openvino=False, torch_program=False, samples=2)
    with pytest.raises(AccuracyBudgetError) as info:
        quantize(
            art,
            sentences(40, seed=1),
            holdout=sentences(40, seed=2),
            targets="ort-dynamic",
            # unsmoothed: smoothing alone brings this encoder within the budget (tests/convert/int8/test_smooth.py)
            dynamic_config=OrtDynamicConfig.mixed(mixed_sqnr_db=-1000.0, smooth=False),
            max_accuracy_drop=0.0,
            max_repair_steps=8,
            latency_runs=2,
            routes=False,
        )
    report = info.value.report.targets[0]
    record = report.repair
    assert record is not None and record.steps[0].metrics.loss_points > 0
    chosen = next(s for s in report.steps if s.name == "choose_blockwise")
    per_tensor = sorted(chosen.result["input_sqnr_db"].items(), key=lambda kv: kv[1])
    assert chosen.result["blockwise"] == [] and len(per_tensor) == 6  # 2 layers x 3 weight MatMuls
    actions = [s.action for s in record.steps[1:]]
    assert actions and actions[0] == "blockwise"
    moved = [n for s in record.steps[1:] if s.action == "blockwise" for n in s.excluded]
    assert moved == [n for n, _ in per_tensor][: len(moved)]  # worst input first
    assert tuple(moved) == record.blockwise
    if "float" in actions:  # float only after every MatMul went per block, and never a MatMul
        assert len(moved) == 6 and actions == ["blockwise"] * 6 + ["float"] * (len(actions) - 6)
    assert not set(report.excluded_nodes) & set(moved)
    assert set(record.excluded) == set(report.excluded_nodes)
    quantized = next(s for s in report.steps if s.name == "quantize_dynamic")
    assert quantized.params["blockwise_nodes"] == moved
    assert quantized.result["quantized_ops"]["MatMulNBits"] == len(moved)
    assert record.to_dict()["blockwise_nodes"] == moved
    assert [s["action"] for s in record.to_dict()["steps"][1:]] == actions
