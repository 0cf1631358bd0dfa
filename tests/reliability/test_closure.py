"""An artifact is a closed box: it never reads outside itself, its caches cannot be swapped, and one writer
at a time changes it."""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import Artifact, ArtifactWriter
from infership.runtime.errors import ArtifactLocked, UntrustedProgram
from infership.runtime.integrity import runtime_cache_dir

from infership import ArtifactError, IntegrityError, Predictor

onnx = pytest.importorskip("onnx")


@pytest.fixture
def art(tiny_artifact: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "art"
    shutil.copytree(tiny_artifact, dest)
    return dest


def _rewrite(root: Path, change) -> None:
    mpath = root / "manifest.json"
    data = json.loads(mpath.read_text())
    change(data)
    mpath.write_text(json.dumps(data))


def _entry(root: Path, variant: str = "onnx-fp32") -> dict:
    data = json.loads((root / "manifest.json").read_text())
    return next(v for v in data["variants"] if v["id"] == variant)["files"][0]


@pytest.mark.parametrize(
    "path, message",
    [
        ("../elsewhere.onnx", "'..'"),
        ("sub/../../elsewhere.onnx", "'..'"),
        ("/tmp/elsewhere.onnx", "is absolute"),
        ("C:\\models\\m.onnx", "backslashes"),
        ("./model.onnx", "'.'"),
        ("", "1 to 4096 characters"),
        ("a\x00b", "control characters"),
    ],
)
def test_manifest_paths_leading_out_are_refused_before_reading(art: Path, path: str, message: str):
    outside = art.parent / "elsewhere.onnx"
    shutil.copy(art / "model.onnx", outside)  # same bytes, matching hash: only the path is wrong
    _rewrite(art, lambda d: d["variants"][0]["files"][0].update(path=path))
    with pytest.raises(ArtifactError, match=message):
        Predictor.load(art, backend="ort-cpu")


def test_symlinked_model_leading_out_is_refused(art: Path):
    outside = art.parent / "elsewhere.onnx"
    shutil.move(art / "model.onnx", outside)
    (art / "model.onnx").symlink_to(outside)  # same bytes: only the hash check would pass
    with pytest.raises(IntegrityError, match="outside the artifact directory"):
        Predictor.load(art, backend="ort-cpu")


def test_symlinked_folder_leading_out_is_refused(art: Path):
    elsewhere = art.parent / "ov-elsewhere"
    shutil.move(art / "openvino", elsewhere)
    (art / "openvino").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(IntegrityError, match="outside the artifact directory"):
        Predictor.load(art, backend="openvino")


def test_symlink_inside_the_artifact_is_fine(art: Path):
    (art / "real.onnx").write_bytes((art / "model.onnx").read_bytes())
    (art / "model.onnx").unlink()
    (art / "model.onnx").symlink_to("real.onnx")
    with Predictor.load(art, backend="ort-cpu") as p:
        assert p.predict(np.zeros((1, 3, 16, 16), np.float32))["logits"].shape == (1, 5)


def test_manifest_symlinked_out_and_special_files_are_refused(art: Path):
    outside = art.parent / "manifest-elsewhere.json"
    shutil.move(art / "manifest.json", outside)
    (art / "manifest.json").symlink_to(outside)
    with pytest.raises(IntegrityError, match="outside the artifact directory"):
        Artifact.load(art)
    (art / "manifest.json").unlink()
    os.mkfifo(art / "manifest.json")  # reading a FIFO would block forever
    with pytest.raises(IntegrityError, match="not a regular file"):
        Artifact.load(art)
    (art / "manifest.json").unlink()
    os.mkfifo(art / "model.onnx.fifo")
    shutil.move(outside, art / "manifest.json")
    (art / "model.onnx").unlink()
    (art / "model.onnx").symlink_to("model.onnx.fifo")
    with pytest.raises(IntegrityError, match="not a regular file"):
        Predictor.load(art, backend="ort-cpu")


def test_oversized_manifest_is_not_read(art: Path, monkeypatch):
    import infership.runtime.artifact as artifact

    monkeypatch.setattr(artifact, "MANIFEST_LIMIT", 100)
    with pytest.raises(ArtifactError, match="at most 100 are read"):
        Artifact.load(art)


def _external_model(folder: Path, location: str) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wt"], ["y"]), helper.make_node("Transpose", ["w"], ["wt"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    m = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m, str(folder / "m.onnx"))
    return folder / "m.onnx"


@pytest.mark.parametrize("location", ["../outside/w.bin", "/abs/w.bin", "link.bin"])
@pytest.mark.parametrize("backend", ["ort-cpu", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path, location: str, backend: str):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w.bin").write_bytes(np.arange(12, dtype=np.float32).tobytes())
    model = _external_model(tmp_path / "art", location.replace("/abs", str(tmp_path / "outside")))
    (model.parent / "link.bin").symlink_to(tmp_path / "outside" / "w.bin")
    with pytest.raises(IntegrityError, match="external data"):
        Predictor.load(model, backend=backend)


def test_external_data_must_be_listed_in_the_manifest(tmp_path: Path):
    model = _external_model(tmp_path / "src", "w.bin")
    derived = Artifact.load(model)
    assert [f.path for f in derived.manifest.variants[0].files] == ["m.onnx", "w.bin"], "hashed too"
    with Predictor.load(model, backend="ort-cpu") as p:
        want = p.predict(np.ones((1, 3), np.float32))["y"]
    m = replace(derived.manifest, variants=())
    with ArtifactWriter.create(tmp_path / "listed", m) as w:
        files = [w.add_file(model.parent / f, f, move=False) for f in ("m.onnx", "w.bin")]
        w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=files)
        w.commit()
    with Predictor.load(tmp_path / "listed", backend="ort-cpu") as p:
        np.testing.assert_array_equal(p.predict(np.ones((1, 3), np.float32))["y"], want)
    with ArtifactWriter.create(tmp_path / "unlisted", m) as w:
        rel = w.add_file(model, "m.onnx", move=False)
        w.add_file(model.parent / "w.bin", "w.bin", move=False)
        w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[rel])
        w.commit()
    with pytest.raises(IntegrityError, match="does not list"):
        Predictor.load(tmp_path / "unlisted", backend="ort-cpu")


@pytest.mark.openvino
def test_openvino_cache_is_keyed_by_the_model_hash_outside_the_artifact(art: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    with Predictor.load(art, backend="openvino", cache_dir=cache) as p:
        want = p.predict(np.ones((1, 3, 16, 16), np.float32))["logits"]
    assert not (art / "cache").exists(), "nothing is cached under the artifact"
    variant = Artifact.load(art).manifest.variant("openvino-fp32")
    folders = [d for d in (cache / "openvino").iterdir() if d.is_dir()]
    assert len(folders) == 1 and any(folders[0].iterdir()), "one folder with the compiled blob"
    # Another model never finds this model's blob: the folder is keyed by the file hashes.
    other = runtime_cache_dir("openvino", ["0" * 64], {}, cache)
    assert other != folders[0]
    assert folders[0].name not in str(variant.id)
    with Predictor.load(art, backend="openvino", cache_dir=cache) as p:
        np.testing.assert_array_equal(p.predict(np.ones((1, 3, 16, 16), np.float32))["logits"], want)


def test_a_second_writer_is_refused_not_interleaved(art: Path, tmp_path: Path):
    first = ArtifactWriter.update(Artifact.load(art))
    with pytest.raises(ArtifactLocked, match="being written by another process .pid \\d+"):
        ArtifactWriter.update(Artifact.load(art))
    with pytest.raises(ArtifactLocked):
        ArtifactWriter.create(art, Artifact.load(art).manifest, overwrite=True)
    first.abort()
    ArtifactWriter.update(Artifact.load(art)).abort()  # released: the next one gets it


def test_a_writer_on_a_stale_load_is_refused(art: Path, tmp_path: Path):
    stale = Artifact.load(art)
    fresh = Artifact.load(art)
    with ArtifactWriter.update(fresh) as w:
        w.set_manifest(labels=("a", "b", "c", "d", "e"))
        w.commit()
    with pytest.raises(ArtifactLocked, match="changed since it was loaded"):
        ArtifactWriter.update(stale)
    assert Artifact.load(art).manifest.labels == ("a", "b", "c", "d", "e"), "the first commit is kept"


def test_concurrent_writers_one_wins_the_other_is_refused(art: Path):
    results: list[str] = []
    barrier = threading.Barrier(4)

    def write(i: int) -> None:
        loaded = Artifact.load(art)
        barrier.wait()
        try:
            with ArtifactWriter.update(loaded) as w:
                w.set_manifest(labels=tuple(f"w{i}-{k}" for k in range(5)))
                w.commit()
            results.append("ok")
        except ArtifactLocked:
            results.append("refused")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") >= 1 and len(results) == 4
    labels = Artifact.load(art).manifest.labels
    assert labels is not None and len({label.split("-")[0] for label in labels}) == 1, "never interleaved"
    Artifact.load(art).verify_all()


def test_untrusted_program_needs_an_opt_in(art: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "other-user"))  # nothing recorded as built here
    monkeypatch.delenv("INFERSHIP_TRUST_PROGRAMS", raising=False)
    with pytest.raises(UntrustedProgram, match="did not build"):
        Predictor.load(art, backend="torch")
    with Predictor.load(art, backend="openvino" if _has_openvino() else "ort-cpu") as p:
        assert p.predict(np.ones((1, 3, 16, 16), np.float32))["logits"].shape == (1, 5), "no opt-in needed"
    with Predictor.load(art, backend="torch", extra={"trust_program": True}) as p:
        assert p.predict(np.ones((1, 3, 16, 16), np.float32))["logits"].shape == (1, 5)
    monkeypatch.setenv("INFERSHIP_TRUST_PROGRAMS", "1")
    Predictor.load(art, backend="torch").close()


def test_programs_this_installation_wrote_are_trusted(art: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("INFERSHIP_TRUST_PROGRAMS", raising=False)
    m = Artifact.load(art).manifest
    with ArtifactWriter.create(tmp_path / "mine", m) as w:
        rel = w.add_file(art / "model.pt2", "model.pt2", move=False)
        w.put_variant("torch-fp32", format="torch-export", precision="fp32", files=[rel])
        w.commit()
    Predictor.load(tmp_path / "mine", backend="torch").close()


def _has_openvino() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None
