"""A detector that finds nothing returns no detections on ONNX Runtime instead of failing.

The graph below is what an exported torchvision detector does after its data-dependent filtering: a
variable number of rows (here: the entries of ``x`` above 0.5) is gathered, its boxes clipped the way
``torchvision.ops.clip_boxes_to_image`` does (x and y split, stacked, and reshaped to the shape read from
the tensor), and emitted as ``boxes / scores / labels / batch_index``, with the symbolic row count that
ONNX Runtime's quantization pre-processing writes into an int8 file. ONNX Runtime's ``ReshapeFusion``
then turns that reshape's computed target into ``{0, 11, -1}``, which cannot be applied to an empty tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from infership.runtime import ArtifactWriter, Manifest, Predictor
from infership.runtime.artifact import read_onnx_specs
from infership.runtime.backends.ort import disabled_optimizers

CLASSES = 11


def _detector_graph(path: Path) -> None:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    table = np.random.default_rng(0).uniform(0, 50, size=(4, CLASSES, 4)).astype(np.float32)
    c = {
        "half": np.array(0.5, np.float32), "one": np.array(1, np.int64), "zero": np.array(0, np.int64),
        "table": table, "ax0": np.array([0], np.int64), "axm1": np.array([-1], np.int64),
        "s0": np.array([0], np.int64), "s1": np.array([1], np.int64), "end": np.array([1 << 62], np.int64),
        "ax2": np.array([2], np.int64), "st2": np.array([2], np.int64), "axes1": np.array([1], np.int64),
        **{f"i{i}": np.array(i, np.int64) for i in range(3)},
    }  # fmt: skip
    nodes = [
        h.make_node("Greater", ["x", "half"], ["keep"]),
        h.make_node("NonZero", ["keep"], ["nz"]),
        h.make_node("Gather", ["nz", "one"], ["idx"], axis=0),  # [K] column indices
        h.make_node("Gather", ["table", "idx"], ["per_class"], axis=0),  # [K, 11, 4]
        # torchvision.ops.clip_boxes_to_image: x and y apart, stacked, reshaped to the boxes' own shape
        h.make_node("Shape", ["per_class"], ["shape"]),
        *[h.make_node("Gather", ["shape", f"i{i}"], [f"d{i}"], axis=0) for i in range(3)],
        *[h.make_node("Unsqueeze", [f"d{i}", "ax0"], [f"u{i}"]) for i in range(3)],
        h.make_node("Concat", ["u0", "u1", "u2"], ["target"], axis=0),
        h.make_node("Slice", ["per_class", "s0", "end", "ax2", "st2"], ["bx"]),
        h.make_node("Slice", ["per_class", "s1", "end", "ax2", "st2"], ["by"]),
        h.make_node("Unsqueeze", ["bx", "axm1"], ["bx1"]),
        h.make_node("Unsqueeze", ["by", "axm1"], ["by1"]),
        h.make_node("Concat", ["bx1", "by1"], ["stacked"], axis=-1),  # [K, 11, 2, 2]
        h.make_node("Reshape", ["stacked", "target"], ["clipped"]),  # [K, 11, 4]
        h.make_node("Gather", ["clipped", "zero"], ["boxes"], axis=1),  # [K, 4]
        h.make_node("ReduceMax", ["boxes", "axes1"], ["scores"], keepdims=0),
        h.make_node("Identity", ["idx"], ["labels"]),
        h.make_node("Mul", ["idx", "zero"], ["batch_index"]),
    ]
    det = "detections"
    graph = h.make_graph(
        nodes,
        "detector",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 4])],
        [
            h.make_tensor_value_info("boxes", T.FLOAT, [det, 4]),
            h.make_tensor_value_info("scores", T.FLOAT, [det]),
            h.make_tensor_value_info("labels", T.INT64, [det]),
            h.make_tensor_value_info("batch_index", T.INT64, [det]),
        ],
        [onnx.numpy_helper.from_array(v, k) for k, v in c.items()],
    )
    # What ONNX Runtime's quantization pre-processing (symbolic shape inference) records for an int8 file:
    # the gathered rows' count as one named symbol, which lets the fusion prove the reshape keeps it.
    graph.value_info.extend(
        [
            h.make_tensor_value_info("idx", T.INT64, ["K"]),
            h.make_tensor_value_info("per_class", T.FLOAT, ["K", CLASSES, 4]),
            h.make_tensor_value_info("stacked", T.FLOAT, ["K", CLASSES, 2, 2]),
        ]
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("empty-detections")
    onnx_path = tmp / "model.onnx"
    _detector_graph(onnx_path)
    inputs, outputs = read_onnx_specs(onnx_path)
    root = tmp / "detector"
    w = ArtifactWriter.create(
        root, Manifest(name="detector", inputs=inputs, outputs=outputs, task="detection")
    )
    w.put_variant("onnx-fp32", format="onnx", precision="fp32", files=[w.add_file(onnx_path, "model.onnx")])
    w.commit()
    return root


def test_onnx_runtimes_reshape_fusion_fails_on_an_empty_detection_tensor(detector: Path) -> None:
    """The runtime bug the backend works around (if this stops failing, the workaround can go)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(detector / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": np.array([[0.9, 0.0, 0.7, 0.0]], np.float32)})[0].shape == (2, 4)
    with pytest.raises(Exception, match="cannot be reshaped"):
        sess.run(None, {"x": np.zeros((1, 4), np.float32)})


def test_a_detector_that_finds_nothing_returns_no_detections(detector: Path) -> None:
    assert (
        disabled_optimizers("detection") == ["ReshapeFusion"] and disabled_optimizers("classification") == []
    )
    with Predictor.load(detector, backend="ort-cpu") as p:
        none = p.predict({"x": np.zeros((1, 4), np.float32)})
        assert {k: v.shape for k, v in none.items()} == {
            "boxes": (0, 4), "scores": (0,), "labels": (0,), "batch_index": (0,)
        }  # fmt: skip
        two = p.predict({"x": np.array([[0.9, 0.0, 0.7, 0.0]], np.float32)})
        assert two["boxes"].shape == (2, 4) and two["labels"].tolist() == [0, 2]
        np.testing.assert_array_equal(two["scores"], two["boxes"].max(axis=1))
