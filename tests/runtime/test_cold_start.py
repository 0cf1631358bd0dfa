"""Hashing off the load's critical path keeps tamper and staleness detection (runtime.verification).

The saving itself is measured by ``benchmarks/cold_start.py``; here: every way a file can differ from the
manifest is still refused — a large model's hash before its first output, paths and sizes at load — and
program files are hashed before the runtime opens them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import Artifact, ArtifactWriter, Manifest, Predictor
from infership.runtime.errors import IntegrityError
from infership.runtime.spec import TensorSpec
from infership.runtime.verification import BACKGROUND_MIN_BYTES


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact whose ONNX model (one MatMul, 512 × 1024 float weights: 2 MiB) is hashed in the
    background, with an OpenVINO IR of it too."""
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper, numpy_helper

    root = tmp_path_factory.mktemp("cold")
    w = np.random.default_rng(0).normal(size=(512, 1024)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1024])],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    src = root / "src.onnx"
    onnx.save(model, src)
    assert src.stat().st_size > BACKGROUND_MIN_BYTES
    m = Manifest(name="big", inputs=(TensorSpec("x", "float32", ("batch", 512)),),
                 outputs=(TensorSpec("y", "float32", ("batch", 1024)),))  # fmt: skip
    art = root / "art"
    wr = ArtifactWriter.create(art, m)
    wr.put_variant(
        "onnx-fp32", format="onnx", precision="fp32", files=[wr.add_file(src, "model.onnx", move=False)]
    )
    (wr.staging_dir / "ir").mkdir()
    ov.save_model(
        ov.convert_model(str(src)), str(wr.staging_dir / "ir" / "model.xml"), compress_to_fp16=False
    )
    wr.put_variant("openvino-fp32", format="openvino", precision="fp32",
                   files=[wr.adopt("ir/model.xml"), wr.adopt("ir/model.bin")])  # fmt: skip
    wr.commit()
    return art


def _flip(path: Path, offset_from_end: int = 4096) -> None:
    """Change one byte deep in the weights: same size, another hash (what a stale copy or tampering gives)."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("backend", "variant", "file"), [("ort-cpu", "onnx-fp32", "model.onnx"),
                                                         ("openvino", "openvino-fp32", "ir/model.bin")])  # fmt: skip
def test_a_tampered_model_is_refused_before_any_output(
    big: Path, tmp_path: Path, backend: str, variant: str, file: str
) -> None:
    from infership.runtime.verification import VerifiedOnFirstRun

    art = tmp_path / "art"
    shutil.copytree(big, art)
    x = np.ones((1, 512), np.float32)
    with Predictor.load(art, backend=backend, variant=variant) as p:  # intact: loads and runs
        assert isinstance(p._session, VerifiedOnFirstRun)
        assert p.predict(x)["y"].shape == (1, 1024)
        inner = p._session._inner
        assert p._session.run.__self__ is inner  # verified: later calls go straight to the runtime's session
    _flip(art / file)
    p = Predictor.load(art, backend=backend, variant=variant)  # the hash is still running, or done
    for _ in range(2):  # the first call and every later one
        with pytest.raises(IntegrityError, match="sha256 of .* the manifest says"):
            p.predict(x)
    p.close()


def test_what_the_runtime_session_tells_passes_through_the_check(big: Path) -> None:
    # OpenVINO's optimal number of infer requests (the offline benchmark's default callers) is read from
    # the session: hashing in the background must not hide it behind the wrapper.
    from infership.runtime.verification import VerifiedOnFirstRun

    with Predictor.load(big, backend="openvino", hint="throughput") as p:
        assert isinstance(p._session, VerifiedOnFirstRun)
        assert p.optimal_concurrency == int(p.placement.details["optimal_number_of_infer_requests"])
        assert p._session.optimal_concurrency == p._session._inner.optimal_concurrency


def test_paths_and_sizes_are_checked_before_the_runtime_opens_anything(big: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(big, art)
    with open(art / "model.onnx", "ab") as f:
        f.write(b"\0")
    a = Artifact.load(art)
    with pytest.raises(IntegrityError, match="bytes, the manifest says"):
        a.verify_started(a.manifest.variant("onnx-fp32"))  # raised at once, not from wait()
    (art / "model.onnx").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        Predictor.load(art, backend="ort-cpu")


def test_wait_reports_the_hash_and_a_verified_variant_is_not_hashed_again(big: Path, tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(big, art)
    a = Artifact.load(art)
    v = a.manifest.variant("onnx-fp32")
    a.verify_started(v)()
    assert v.id in a._verified
    _flip(art / "model.onnx")  # a verified Artifact object trusts what it checked, as verify() always did
    a.verify_started(v)()
    fresh = Artifact.load(art)
    wait = fresh.verify_started(fresh.manifest.variant("onnx-fp32"))
    with pytest.raises(IntegrityError, match="sha256"):
        wait()
    assert "onnx-fp32" not in fresh._verified


def test_program_files_are_hashed_before_they_are_opened(
    tiny_artifact: Path, tmp_path: Path, monkeypatch
) -> None:
    from infership.runtime.backends import torch as torch_backend

    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    _flip(art / "model.pt2", offset_from_end=64)
    opened: list[str] = []
    real_open = torch_backend.TorchBackend.open

    def spy(self, artifact, variant, options):  # records that the runtime was reached, then opens
        opened.append(variant.id)
        return real_open(self, artifact, variant, options)

    monkeypatch.setattr(torch_backend.TorchBackend, "open", spy)
    with pytest.raises(IntegrityError, match="sha256"):
        Predictor.load(art, backend="torch")
    assert opened == []
