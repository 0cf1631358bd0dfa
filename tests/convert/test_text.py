"""Text models end to end: hf:PATH export with the tokenizer, text in → answers out, output names that never
collide, task aliases. A tiny random-weight BERT saved as a Hugging Face folder (tests/convert/text_models.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.convert.text_models import SENTENCES, reference_embeddings, tiny_bert_folder

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert_folder(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="module")
def text_artifact(bert_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infership.convert import build_artifact

    out = tmp_path_factory.mktemp("art") / "bert"
    build_artifact(
        f"hf:{bert_folder}",
        out,
        task="feature-extraction",
        fp16=False,
        openvino=False,
        validation_data=list(SENTENCES),
    )
    return out


def test_export_records_tokens_tokenizer_ranges_and_task(text_artifact: Path) -> None:
    from infership.runtime import Artifact
    from infership.runtime.tasks import Task

    m = Artifact.load(text_artifact).manifest
    assert [s.name for s in m.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(s.dtype == "int64" and s.shape == ("batch", "sequence") for s in m.inputs)
    assert [s.name for s in m.outputs] == ["embedding"]  # the name BERT also has inside: no collision
    assert m.task is Task.EMBEDDING
    assert m.dims == {"batch": (1, None), "sequence": (1, 64)}
    assert m.tokenizer is not None and m.tokenizer.max_length == 64
    assert (text_artifact / m.tokenizer.files[0].path).is_file()
    fp32 = m.variant("onnx-fp32").validation
    assert fp32["cosine_min"] >= 0.9999 and fp32["real_samples"] == len(SENTENCES)
    checked = {tuple(s["input_ids"]) for s in fp32["shapes"]}
    assert (1, 1) in checked and (1, 64) in checked  # one token, and the longest sequence


def test_transformer_fusions_are_a_checked_variant(text_artifact: Path) -> None:
    from infership.runtime import Artifact, Predictor

    art = Artifact.load(text_artifact)
    fused = art.manifest.variant("onnx-fp32-fused")
    step = fused.steps[0]
    assert step.name == "optimize"
    assert step.result["fusions"]["Attention"] == 2 and step.result["fusions"]["SkipLayerNormalization"] == 4
    assert fused.validation["passed"] and fused.validation["cosine_min"] >= 0.9999
    export = next(s for s in art.manifest.variant("onnx-fp32").steps if s.name == "export")
    assert export.result["exporter"] == "torchscript" and export.params["auto_order"][0] == "torchscript"
    with Predictor.load(text_artifact, variant="onnx-fp32-fused", backend="ort-cpu") as p:
        fused_out = p.predict(list(SENTENCES))["embedding"]
    with Predictor.load(text_artifact, backend="ort-cpu") as p:
        plain_out = p.predict(list(SENTENCES))["embedding"]
    np.testing.assert_allclose(fused_out, plain_out, atol=1e-5)


def test_text_in_answers_out_match_transformers(text_artifact: Path, bert_folder: Path) -> None:
    from infership.runtime import Predictor

    ref = reference_embeddings(bert_folder, list(SENTENCES))
    for backend in ("ort-cpu", "torch"):
        with Predictor.load(text_artifact, backend=backend) as p:
            got = p.predict(list(SENTENCES))["embedding"]
            np.testing.assert_allclose(got, ref, atol=1e-5)
            one = p.predict(SENTENCES[2])["embedding"]
            np.testing.assert_allclose(one[0], ref[2], atol=1e-5)


def test_arrays_still_work_and_batches_pad_to_their_longest(text_artifact: Path) -> None:
    from infership.runtime import Predictor
    from infership.runtime.text import TextEncoder

    with Predictor.load(text_artifact, backend="ort-cpu") as p:
        enc = TextEncoder(p.manifest.tokenizer, text_artifact)
        feeds = enc.encode(["hello world", "a cat sat on the mat"])
        # [CLS] a cat sat on the mat [SEP] = 8 tokens: padded to that, not to the file's fixed 24
        assert feeds["input_ids"].shape == (2, 8)
        assert feeds["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
        by_text = p.predict(["hello world", "a cat sat on the mat"])["embedding"]
        by_array = p.predict(feeds)["embedding"]
        np.testing.assert_array_equal(by_text, by_array)
        alone = p.predict(["hello world"])["embedding"]
        np.testing.assert_allclose(alone[0], by_text[0], atol=1e-5)  # padding changes nothing


def test_long_texts_are_truncated_to_the_maximum(text_artifact: Path) -> None:
    from infership.runtime import Predictor

    with Predictor.load(text_artifact, backend="ort-cpu") as p:
        out = p.predict(["the quick brown fox " * 40])["embedding"]
    assert out.shape == (1, 32) and np.isfinite(out).all()


def test_tokenizer_file_is_hash_checked(text_artifact: Path, tmp_path: Path) -> None:
    import shutil

    from infership.runtime import IntegrityError, Predictor

    copy = tmp_path / "art"
    shutil.copytree(text_artifact, copy)
    tok = copy / "tokenizer" / "tokenizer.json"
    data = json.loads(tok.read_text())
    data["model"]["vocab"]["hello"], data["model"]["vocab"]["world"] = (
        data["model"]["vocab"]["world"],
        data["model"]["vocab"]["hello"],
    )
    tok.write_text(json.dumps(data))
    with Predictor.load(copy, backend="ort-cpu") as p:
        with pytest.raises(IntegrityError, match="tokenizer"):
            p.predict(["hello world"])


def test_predicting_text_imports_neither_torch_nor_transformers(text_artifact: Path) -> None:
    code = (
        "import sys\n"
        "from infership import Predictor\n"
        f"p = Predictor.load({str(text_artifact)!r}, backend='ort-cpu')\n"
        "out = p.predict(['hello world', 'a cat sat on the mat'])\n"
        "assert out['embedding'].shape == (2, 32)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_sentence_transformers_folder_settings_are_read(tmp_path: Path) -> None:
    from infership.convert import build_artifact
    from infership.runtime import Predictor

    folder = tiny_bert_folder(tmp_path / "st", sentence_transformers=True, seed=1)
    art = build_artifact(
        f"hf:{folder}", tmp_path / "art", fp16=False, openvino=False, torch_program=False, samples=2
    )
    record = art.manifest.extra["text"]
    assert {k: record[k] for k in ("task", "pooling", "normalize", "max_length")} == {
        "task": "embedding",
        "pooling": "cls",
        "normalize": True,
        "max_length": 48,
    }
    assert record["architecture"] == {"model_type": "bert", "num_heads": 2, "hidden_size": 32, "layers": 2}
    with Predictor.load(art.root, backend="ort-cpu") as p:
        got = p.predict(list(SENTENCES[:4]))["embedding"]
    ref = reference_embeddings(folder, list(SENTENCES[:4]), pooling="cls")
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_classifier_gets_logits_labels_and_its_task(tmp_path: Path) -> None:
    import torch
    from infership.convert import build_artifact
    from infership.runtime import Predictor
    from infership.runtime.tasks import Task, judge_for
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

    folder = tiny_bert_folder(tmp_path / "clf", classifier=True, num_labels=3)
    art = build_artifact(
        f"hf:{folder}",
        tmp_path / "art",
        task="text-classification",
        fp16=False,
        openvino=False,
        torch_program=False,
        samples=2,
    )
    m = art.manifest
    assert m.task is Task.CLASSIFICATION and m.labels == ("class_0", "class_1", "class_2")
    assert [s.name for s in m.outputs] == ["logits"]
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="[PAD]")
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    with torch.inference_mode():
        ref = model(**tok(list(SENTENCES), padding=True, return_tensors="pt")).logits.numpy()
    with Predictor.load(art.root, backend="ort-cpu") as p:
        out = p.predict(list(SENTENCES))
    np.testing.assert_allclose(out["logits"], ref, atol=1e-5)
    assert judge_for(m.task).summarise(out, labels=m.labels)[0].startswith("class_")


def test_hf_source_refuses_what_does_not_apply(bert_folder: Path, tmp_path: Path) -> None:
    from infership.convert import build_artifact
    from infership.runtime import ConversionError

    with pytest.raises(ConversionError, match="tokenizer"):
        build_artifact(f"hf:{bert_folder}", tmp_path / "a", input_shapes=[(1, 8)])
    with pytest.raises(ConversionError, match="never downloaded"):
        build_artifact("hf:sentence-transformers/all-MiniLM-L6-v2", tmp_path / "b")
    with pytest.raises(ConversionError, match="only to hf"):
        build_artifact(
            "tests.convert.models:digits_cnn", tmp_path / "c", input_shapes=[(1, 1, 8, 8)], pooling="cls"
        )


def test_task_aliases() -> None:
    from infership.runtime import InvalidInputError
    from infership.runtime.tasks import Task

    assert Task.parse("feature-extraction") is Task.EMBEDDING
    assert Task.parse("Sentence_Similarity") is Task.EMBEDDING
    assert Task.parse("text-classification") is Task.CLASSIFICATION
    with pytest.raises(InvalidInputError, match="feature-extraction"):
        Task.parse("summarization")


def test_output_names_never_collide_with_values_inside_the_graph(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from infership.convert.onnx_names import placeholders, rename_outputs
    from onnx import TensorProto, helper

    # "embedding" is already an internal value; the outputs are exported under placeholders.
    out0, out1 = placeholders(2)
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["embedding"], name="relu"),
            helper.make_node("Neg", ["embedding"], [out0], name="neg"),
            helper.make_node("Identity", ["embedding"], [out1], name="id"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [
            helper.make_tensor_value_info(out0, TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info(out1, TensorProto.FLOAT, [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    moved = rename_outputs(model, ["embedding", "relu_out"])
    assert moved == {"embedding": "embedding__internal"}
    onnx.checker.check_model(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    emb, relu = sess.run(["embedding", "relu_out"], {"x": np.array([-1.0, 2.0], np.float32)})
    np.testing.assert_array_equal(emb, [0.0, -2.0])
    np.testing.assert_array_equal(relu, [0.0, 2.0])


def test_tensorrt_profile_covers_every_dynamic_axis_from_the_declared_ranges(text_artifact: Path) -> None:
    from dataclasses import replace

    from infership.runtime import Artifact, BackendUnavailable
    from infership.runtime.backend import BackendOptions
    from infership.runtime.backends.ort import trt_profile

    art = Artifact.load(text_artifact)
    prof = trt_profile(art, BackendOptions(extra={"max_batch": 16}))
    # batch 1 / opt_batch 1 / max_batch; sequence 1 / 64 / 64 from Manifest.dims, the same for every input
    assert prof == {n: ([1, 1], [1, 64], [16, 64]) for n in ("input_ids", "attention_mask", "token_type_ids")}
    tuned = trt_profile(art, BackendOptions(extra={"dim_ranges": {"sequence": [4, 32, 48]}, "opt_batch": 8}))
    assert tuned["input_ids"] == ([1, 4], [8, 32], [32, 48])
    unbounded = replace(art.manifest, dims={"batch": (1, None), "sequence": (1, None)})
    with pytest.raises(BackendUnavailable, match="dim_ranges"):
        trt_profile(Artifact(art.root, unbounded), BackendOptions())
    with pytest.raises(BackendUnavailable, match="min <= opt <= max"):
        trt_profile(art, BackendOptions(extra={"dim_ranges": {"sequence": [8, 4, 16]}}))


def test_routes_send_each_batch_by_its_length(text_artifact: Path, tmp_path: Path) -> None:
    import shutil

    from infership.runtime import Artifact, ArtifactWriter, Predictor
    from infership.runtime.routing import Route, RouteTable, with_routes

    copy = tmp_path / "routed"
    shutil.copytree(text_artifact, copy)
    art = Artifact.load(copy)
    table = RouteTable("sequence", (Route(8, "onnx-fp32", "ort-cpu"), Route(None, "torch-fp32", "torch")))
    with ArtifactWriter.update(art) as w:
        w.set_manifest(extra=with_routes(w.manifest, "fp32", table).extra)
        w.commit()
    with Predictor.load(copy, precision="fp32") as p:
        assert p.backend == "ort-cpu+torch"
        session = p._session
        short = p.prepare(["hello world"])
        long = p.prepare(["the quick brown fox jumps over the lazy dog"])
        assert session.route_for(short).backend == "ort-cpu"
        assert session.route_for(long).backend == "torch"
        np.testing.assert_allclose(
            p.predict(["hello world", "the quick brown fox jumps over the lazy dog"])["embedding"],
            Predictor.load(copy, backend="ort-cpu").predict(
                ["hello world", "the quick brown fox jumps over the lazy dog"]
            )["embedding"],
            atol=1e-5,
        )
