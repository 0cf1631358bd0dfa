"""Odd graphs: whatever the raw runtime runs, the Predictor runs with the same outputs; whatever the raw
runtime refuses, the Predictor refuses with an InfershipError — and never returns fewer outputs than the
model declares."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import Artifact, ArtifactWriter, Manifest

from infership import InferenceError, InfershipError, Predictor
from tests.reliability.graphs import CASES, Case

onnx = pytest.importorskip("onnx")

BACKENDS = ["ort-cpu", pytest.param("openvino", marks=pytest.mark.openvino)]


def _raw_ort(path: Path):
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - the oracle's refusal, whatever its type
        return None, exc
    names = [o.name for o in sess.get_outputs()]

    def run(feeds):
        return dict(zip(names, sess.run(names, feeds), strict=True))

    return run, None


def _raw_openvino(path: Path):
    import openvino as ov

    core = ov.Core()
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as exc:  # noqa: BLE001 - as above
        return None, exc

    def run(feeds):
        res = compiled.create_infer_request().infer(feeds)
        return {port.get_any_name(): np.array(value) for port, value in res.items()}

    return run, None


RAW = {"ort-cpu": _raw_ort, "openvino": _raw_openvino}


def _save(case: Case, tmp: Path) -> Path:
    path = tmp / "model.onnx"
    onnx.save(case.build(), str(path))
    return path


def _as_artifact(onnx_path: Path, root: Path) -> Path:
    """The same graph in an artifact directory: specs go through manifest.json and back."""
    derived = Artifact.load(onnx_path).manifest
    manifest = Manifest.from_json(
        Manifest(name="odd", inputs=derived.inputs, outputs=derived.outputs).to_json()
    )
    with ArtifactWriter.create(root, manifest) as w:
        rel = w.add_file(onnx_path, "model.onnx", move=False)
        w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[rel])
        w.commit()
    return root


def _equal(got: dict, want: dict) -> None:
    assert set(got) == set(want), f"outputs {sorted(got)} != the runtime's {sorted(want)}"
    for k in want:
        assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.parametrize("where", ["bare", "artifact"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_predictor_matches_the_raw_runtime(case: Case, backend: str, where: str, tmp_path: Path):
    path = _save(case, tmp_path)
    run, refusal = RAW[backend](path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = path if where == "bare" else _as_artifact(path, tmp_path / "art")
            predictor = Predictor.load(src, backend=backend)
    except InfershipError as exc:
        assert str(exc), "a refusal says why"
        if case.refused:
            assert case.refused in str(exc)
            return
        assert refusal is not None, f"the runtime runs this graph, the Predictor refused it: {exc}"
        return
    assert not case.refused, "this graph must be refused at load"
    assert refusal is None, f"the runtime refuses this graph ({refusal}), the Predictor loaded it"
    declared = {o.name for o in predictor.outputs}
    with predictor:
        for feeds in [case.feeds, *case.extra_feeds.values()]:
            try:
                want = run(feeds)
            except Exception:  # noqa: BLE001 - the oracle refuses these inputs: so must the Predictor
                with pytest.raises(InfershipError) as info:
                    predictor.predict(feeds)
                assert str(info.value)
                continue
            got = predictor.predict(feeds)
            assert set(got) == declared, "predict returns every declared output"
            _equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_minus_one_batch_returns_its_outputs(backend: str, tmp_path: Path):
    case = next(c for c in CASES if c.name == "dim_value -1 batch")
    path = _save(case, tmp_path)
    with Predictor.load(path, backend=backend) as p:
        assert p.inputs[0].shape == (None, 3), "-1 is read as a dynamic axis"
        for n in (1, 2, 7):
            out = p.predict(np.ones((n, 3), np.float32))
            assert set(out) == {"y"} and out["y"].shape == (n, 3)
    with Predictor.load(path, backend=backend, max_batch=2) as p:
        out = p.predict(np.arange(15, dtype=np.float32).reshape(5, 3))
        np.testing.assert_array_equal(out["y"], np.arange(15, dtype=np.float32).reshape(5, 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_without_a_batch_axis_are_never_split(backend: str, tmp_path: Path):
    static = next(c for c in CASES if c.name == "constant output, static batch")
    with Predictor.load(_save(static, tmp_path), backend=backend) as p:
        assert set(p.predict(np.ones((2, 3), np.float32))) == {"y", "k"}
        with pytest.raises(InferenceError, match="'k' has shape \\[5\\].*pass exactly 2 rows"):
            p.predict(np.ones((5, 3), np.float32))
    dynamic = next(c for c in CASES if c.name == "constant output, dynamic batch")
    (tmp_path / "d").mkdir()
    with Predictor.load(_save(dynamic, tmp_path / "d"), backend=backend, max_batch=2) as p:
        assert p.predict(np.ones((2, 3), np.float32))["k"].shape == (5,)
        with pytest.raises(InferenceError, match="omit max_batch"):
            p.predict(np.ones((3, 3), np.float32))


def test_zero_batch_model_takes_empty_batches_only(tmp_path: Path):
    case = next(c for c in CASES if c.name == "dim_value 0 batch")
    with Predictor.load(_save(case, tmp_path), backend="ort-cpu") as p:
        assert p.predict(np.zeros((0, 3), np.float32))["y"].shape == (0, 3)
        with pytest.raises(InfershipError, match="expected size 0 on axis 0"):
            p.predict(np.ones((2, 3), np.float32))


def test_unknown_rank_round_trips_through_the_manifest(tmp_path: Path):
    case = next(c for c in CASES if c.name == "missing shapes")
    art = Artifact.load(_as_artifact(_save(case, tmp_path), tmp_path / "art"))
    spec = art.manifest.inputs[0]
    assert not spec.ranked and spec.shape_str() == "[any rank]"
    assert '"shape": null' in (tmp_path / "art" / "manifest.json").read_text()


def test_a_backend_returning_fewer_outputs_is_an_error(tmp_path: Path):
    from tests.builders import build_fake_artifact

    art = build_fake_artifact(tmp_path / "fake", input_shape=("batch", 3), num_outputs=4)

    def partial(feeds, outputs):
        return {}

    with Predictor.load(art, backend="fake", extra={"fn": partial}) as p:
        with pytest.raises(
            InferenceError, match="returned outputs \\[\\]; the model declares \\['logits'\\]"
        ):
            p.predict(np.ones((2, 3), np.float32))
