"""Artifacts: integrity checks, bad files, atomic writes, bare ONNX files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import Artifact, ArtifactWriter, Manifest
from infership.runtime.manifest import SCHEMA_VERSION

from infership import ArtifactError, IntegrityError, Predictor


@pytest.fixture
def artifact_copy(tiny_artifact: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(tiny_artifact, dest, ignore=shutil.ignore_patterns("cache"))
    return dest


def test_manifest_round_trips(tiny_artifact):
    art = Artifact.load(tiny_artifact)
    again = Manifest.from_json(art.manifest.to_json())
    assert again == art.manifest
    assert art.manifest.schema_version == SCHEMA_VERSION
    assert {v.id for v in art.manifest.variants} == {"onnx-fp32", "torch-fp32", "openvino-fp32"}
    for v in art.manifest.variants:
        for f in v.files:
            assert len(f.sha256) == 64 and f.size == (tiny_artifact / f.path).stat().st_size


@pytest.mark.parametrize("backend", ["ort-cpu", "torch", "openvino"])
def test_tampered_model_file_is_refused(artifact_copy, backend):
    variant = {"ort-cpu": "onnx-fp32", "torch": "torch-fp32", "openvino": "openvino-fp32"}[backend]
    entry = Artifact.load(artifact_copy).manifest.variant(variant).files[-1]
    path = artifact_copy / entry.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 .* manifest says"):
        Predictor.load(artifact_copy, backend=backend)


def test_truncated_file_reports_size(artifact_copy):
    path = artifact_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IntegrityError, match="100 bytes, the manifest says"):
        Predictor.load(artifact_copy, backend="ort-cpu")


def test_missing_file(artifact_copy):
    (artifact_copy / "model.onnx").unlink()
    with pytest.raises(IntegrityError, match="model.onnx listed in the manifest is missing"):
        Predictor.load(artifact_copy, backend="ort-cpu")


def test_missing_manifest_and_path(tmp_path):
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        Artifact.load(tmp_path)
    with pytest.raises(ArtifactError, match="artifact not found"):
        Artifact.load(tmp_path / "nope")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="expected an artifact directory or a .onnx file"):
        Artifact.load(tmp_path / "weights.bin")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda d: d.pop("inputs"), "malformed manifest"),
        (lambda d: d["variants"][0].update(precision="int4"), "precision must be one of"),
    ],
)
def test_bad_manifest(artifact_copy, mutate, message):
    mpath = artifact_copy / "manifest.json"
    data = json.loads(mpath.read_text())
    mutate(data)
    mpath.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        Artifact.load(artifact_copy)


def test_manifest_not_json(artifact_copy):
    (artifact_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Artifact.load(artifact_copy)


def test_corrupt_bare_onnx_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        Predictor.load(bad, backend="ort-cpu")


def test_bare_onnx_file_loads_with_derived_manifest(tiny_artifact):
    with Predictor.load(tiny_artifact / "model.onnx", backend="ort-cpu") as p:
        assert p.artifact.derived
        assert p.inputs[0].shape == ("batch", 3, 16, 16)
        out = p.predict(np.zeros((2, 3, 16, 16), np.float32))
    with Predictor.load(tiny_artifact, backend="ort-cpu") as q:
        np.testing.assert_array_equal(
            out["logits"], q.predict(np.zeros((2, 3, 16, 16), np.float32))["logits"]
        )


def test_failed_update_leaves_artifact_intact(artifact_copy, tmp_path):
    before = (artifact_copy / "manifest.json").read_bytes()
    files_before = sorted(p.name for p in artifact_copy.rglob("*"))
    src = tmp_path / "new.onnx"
    src.write_bytes((artifact_copy / "model.onnx").read_bytes())
    with pytest.raises(RuntimeError, match="boom"):
        with ArtifactWriter.update(Artifact.load(artifact_copy)) as w:
            rel = w.add_file(src, "model.onnx")  # the name is taken: a free one is chosen
            assert rel != "model.onnx"
            w.put_variant("onnx-fp16", format="onnx", precision="fp16", files=[rel])
            raise RuntimeError("boom")
    assert (artifact_copy / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in artifact_copy.rglob("*")) == files_before
    Artifact.load(artifact_copy).verify_all()


def test_update_commits_and_replaces_variant_files(artifact_copy, tmp_path):
    src = tmp_path / "again.onnx"
    src.write_bytes((artifact_copy / "model.onnx").read_bytes())
    with ArtifactWriter.update(Artifact.load(artifact_copy)) as w:
        rel = w.add_file(src, "model.onnx")
        w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[rel])
        art = w.commit()
    assert art.manifest.variant("onnx-fp32").files[0].path == rel
    assert not (artifact_copy / "model.onnx").exists(), "the replaced file is removed after commit"
    Artifact.load(artifact_copy).verify_all()


def test_create_refuses_non_empty_dir_without_overwrite(tiny_artifact):
    m = Artifact.load(tiny_artifact).manifest
    with pytest.raises(ArtifactError, match="exists and is not empty"):
        ArtifactWriter.create(tiny_artifact, m)


def test_new_artifact_is_invisible_until_commit(tmp_path, tiny_artifact):
    m = Artifact.load(tiny_artifact).manifest
    root = tmp_path / "fresh"
    w = ArtifactWriter.create(root, m.__class__(name="fresh", inputs=m.inputs, outputs=m.outputs))
    w.add_file(tiny_artifact / "model.onnx", "model.onnx", move=False)
    assert not root.exists()
    w.abort()
    assert not root.exists() and not list(tmp_path.glob(".fresh.*"))
