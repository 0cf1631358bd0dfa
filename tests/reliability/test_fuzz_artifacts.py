"""Property-based fuzzing of what an artifact is made of: manifest fields and bytes, file paths and
symlinks, ONNX bytes, external-data locations.

Every case either loads and answers exactly as the intact artifact does, or is refused with an
InfershipError saying why — and nothing outside the artifact directory is ever read.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from infership.runtime import Artifact, ArtifactWriter, Manifest, TensorSpec

from infership import InfershipError, Predictor

hypothesis = pytest.importorskip("hypothesis")
onnx = pytest.importorskip("onnx")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

X = np.array([[1.0, -2.0, 3.0], [0.5, np.nan, -np.inf]], np.float32)


def _model_bytes() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(9, dtype=np.float32).reshape(3, 3) / 10, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


MODEL = _model_bytes()


def _build(root: Path, data: bytes = MODEL) -> Path:
    manifest = Manifest(
        name="fuzz",
        inputs=(TensorSpec("x", "float32", ("batch", 3)),),
        outputs=(TensorSpec("y", "float32", ("batch", 3)),),
    )
    src = root.parent / f".{root.name}.src.onnx"
    src.write_bytes(data)
    with ArtifactWriter.create(root, manifest, overwrite=True) as w:
        w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[w.add_file(src, "model.onnx")])
        w.commit()
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("fuzz") / "base")


@pytest.fixture(scope="module")
def want(base: Path) -> np.ndarray:
    with Predictor.load(base, backend="ort-cpu") as p:
        return p.predict(X)["y"]


def _run(root: Path, tally, boundary: str, want: np.ndarray | None, backend: str = "ort-cpu") -> str:
    try:
        Artifact.load(root).verify_all()
        with Predictor.load(root, backend=backend) as p:
            out = p.predict({p.inputs[0].name: X}) if p.inputs[0].dtype == "float32" else None
            declared = {o.name for o in p.outputs}
    except InfershipError as exc:
        assert len(str(exc)) > 15, "a refusal says why"
        tally.add(boundary, type(exc).__name__)
        return "refused"
    tally.add(boundary, "accepted")
    if out is not None:
        assert set(out) == declared, "every declared output, never fewer"
        if want is not None and set(out) == {"y"}:
            np.testing.assert_array_equal(
                out["y"], want, err_msg="a loaded artifact answers like the intact one"
            )
    return "accepted"


# ------------------------------------------------------------------------------------------- manifests
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(
        ["..", "../model.onnx", "/etc/passwd", "model.onnx", "fp32", "onnx", "x", "batch", "int4"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@pytest.fixture(scope="module")
def base_json(base: Path) -> dict:
    return json.loads((base / "manifest.json").read_text())


@given(data=st.data())
def test_manifest_field_mutations(base, base_json, want, data, tally):
    doc = copy.deepcopy(base_json)
    paths = [p for p in _paths(doc) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            op = data.draw(st.sampled_from(["replace", "delete"]))
            if op == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif op == "delete" and isinstance(parent, list) and path[-1] < len(parent):
                parent.pop(path[-1])
            else:
                parent[path[-1]] = data.draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the way there
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(base, Path(tmp) / "a"))
        (root / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
        _run(root, tally, "manifests: mutated fields", want)


@given(text=st.one_of(st.binary(max_size=300).map(lambda b: b.decode("latin-1")), JSON.map(json.dumps)))
def test_manifest_random_documents(base, text, tally):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(base, Path(tmp) / "a"))
        (root / "manifest.json").write_text(text, encoding="utf-8")
        assert _run(root, tally, "manifests: random documents", None) == "refused"


@given(cut=st.integers(0, 4000))
def test_manifest_truncated(base, cut, tally):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(base, Path(tmp) / "a"))
        text = (root / "manifest.json").read_bytes()
        if cut >= len(text.rstrip()):  # cutting the final newline leaves a complete document
            return
        (root / "manifest.json").write_bytes(text[:cut])
        assert _run(root, tally, "manifests: truncated", None) == "refused"


# ------------------------------------------------------------------------------------ paths and symlinks
PATH_PARTS = st.sampled_from(
    ["..", ".", "", "model.onnx", "sub", "link", "out", "a b", "é", "\\", "C:", "\x00", "~"]
)


@given(
    parts=st.lists(PATH_PARTS, min_size=1, max_size=4),
    absolute=st.booleans(),
    link=st.sampled_from(["none", "inside", "outside", "outside-dir", "chain-out", "loop", "dangling"]),
)
def test_file_paths_and_symlinks(base, want, parts, absolute, link, tally):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(base, Path(tmp) / "a"))
        outside = Path(tmp) / "out"
        outside.mkdir()
        shutil.copy(root / "model.onnx", outside / "model.onnx")  # same bytes, matching hash
        rel = "/".join(parts)
        if absolute:
            rel = str(outside / "model.onnx") if parts == ["model.onnx"] else "/" + rel
        if (
            link != "none"
            and not absolute
            and "\x00" not in rel
            and all(p not in ("", ".", "..") for p in parts)
        ):
            target = {
                "inside": root / "model.onnx",
                "outside": outside / "model.onnx",
                "outside-dir": outside,
                "chain-out": root / "hop",
                "loop": root / rel,
                "dangling": root / "nowhere.onnx",
            }[link]
            if link == "chain-out":
                (root / "hop").symlink_to(outside / "model.onnx")
            place = root / rel
            if link == "outside-dir":
                place = root / parts[0]
            try:
                place.parent.mkdir(parents=True, exist_ok=True)
                if not os.path.lexists(place):
                    place.symlink_to(target)
            except OSError:
                pass
        doc = json.loads((root / "manifest.json").read_text())
        doc["variants"][0]["files"][0]["path"] = rel
        (root / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
        outcome = _run(root, tally, "manifests: file paths and symlinks", want)
        if outcome == "accepted":
            real = (root / rel).resolve()
            assert real.is_relative_to(root.resolve()), f"{rel} was read from outside the artifact: {real}"


# ------------------------------------------------------------------------------------------ ONNX bytes
@given(
    mode=st.sampled_from(["random", "truncated", "flipped"]),
    seed=st.integers(0, 2**32 - 1),
    where=st.sampled_from(["bare", "artifact"]),
    backend=st.sampled_from(["ort-cpu", "openvino"]),
)
def test_onnx_bytes(mode, seed, where, backend, tally):
    if backend == "openvino":
        pytest.importorskip("openvino")
    rng = np.random.default_rng(seed)
    if mode == "random":
        data = rng.integers(0, 256, int(rng.integers(0, 400))).astype(np.uint8).tobytes()
    elif mode == "truncated":
        data = MODEL[: int(rng.integers(0, len(MODEL)))]
    else:
        buf = bytearray(MODEL)
        for _ in range(int(rng.integers(1, 6))):
            buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
        data = bytes(buf)
    with tempfile.TemporaryDirectory() as tmp:
        if where == "bare":
            path = Path(tmp) / "m.onnx"
            path.write_bytes(data)
            try:
                with Predictor.load(path, backend=backend) as p:
                    feeds = {s.name: np.ones([2 if not isinstance(d, int) else d for d in s.shape], s.dtype)
                             for s in p.inputs}  # fmt: skip
                    try:
                        out = p.predict(feeds)
                        assert set(out) == {o.name for o in p.outputs}
                        tally.add("ONNX files: bytes", "accepted")
                    except InfershipError as exc:
                        tally.add("ONNX files: bytes", type(exc).__name__)
            except InfershipError as exc:
                assert str(exc)
                tally.add("ONNX files: bytes", type(exc).__name__)
        else:  # the hash vouches for the bytes: the runtime itself meets them
            _run(_build(Path(tmp) / "a", data), tally, "ONNX files: bytes", None, backend)


LOCATIONS = st.one_of(
    st.sampled_from(["w.bin", "./w.bin", "sub/../w.bin", "../w.bin", "../out/w.bin", "/tmp/w.bin", "link.bin",
                     "out-link/w.bin", "", ".", "..", "w.bin/..", "\\w.bin", "nul\x00.bin", "w.bin "]),
    st.text(max_size=20),
)  # fmt: skip


@given(location=LOCATIONS)
def test_external_data_locations(location, tally):
    from onnx import TensorProto, helper, numpy_helper

    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "art", Path(tmp) / "out"
        folder.mkdir()
        out.mkdir()
        weights = np.arange(9, dtype=np.float32).reshape(3, 3)
        for d in (folder, out):
            (d / "w.bin").write_bytes(weights.tobytes())
        (folder / "link.bin").symlink_to(out / "w.bin")
        (folder / "out-link").symlink_to(out, target_is_directory=True)
        w = numpy_helper.from_array(weights, "w")
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", str(weights.nbytes))):
            w.external_data.add(key=k, value=v)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])],
            initializer=[w],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = folder / "m.onnx"
        path.write_bytes(model.SerializeToString())
        try:
            with Predictor.load(path, backend="ort-cpu") as p:
                out_y = p.predict(np.ones((1, 3), np.float32))["y"]
        except InfershipError as exc:
            assert str(exc)
            tally.add("ONNX files: external-data locations", type(exc).__name__)
            return
        tally.add("ONNX files: external-data locations", "accepted")
        np.testing.assert_array_equal(out_y, np.ones((1, 3), np.float32) @ weights)
        files = Artifact.load(path).manifest.variants[0].files
        for f in files:
            assert (folder / f.path).resolve().is_relative_to(folder.resolve()), f"{f.path} read from outside"
