"""OpenVINO int8 through NNCF: IR written, ignored scope mapped from ONNX node names and validated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from infership.calibration import from_numpy
from infership.convert.int8.openvino import (
    NncfQuantConfig,
    ov_ops_for_onnx_nodes,
    quantize_openvino,
    read_onnx,
)
from infership.runtime import Artifact, InvalidInputError

pytestmark = pytest.mark.openvino


@pytest.fixture(scope="module")
def source(tiny_artifact: Path):
    art = Artifact.load(tiny_artifact)
    x = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    return art.path_of(art.manifest.variant("onnx-fp32").files[0]), from_numpy(x).bind(art.manifest.inputs)


def _fake_quantizes(xml: Path) -> int:
    import openvino as ov

    return sum(
        1 for op in ov.Core().read_model(str(xml)).get_ordered_ops() if op.get_type_name() == "FakeQuantize"
    )


def test_ir_is_written_and_runs(source, tmp_path):
    import openvino as ov

    onnx_path, cset = source
    step = quantize_openvino(onnx_path, cset, NncfQuantConfig.cpu(), tmp_path / "ov" / "model.xml")
    assert (tmp_path / "ov" / "model.bin").is_file()
    assert step.result["fake_quantize_nodes"] == _fake_quantizes(tmp_path / "ov" / "model.xml") > 0
    assert step.params["preset"] == "performance" and step.params["subset_size"] == 32
    out = ov.Core().compile_model(str(tmp_path / "ov" / "model.xml"), "CPU")(next(iter(cset)))[0]
    assert out.shape == (16, 5) and np.isfinite(out).all()


def test_onnx_node_names_map_to_openvino_ops_and_are_ignored(source, tmp_path, capfd):
    onnx_path, cset = source
    ops = ov_ops_for_onnx_nodes(read_onnx(onnx_path), ["/fc/Gemm"])
    assert ops and all(o == "/fc/Gemm" or o.startswith("/fc/Gemm/") for o in ops)
    base = quantize_openvino(onnx_path, cset, NncfQuantConfig.cpu(), tmp_path / "a" / "model.xml")
    cfg = NncfQuantConfig.cpu().excluding(nodes=["/fc/Gemm"])
    ignored = quantize_openvino(onnx_path, cset, cfg, tmp_path / "b" / "model.xml")
    assert ignored.params["ignored_ops"] == ops
    assert ignored.result["fake_quantize_nodes"] < base.result["fake_quantize_nodes"]
    # NNCF's INFO lines about the ignored scope (its own handler, on the process's stdout) stay out of the
    # caller's output unless the application set NNCF's log level itself
    assert "INFO:nncf" not in capfd.readouterr().out


def test_unknown_ignored_node_is_refused(source, tmp_path):
    onnx_path, cset = source
    with pytest.raises(InvalidInputError, match="no operation in the OpenVINO model"):
        quantize_openvino(onnx_path, cset, NncfQuantConfig.cpu(ignored_nodes=("/nope",)), tmp_path / "m.xml")


def test_range_option_reaches_nncf(source, tmp_path):
    import openvino as ov

    onnx_path, cset = source
    x = next(iter(cset))
    outs = []
    for rng in ("default", "minmax"):
        xml = tmp_path / rng / "model.xml"
        quantize_openvino(onnx_path, cset, NncfQuantConfig.cpu(activation_range=rng), xml)
        outs.append(ov.Core().compile_model(str(xml), "CPU")(x)[0])
    assert not np.array_equal(outs[0], outs[1])


def test_the_converted_graph_is_quantized_when_asked(source, tmp_path):
    """``graph="converted"`` quantizes what ``openvino.convert_model`` makes: the shape subgraph the ONNX
    frontend writes for the flatten is folded away, and a node of the ONNX model is still ignored by name."""
    import openvino as ov

    onnx_path, cset = source

    def types(model) -> set[str]:
        return {op.get_type_name() for op in model.get_ordered_ops()}

    assert "ShapeOf" in types(read_onnx(onnx_path)) and "ShapeOf" not in types(
        read_onnx(onnx_path, "converted")
    )
    xml = {g: tmp_path / g / "model.xml" for g in ("onnx", "converted")}
    steps = {g: quantize_openvino(onnx_path, cset, NncfQuantConfig.cpu(graph=g), xml[g]) for g in xml}
    assert steps["converted"].params["graph"] == "converted" and steps["onnx"].params["graph"] == "onnx"
    assert "ShapeOf" not in types(ov.Core().read_model(str(xml["converted"])))
    x = next(iter(cset))
    a, b = (ov.Core().compile_model(str(xml[g]), "CPU")(x)[0] for g in ("onnx", "converted"))
    assert a.shape == b.shape == (16, 5) and np.isfinite(b).all()
    cfg = NncfQuantConfig.cpu(graph="converted").excluding(nodes=["/fc/Gemm"])
    ignored = quantize_openvino(onnx_path, cset, cfg, tmp_path / "c" / "model.xml")
    assert (
        ignored.params["ignored_ops"]
        and ignored.result["fake_quantize_nodes"] < (steps["converted"].result["fake_quantize_nodes"])
    )


def test_an_unknown_graph_is_refused():
    with pytest.raises(InvalidInputError, match="graph must be one of onnx, converted, got 'ir'"):
        NncfQuantConfig.cpu(graph="ir")


def test_presets():
    assert NncfQuantConfig.accurate().preset.value == "mixed"
    assert NncfQuantConfig.transformer_model().transformer
    with pytest.raises(InvalidInputError, match="target_device"):
        NncfQuantConfig(target_device="TPU")
