"""Routes by length consulted by the default load: ``Predictor.load(path)`` with no precision, whose rule
would open one validated int8 variant, runs each batch on the route its length selects instead.

The int8 variants here are the tiny BERT's fp32 ONNX file recorded as int8 with passing validation figures:
what is tested is the choice, not quantization (tests/convert/int8/test_text_int8.py measures real routes).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.convert.text_models import SENTENCES, tiny_bert_folder

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

SHORT, LONG = "hello world", "the quick brown fox jumps over the lazy dog"


def _int8_validation(ms: float) -> dict:
    return {"passed": True, "loss_points": 0.5, "max_accuracy_drop": 3.0, "latency_ms": ms,
            "fp32_latency_ms": 10.0, "backend": "ort-cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text artifact with two "int8" variants the default rule accepts, and no routes yet."""
    from infership.convert import build_artifact
    from infership.runtime import Artifact, ArtifactWriter

    root = tmp_path_factory.mktemp("routes")
    out = root / "bert"
    build_artifact(
        f"hf:{tiny_bert_folder(root / 'hf')}", out, task="feature-extraction", fp16=False, openvino=False,
        optimize=False, torch_program=False, validation_data=list(SENTENCES),
    )  # fmt: skip
    art = Artifact.load(out)
    model = art.manifest.variant("onnx-fp32").files[0].path
    with ArtifactWriter.update(art) as w:
        for vid, ms in (("onnx-int8-short", 1.0), ("onnx-int8-long", 2.0)):
            w.put_variant(
                vid, format="onnx", precision="int8", files=[model], validation=_int8_validation(ms)
            )
        w.commit()
    return out


def _with_routes(src: Path, dest: Path, routes: tuple = ()) -> Path:
    """A copy of ``src`` recording int8 ``routes`` (default: short inputs on ORT, the rest on OpenVINO)."""
    from infership.runtime import Artifact, ArtifactWriter
    from infership.runtime.routing import Route, RouteTable, with_routes

    shutil.copytree(src, dest)
    art = Artifact.load(dest)
    table = RouteTable(
        "sequence",
        routes or (Route(8, "onnx-int8-short", "ort-cpu"), Route(None, "onnx-int8-long", "openvino")),
    )
    with ArtifactWriter.update(art) as w:
        w.set_manifest(extra=with_routes(w.manifest, "int8", table).extra)
        w.commit()
    return dest


def test_default_load_without_routes_opens_the_rules_int8_variant(int8_artifact: Path) -> None:
    from infership.runtime import Predictor

    with Predictor.load(int8_artifact) as p:
        assert p.variant.id == "onnx-int8-short" and p.backend == "ort-cpu"
        assert p.placement.details["selection"] == "rule: int8"


def test_default_load_consults_the_routes_of_the_rules_precision(int8_artifact: Path, tmp_path: Path) -> None:
    from infership.runtime import Predictor

    routed = _with_routes(int8_artifact, tmp_path / "routed")
    with Predictor.load(routed) as p:
        assert p.backend == "ort-cpu+openvino"
        details = p.placement.details
        assert [r["variant"] for r in details["routes"]] == ["onnx-int8-short", "onnx-int8-long"]
        assert details["selection"] == "rule: int8, routes by length"
        assert "onnx-int8-short passed its accuracy budget" in details["selection_reason"]
        session = p._session
        assert session.route_for(p.prepare([SHORT])).backend == "ort-cpu"
        assert session.route_for(p.prepare([LONG])).backend == "openvino"
        got = p.predict([SHORT, LONG])["embedding"]
    with Predictor.load(routed, precision="fp32", backend="ort-cpu") as ref:
        np.testing.assert_allclose(got, ref.predict([SHORT, LONG])["embedding"], atol=1e-4)
    # an explicit choice still loads one variant
    with Predictor.load(routed, variant="onnx-int8-long") as p:
        assert "routes" not in p.placement.details


def test_routes_per_batch_bound_the_tokens_of_the_whole_batch(int8_artifact: Path, tmp_path: Path) -> None:
    """``quantize`` measures routes at batch 1 and writes them per batch: a batch of several short texts
    holds as many tokens as one long text and runs where long inputs run fastest; per row, the same table
    routes by each row's length alone. Tables written without ``per`` are per row."""
    from dataclasses import replace

    from infership.runtime import Artifact, ArtifactError, ArtifactWriter, Predictor
    from infership.runtime.routing import RouteTable, read_routes, with_routes

    routed = _with_routes(int8_artifact, tmp_path / "routed")
    art = Artifact.load(routed)
    table = read_routes(art.manifest, "int8")
    assert table is not None and table.per == "row"
    record = table.to_dict()
    del record["per"]
    assert RouteTable.from_dict(record).per == "row"
    with pytest.raises(ArtifactError, match="per row or batch"):
        RouteTable.from_dict({**record, "per": "token"})
    with ArtifactWriter.update(art) as w:
        w.set_manifest(extra=with_routes(w.manifest, "int8", replace(table, per="batch")).extra)
        w.commit()
    with (
        Predictor.load(routed) as per_batch,
        Predictor.load(_with_routes(int8_artifact, tmp_path / "r2")) as per_row,
    ):
        assert per_batch.placement.details["per"] == "batch" and per_row.placement.details["per"] == "row"
        one, four = per_batch.prepare([SHORT]), per_batch.prepare([SHORT] * 4)
        assert one["input_ids"].shape[1] <= 8 < four["input_ids"].size
        assert per_batch._session.route_for(one).backend == "ort-cpu"
        assert per_batch._session.route_for(four).backend == "openvino"
        assert per_row._session.route_for(four).backend == "ort-cpu"
        got = per_batch.predict([SHORT] * 4)["embedding"]
        np.testing.assert_allclose(got, per_row.predict([SHORT] * 4)["embedding"], atol=1e-4)


def test_routes_of_one_variant_share_its_session(int8_artifact: Path, tmp_path: Path) -> None:
    """A variant that serves two stretches of lengths (short and very long inputs) opens once: its routes
    run on the same session, whose outputs are the variant's own; after close the Predictor refuses to run."""
    from infership.runtime import Predictor
    from infership.runtime.routing import Route

    routes = (
        Route(4, "onnx-int8-short", "ort-cpu"),
        Route(8, "onnx-int8-long", "openvino"),
        Route(None, "onnx-int8-short", "ort-cpu"),
    )
    routed = _with_routes(int8_artifact, tmp_path / "routed", routes)
    p = Predictor.load(routed)
    session = p._session
    tiny, short, long = (p.prepare([t]) for t in (SHORT, "the quick brown fox", LONG))
    assert tiny["input_ids"].shape[1] <= 4 < short["input_ids"].shape[1] <= 8 < long["input_ids"].shape[1]
    first, middle, last = (session.route_for(f) for f in (tiny, short, long))
    assert first.session is last.session and middle.backend == "openvino"
    got = p.predict([LONG])["embedding"]
    with Predictor.load(routed, variant="onnx-int8-short", backend="ort-cpu") as ref:
        np.testing.assert_allclose(got, ref.predict([LONG])["embedding"], atol=1e-5)
    p.close()
    with pytest.raises(Exception, match="closed"):
        p.predict([SHORT])


def test_profiles_measured_at_several_lengths_become_routes(int8_artifact: Path, tmp_path: Path) -> None:
    """``optimize --shape input_ids=1x4`` and ``1x64`` store two latency profiles: a plain load runs each
    batch on the profile measured at the nearest length, with that profile's settings."""
    from dataclasses import replace

    from infership.runtime import Artifact, ArtifactWriter, Predictor
    from infership.runtime.profile import Fingerprint, Profile, with_profile

    dest = tmp_path / "profiled"
    shutil.copytree(int8_artifact, dest)
    base = Profile(fingerprint=Fingerprint.current(), objective="latency", backend="ort-cpu",
                   variant="onnx-int8-short", settings={"intra_op_threads": 1}, figures={"p50_ms": 0.2},
                   shape_bucket="sequence=4")  # fmt: skip
    long = replace(base, backend="openvino", variant="onnx-int8-long", settings={"num_streams": 1},
                   shape_bucket="sequence=64")  # fmt: skip
    art = Artifact.load(dest)
    with ArtifactWriter.update(art) as w:
        w.set_manifest(extra=with_profile(with_profile(art.manifest, base), long).extra)
        w.commit()
    with Predictor.load(dest) as p:
        details = p.placement.details
        assert details["selection"] == "from profile, routes by length"
        assert details["routes"] == [
            {"max": 16, "variant": "onnx-int8-short", "backend": "ort-cpu"},  # sqrt(4 * 64)
            {"max": None, "variant": "onnx-int8-long", "backend": "openvino"},
        ]
        short, longer = p.prepare([SHORT]), p.prepare([" ".join([LONG] * 3)])
        assert p._session.route_for(short).options.intra_op_threads == 1
        assert p._session.route_for(longer).backend == "openvino"
        assert p._session.route_for(longer).options.num_streams == 1
        got = p.predict([SHORT, LONG])["embedding"]
    with Predictor.load(dest, precision="fp32", backend="ort-cpu") as ref:
        np.testing.assert_allclose(got, ref.predict([SHORT, LONG])["embedding"], atol=1e-4)
    # one profile alone still decides alone, as before
    one = tmp_path / "one"
    shutil.copytree(int8_artifact, one)
    art = Artifact.load(one)
    with ArtifactWriter.update(art) as w:
        w.set_manifest(extra=with_profile(art.manifest, base).extra)
        w.commit()
    with Predictor.load(one) as p:
        assert p.placement.details["selection"] == "from profile" and p.backend == "ort-cpu"


def test_peers_measure_a_routed_path_as_a_load_at_its_precision(int8_artifact: Path, tmp_path: Path) -> None:
    """What a plain load opens may be routes over two backends (``ort-cpu+openvino``): the peers' side for
    it loads the routes again (by precision), not a backend of that name."""
    from infership.runtime import Artifact, Predictor

    from infership.optimize_space import Candidate
    from infership.peers import _predictor_side

    routed = _with_routes(int8_artifact, tmp_path / "routed")
    with Predictor.load(routed) as p:
        rule = Candidate(p.backend, p.variant.id, p.variant.precision, {})
    assert rule.backend == "ort-cpu+openvino"
    side = _predictor_side(Artifact.load(routed), "rule (no profile)", rule, 1)
    try:
        with Predictor.load(routed) as p:
            feeds = p.prepare([SHORT])
        out = side.call(feeds)
        assert out["embedding"].shape[0] == 1
    finally:
        side.close()


def test_openvino_runs_a_text_models_float_parts_in_f32_unless_told(int8_artifact: Path) -> None:
    """OpenVINO's CPU plugin computes in bf16 by default on CPUs with AMX, and there it returned all-NaN
    embeddings for this very model in some processes: a variable-length model's variants run their float
    parts in f32 on the CPU unless the caller names a precision (``extra={"inference_precision": ...}``)."""
    from infership.runtime import Artifact, Predictor

    with Predictor.load(int8_artifact, variant="onnx-int8-long", backend="openvino") as p:
        assert "float32" in p.placement.details["inference_precision_hint"]
        got = p.predict([SHORT, LONG])["embedding"]
    assert np.isfinite(got).all()
    with Predictor.load(int8_artifact, precision="fp32", backend="ort-cpu") as ref:
        np.testing.assert_allclose(got, ref.predict([SHORT, LONG])["embedding"], atol=1e-4)
    # only variable-length models on the CPU: an image model's int8 keeps the plugin's default, fp32 is f32;
    # conversion records the precision the backend will use (an fp16 IR of this model checks as f32)
    from infership.convert.openvino_ir import execution_precision
    from infership.runtime.backends.openvino import default_inference_precision
    from infership.runtime.spec import TensorSpec

    text = Artifact.load(int8_artifact).manifest.inputs
    image = (TensorSpec("x", "float32", (None, 3, 224, 224)),)
    assert default_inference_precision("int8", image, "CPU") is None
    assert default_inference_precision("fp32", image, "CPU") == "f32"
    assert default_inference_precision("int8", text, "GPU") is None
    assert (
        default_inference_precision("fp16", text, "CPU") == execution_precision("fp16", inputs=text) == "f32"
    )
    # and the NNCF peer that optimize --peers measures beside the chosen path runs as the backend does
    from infership.peers import openvino_peer_config

    assert openvino_peer_config(Artifact.load(int8_artifact)) == {"INFERENCE_PRECISION_HINT": "f32"}
