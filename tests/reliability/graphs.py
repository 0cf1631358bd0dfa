"""Small ONNX graphs written the odd ways other tools write them, built in-process with ``onnx.helper``.

Each case is a model plus the feeds to run it with; the raw runtime (ONNX Runtime, OpenVINO) is the oracle
the Predictor is held to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], object]
    feeds: dict[str, np.ndarray]
    #: Cases the Predictor refuses at load by design although a runtime runs them (with the reason).
    refused: str | None = None
    notes: str = ""
    extra_feeds: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _h():
    from onnx import TensorProto, helper, numpy_helper

    return TensorProto, helper, numpy_helper


def _vi(name: str, shape, elem=None):
    TensorProto, helper, _ = _h()
    return helper.make_tensor_value_info(name, elem if elem is not None else TensorProto.FLOAT, shape)


def _model(nodes, inputs, outputs, initializers=()):
    _, helper, _ = _h()
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _relu(in_shape, out_shape):
    _, helper, _ = _h()
    return lambda: _model(
        [helper.make_node("Relu", ["x"], ["y"])], [_vi("x", in_shape)], [_vi("y", out_shape)]
    )


def _dim_param_empty():
    m = _relu([None, 3], [None, 3])()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = ""
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = ""
    return m


def _initializer_input():
    _, helper, numpy_helper = _h()
    w = numpy_helper.from_array(np.full((1, 3), 2.0, np.float32), "w")
    return _model(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        [_vi("x", ["b", 3]), _vi("w", [1, 3])],
        [_vi("y", ["b", 3])],
        [w],
    )


def _output_is_input():
    _, helper, _ = _h()
    return _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", ["b", 3])],
        [_vi("y", ["b", 3]), _vi("x", ["b", 3])],
    )


def _zero_size_output():
    _, helper, numpy_helper = _h()
    consts = [
        numpy_helper.from_array(np.array([0], np.int64), "s"),
        numpy_helper.from_array(np.array([0], np.int64), "e"),
        numpy_helper.from_array(np.array([1], np.int64), "a"),
    ]
    nodes = [
        helper.make_node("Slice", ["x", "s", "e", "a"], ["empty"]),
        helper.make_node("Relu", ["x"], ["y"]),
    ]
    return _model(nodes, [_vi("x", ["b", 3])], [_vi("empty", ["b", 0]), _vi("y", ["b", 3])], consts)


def _duplicate_output():
    _, helper, _ = _h()
    return _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", ["b", 3])],
        [_vi("y", ["b", 3]), _vi("y", ["b", 3])],
    )


def _constant_output(batch):
    _, helper, numpy_helper = _h()
    c = numpy_helper.from_array(np.arange(5, dtype=np.float32), "c")
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Identity", ["c"], ["k"])]
    return lambda: _model(nodes, [_vi("x", [batch, 3])], [_vi("y", [batch, 3]), _vi("k", [5])], [c])


def _typed(elem_name, op="Identity"):
    TensorProto, helper, _ = _h()
    elem = getattr(TensorProto, elem_name)
    return lambda: _model(
        [helper.make_node(op, ["x"], ["y"])], [_vi("x", ["b", 2], elem)], [_vi("y", ["b", 2], elem)]
    )


def _sequence_output():
    TensorProto, helper, _ = _h()
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    return _model([helper.make_node("SequenceConstruct", ["x"], ["s"])], [_vi("x", ["b", 3])], [seq])


def _optional_input():
    TensorProto, helper, _ = _h()
    opt = helper.make_value_info(
        "o", helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
    )
    return _model(
        [helper.make_node("OptionalHasElement", ["o"], ["h"])], [opt], [_vi("h", [], TensorProto.BOOL)]
    )


def _scalar():
    return _relu([], [])()


X23 = {"x": np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, np.nan]], np.float32)}

CASES = [
    Case("dim_value -1 batch", _relu([-1, 3], [-1, 3]), X23, notes="some exporters write -1 for unknown"),
    Case("dim_value -1 everywhere", _relu([-1, -1], [-1, -1]), X23),
    Case(
        "dim_value 0 batch",
        _relu([0, 3], [0, 3]),
        X23,
        notes="runtimes read 0 as a fixed 0",
        extra_feeds={"empty": {"x": np.zeros((0, 3), np.float32)}},
    ),
    Case("dim_param ?", _relu(["?", 3], ["?", 3]), X23),
    Case("dim_param empty", _dim_param_empty, X23),
    Case("unnamed dim", _relu([None, 3], [None, 3]), X23),
    Case("missing input shape", _relu(None, [None, 3]), X23),
    Case("missing output shape", _relu([None, 3], None), X23),
    Case(
        "missing shapes",
        _relu(None, None),
        X23,
        extra_feeds={"rank 3": {"x": np.ones((2, 2, 2), np.float32)}},
    ),
    Case("scalar input", _scalar, {"x": np.array(-1.5, np.float32)}),
    Case("initializer-backed input", _initializer_input, X23),
    Case("output that is also an input", _output_is_input, X23),
    Case("zero-size output", _zero_size_output, X23),
    Case("output listed twice", _duplicate_output, X23),
    Case("constant output, dynamic batch", _constant_output("b"), X23),
    Case("constant output, static batch", _constant_output(2), X23),
    Case("bool tensors", _typed("BOOL", "Not"), {"x": np.array([[True, False]])}),
    Case("float16 tensors", _typed("FLOAT16", "Relu"), {"x": np.array([[1.0, -1.0]], np.float16)}),
    Case("uint64 tensors", _typed("UINT64"), {"x": np.array([[1, 2**63]], np.uint64)}),
    Case("string tensors", _typed("STRING"), {"x": np.array([["a", "b"]], dtype=object)}),
    Case(
        "bfloat16 tensors",
        _typed("BFLOAT16"),
        {"x": np.ones((1, 2), np.float32)},
        refused="no numpy equivalent",
    ),
    Case("sequence output", _sequence_output, X23, refused="not a tensor"),
    Case("optional input", _optional_input, {"o": np.ones(2, np.float32)}, refused="not a tensor"),
]
