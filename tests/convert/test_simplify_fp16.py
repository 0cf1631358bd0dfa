"""simplify_onnx and convert_fp16 on real graphs: what is recorded, and refusals that keep the original."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from infership.convert import Simplifier, convert_fp16, simplify_onnx
from infership.convert.simplify import _shape_problem
from onnx import TensorProto, helper


def _graph(batch_dim, *, broken: bool = False) -> onnx.ModelProto:
    """x [batch, 4] → (x + 1) * 2, folded constant included; optionally reading a tensor nothing defines."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 4])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("Identity", ["one"], ["one_again"]),
        helper.make_node("Add", ["x", "one_again"], ["a"]),
        helper.make_node("Add", ["a", "ghost" if broken else "a"], ["y"]),
    ]
    opsets = [helper.make_opsetid("", 17)]
    return helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [one]), opset_imports=opsets, ir_version=8
    )


def test_simplify_records_node_counts_and_keeps_dynamic_dims(tmp_path):
    src, dst = tmp_path / "m.onnx", tmp_path / "s.onnx"
    onnx.save(_graph("batch"), src)
    for tool in (Simplifier.ONNXSLIM, Simplifier.ONNXSIM):
        written, step = simplify_onnx(src, dst, simplifier=tool)
        assert written, step.result
        assert step.result["tool"] == tool.value and step.result["applied"] is True
        assert step.result["nodes_before"] == 3 and step.result["nodes_after"] < 3
        dims = onnx.load(dst).graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"


def test_simplifier_failure_keeps_the_original_and_says_why(tmp_path):
    src, dst = tmp_path / "m.onnx", tmp_path / "s.onnx"
    onnx.save(_graph("batch", broken=True), src)
    written, step = simplify_onnx(src, dst, simplifier=Simplifier.AUTO)
    assert not written and not dst.exists()
    assert step.result["applied"] is False
    assert step.result["reason"].startswith("onnxslim:") and "; onnxsim:" in step.result["reason"]
    assert step.result["nodes_after"] == step.result["nodes_before"]


def test_disabled_simplifier_is_recorded(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_graph("batch"), src)
    written, step = simplify_onnx(src, tmp_path / "s.onnx", simplifier="none")
    assert not written and step.result == {"applied": False, "reason": "disabled", "nodes_before": 3}


def test_frozen_dynamic_dim_is_detected():
    assert _shape_problem(_graph("batch"), _graph("batch")) is None
    problem = _shape_problem(_graph("batch"), _graph(1))
    assert problem == "x: dynamic axis 0 (batch) was frozen to 1"


@pytest.fixture()
def softmax_model(tmp_path):
    """x [b, 8] → Softmax(MatMul(x, W) * 300): large logits, where an fp16 softmax would overflow."""
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Mul", ["h", "k"], ["s"]),
        helper.make_node("Softmax", ["s"], ["y"], axis=-1),
    ]
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [8, 8], w.ravel()),
        helper.make_tensor("k", TensorProto.FLOAT, [1], [300.0]),
    ]
    path = tmp_path / "sm.onnx"
    onnx.save(
        helper.make_model(
            helper.make_graph(nodes, "g", [x], [y], inits),
            opset_imports=[helper.make_opsetid("", 17)],
            ir_version=8,
        ),
        path,
    )
    return path


def test_fp16_keeps_io_fp32_and_sensitive_ops_in_fp32(softmax_model, tmp_path):
    dst = tmp_path / "h.onnx"
    step = convert_fp16(softmax_model, dst)
    m = onnx.load(dst)
    softmax = next(n for n in m.graph.node if n.op_type == "Softmax")
    producer = {o: n for n in m.graph.node for o in n.output}[softmax.input[0]]
    assert producer.op_type == "Cast"  # back to fp32 before the softmax
    assert step.result["fp32_ops"] == {"Softmax": 1} and step.result["io_types"] == "fp32"
    # onnxconverter-common leaves an output produced by a block-listed op in fp16; it must be restored
    assert step.result["io_types_restored"] == ["y"]
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(softmax_model)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(dst)).run(None, {"x": x})[0]
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, atol=2e-2)


def test_fp16_without_block_list_is_what_the_block_list_prevents(softmax_model, tmp_path):
    dst = tmp_path / "h.onnx"
    step = convert_fp16(softmax_model, dst, block_list=[])
    assert step.params["block_list"] == [] and "Softmax" not in step.result["fp32_ops"]
    m = onnx.load(dst)
    softmax = next(n for n in m.graph.node if n.op_type == "Softmax")
    producer = {o: n for n in m.graph.node for o in n.output}[softmax.input[0]]
    assert producer.op_type == "Mul"  # the softmax now runs in fp16
