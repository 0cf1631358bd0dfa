"""Smoothing before per-tensor dynamic int8: the graph computes the same function, the outlier channels move
into the weights (folded into the attention's V where the input is the attention context, a ``Mul``
elsewhere), and the int8 model made from it is closer to fp32 than without smoothing.

A tiny random-weight BERT whose LayerNorm and FFN weights have two channels scaled 30× (the outlier channels of
a trained encoder); sentences from its vocabulary.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.convert.text_models import sentences, tiny_bert_folder

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def outlier_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infership.convert import build_artifact

    root = tmp_path_factory.mktemp("smooth")
    folder = tiny_bert_folder(root / "hf", seed=3, outliers=30.0)
    out = root / "art"
    build_artifact(f"hf:{folder}", out, fp16=False, openvino=False, torch_program=False, samples=2)
    return out


def _bound(art: Path, texts: list[str], batch: int):
    from infership.calibration import from_texts
    from infership.runtime import Artifact
    from infership.runtime.text import TextEncoder

    a = Artifact.load(art)
    enc = TextEncoder(a.manifest.tokenizer, a.root)
    return from_texts(texts, enc).bind(a.manifest.inputs).with_batch_size(batch)


def _outputs(path: Path, cset) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return np.concatenate([sess.run(None, {k: v for k, v in f.items() if k in names})[0] for f in cset])


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(
        10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2))
    )


def test_smoothing_keeps_the_function_and_moves_outliers_into_the_weights(
    outlier_artifact: Path, tmp_path: Path
):
    import onnx
    from infership.convert.int8.smooth import smooth_for_dynamic_int8
    from infership.convert.int8.transformer import weight_matmuls
    from infership.runtime import Artifact

    art = Artifact.load(outlier_artifact)
    fused = art.root / art.manifest.variant("onnx-fp32-fused").files[0].path
    graph = onnx.load(str(fused)).graph
    attention = [n.name for n in graph.node if n.op_type == "Attention"]
    assert attention, "the tiny BERT's fused graph has fused Attention nodes"
    calib = _bound(outlier_artifact, sentences(48, seed=1), 8)
    dst = tmp_path / "smoothed.onnx"
    step = smooth_for_dynamic_int8(fused, dst, calib)
    nodes = step.result["nodes"]
    assert set(nodes) == set(weight_matmuls(fused)) | set(attention)
    for entry in nodes.values():
        assert entry["sqnr_db"] >= entry["sqnr_db_before"]  # never worse than leaving the node alone
        assert (entry["scaling"] == "none") == (entry["alpha"] == 0.0)
    # the inputs with outlier channels gain most: the FFN input after the attention block's LayerNorm
    ffn_in = [e for n, e in nodes.items() if "intermediate/dense" in n]
    assert ffn_in and all(e["scaling"] == "mul" and e["sqnr_db"] - e["sqnr_db_before"] > 3 for e in ffn_in)
    folded = [n for n, e in nodes.items() if e["scaling"] == "fold"]
    assert folded and all("attention/output/dense" in n for n in folded)  # the context is linear in V
    smoothed = onnx.load(str(dst)).graph
    muls = [n for n in smoothed.node if n.op_type == "Mul" and n.name.endswith("/smooth")]
    assert len(muls) == step.result["mul_nodes"] == sum(e["scaling"] == "mul" for e in nodes.values())
    # exact arithmetic would give the same numbers: fp32 rounding only
    held = _bound(outlier_artifact, sentences(24, seed=2), 8)
    ref, got = _outputs(fused, held), _outputs(dst, held)
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-5), float(np.abs(got - ref).max())
    # nodes asked to stay in float are left alone
    keep = weight_matmuls(fused)[0]
    step2 = smooth_for_dynamic_int8(fused, tmp_path / "kept.onnx", calib, exclude_nodes=(keep,))
    assert keep not in step2.result["nodes"]
    kept = next(n for n in onnx.load(str(tmp_path / "kept.onnx")).graph.node if n.name == keep)
    original = next(n for n in graph.node if n.name == keep)
    assert list(kept.input) == list(original.input)


def test_smoothed_int8_is_closer_to_fp32_and_recorded(outlier_artifact: Path, tmp_path: Path):
    """Per-tensor dynamic int8 of the smoothed graph against the unsmoothed one, on held-out batches of mixed
    lengths; then ``quantize`` records the step (and leaves it out when asked)."""
    from infership.convert.int8 import quantize
    from infership.convert.int8.smooth import smooth_for_dynamic_int8
    from infership.convert.int8.transformer import OrtDynamicConfig, quantize_dynamic_model
    from infership.runtime import Artifact

    art = Artifact.load(outlier_artifact)
    fused = art.root / art.manifest.variant("onnx-fp32-fused").files[0].path
    calib = _bound(outlier_artifact, sentences(48, seed=1), 8)
    smooth_for_dynamic_int8(fused, tmp_path / "smoothed.onnx", calib)
    config = OrtDynamicConfig.per_channel()
    quantize_dynamic_model(fused, tmp_path / "plain-int8.onnx", config)
    quantize_dynamic_model(tmp_path / "smoothed.onnx", tmp_path / "smooth-int8.onnx", config)
    held = _bound(outlier_artifact, sentences(48, seed=2), 16).shuffled(seed=3)
    ref = _outputs(fused, held)
    plain = _sqnr_db(ref, _outputs(tmp_path / "plain-int8.onnx", held))
    smooth = _sqnr_db(ref, _outputs(tmp_path / "smooth-int8.onnx", held))
    assert smooth > plain + 3, (plain, smooth)

    for smooth_on in (True, False):
        copy = tmp_path / f"art-{smooth_on}"
        shutil.copytree(outlier_artifact, copy)
        quantize(
            copy,
            sentences(30, seed=1),
            holdout=sentences(20, seed=2),
            targets="ort-dynamic",
            dynamic_config=OrtDynamicConfig.mixed(smooth=smooth_on),
            latency_runs=2,
            routes=False,
        )
        variant = Artifact.load(copy).manifest.variant("onnx-int8-dynamic")
        names = [s.name for s in variant.steps]
        assert ("smooth" in names) is smooth_on
        params = next(s for s in variant.steps if s.name == "quantize_dynamic").params
        assert params["smooth"] is smooth_on


def test_shuffled_set_keeps_its_samples_in_a_seeded_order(outlier_artifact: Path):
    cset = _bound(outlier_artifact, sentences(20, seed=5), 4)
    a, b = cset.shuffled(seed=1), cset.shuffled(seed=1)
    assert a.indices == b.indices and sorted(a.indices) == list(range(20)) and a.indices != tuple(range(20))
    assert len(a) == len(cset) and a.batch_size == 4


def test_openvino_transformer_int8_tries_smooth_quant_strengths_before_float(
    outlier_artifact: Path, tmp_path: Path
):
    """With a budget of zero points, the OpenVINO target tries NNCF's default strength, then the ladder's in
    order until one meets it; it keeps that one (else the one that lost least), the repair goes on from it,
    and the strength reaches NNCF."""
    from infership.convert.int8 import AccuracyBudgetError, quantize
    from infership.convert.int8.build import SMOOTH_QUANT_ALPHAS
    from infership.convert.int8.openvino import NncfQuantConfig
    from infership.runtime import InvalidInputError

    copy = tmp_path / "art"
    shutil.copytree(outlier_artifact, copy)
    try:
        report = quantize(
            copy,
            sentences(30, seed=1),
            holdout=sentences(20, seed=2),
            targets="openvino",
            max_accuracy_drop=0.0,
            max_repair_steps=1,
            latency_runs=2,
            routes=False,
        ).targets[0]
    except AccuracyBudgetError as exc:
        report = exc.report.targets[0]
    step = next(s for s in report.steps if s.name == "smooth_quant_alpha")
    tried = step.result["tried"]
    ladder = [None, *SMOOTH_QUANT_ALPHAS]
    assert tried and [t["alpha"] for t in tried] == ladder[: len(tried)]
    assert all(t["loss_points"] > 0 for t in tried[:-1])  # each missed the budget before the next was tried
    if len(tried) < len(ladder):
        chosen = tried[-1]
        assert chosen["loss_points"] <= 0
    else:
        chosen = min(tried, key=lambda t: t["loss_points"])
    assert step.result["chosen"]["alpha"] == chosen["alpha"]
    nncf_step = next(s for s in report.steps if s.name == "nncf.quantize")
    assert nncf_step.params["smooth_quant_alpha"] == chosen["alpha"]
    first = report.repair.steps[0].metrics.loss_points
    assert first == pytest.approx(chosen["loss_points"], abs=1e-3)  # the repair starts from the chosen model

    # a strength given, or no budget: nothing is tried
    for kwargs in ({"nncf_config": NncfQuantConfig.transformer_model(smooth_quant_alpha=0.5)}, {}):
        again = tmp_path / f"art{len(kwargs)}"
        shutil.copytree(outlier_artifact, again)
        budget = {"max_accuracy_drop": 100.0} if kwargs else {}
        rep = quantize(again, sentences(30, seed=1), holdout=sentences(20, seed=2), targets="openvino",
                       latency_runs=2, routes=False, **budget, **kwargs)  # fmt: skip
        steps = rep.targets[0].steps
        assert not any(s.name == "smooth_quant_alpha" for s in steps)
        expected = 0.5 if kwargs else None
        assert next(s for s in steps if s.name == "nncf.quantize").params["smooth_quant_alpha"] == expected
    for bad in (1.5, -0.1, "0.5", True):
        with pytest.raises(InvalidInputError, match="smooth_quant_alpha"):
            NncfQuantConfig.transformer_model(smooth_quant_alpha=bad)


def test_cli_flags_reach_the_recipes(outlier_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    """``--no-smooth`` leaves the dynamic graph unsmoothed; ``--smooth-quant-alpha`` fixes NNCF's strength
    (nothing is tried even with a budget); a strength outside 0-1 is refused with the reason."""
    import json

    from infership.runtime import Artifact

    from infership.cli import main

    copy = tmp_path / "art"
    shutil.copytree(outlier_artifact, copy)
    calib, held = tmp_path / "calib.txt", tmp_path / "held.txt"
    calib.write_text("\n".join(sentences(30, seed=1)) + "\n")
    held.write_text("\n".join(sentences(20, seed=2)) + "\n")
    argv = ["quantize", str(copy), "--calibration", str(calib), "--holdout", str(held), "--no-routes"]
    rc = main([*argv, "--no-smooth", "--smooth-quant-alpha", "0.6", "--max-accuracy-drop", "100", "--json"])
    assert rc == 0, capsys.readouterr().err
    json.loads(capsys.readouterr().out)
    m = Artifact.load(copy).manifest
    dynamic = [s.name for s in m.variant("onnx-int8-dynamic").steps]
    assert "smooth" not in dynamic and "quantize_dynamic" in dynamic
    ov_steps = m.variant("openvino-int8").steps
    assert not any(s.name == "smooth_quant_alpha" for s in ov_steps)
    assert next(s for s in ov_steps if s.name == "nncf.quantize").params["smooth_quant_alpha"] == 0.6
    rc = main([*argv, "--smooth-quant-alpha", "2"])
    assert rc != 0 and "smooth_quant_alpha must be a number from 0 to 1" in capsys.readouterr().err
