"""The Triton model repository: every config.pbtxt parses against Triton's own protobuf schema and matches
the manifest; files sit in Triton's documented layout."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from infership.runtime import Artifact, ArtifactError, InvalidInputError, Predictor
from infership.runtime.statistics import REFERENCE_KEY
from infership.serve.triton import DATA_TYPES, model_config, write_triton_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc]")


def _parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _type(name: str) -> int:
    return model_config_pb2.DataType.Value(DATA_TYPES[name])


def _check_against_manifest(cfg, manifest, *, batching: bool) -> None:
    assert cfg.max_batch_size == (8 if batching else 0)
    for got, spec in zip([*cfg.input, *cfg.output], [*manifest.inputs, *manifest.outputs], strict=True):
        assert got.name == spec.name
        assert got.data_type == _type(spec.dtype)
        want = spec.shape[1:] if batching else spec.shape
        assert list(got.dims) == [d if isinstance(d, int) else -1 for d in want]


def test_cpu_repository_layout_and_schema(tiny_artifact, tmp_path):
    repo = write_triton_repository(tiny_artifact, tmp_path / "models", threads=1)
    manifest = Artifact.load(tiny_artifact).manifest
    assert {m.variant for m in repo.models} == {"onnx-fp32", "openvino-fp32"}
    assert [v for v, _ in repo.skipped] == ["torch-fp32"] and "TorchScript" in repo.skipped[0][1]
    for model in repo.models:
        cfg = _parse(model.path / "config.pbtxt")
        assert cfg.name == model.path.name == model.name
        _check_against_manifest(cfg, manifest, batching=True)
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
        assert list(cfg.dynamic_batching.preferred_batch_size) == [8]
        assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert [w.batch_size for w in cfg.model_warmup] == [1, 8]
        assert cfg.model_warmup[0].inputs["x"].random_data
        files = sorted(p.name for p in (model.path / "1").iterdir())
        if model.backend == "onnxruntime":
            assert cfg.backend == "onnxruntime" and files == ["model.onnx"]
            assert cfg.parameters["intra_op_thread_count"].string_value == "1"
        else:
            assert cfg.backend == "openvino" and files == ["model.bin", "model.xml"]
            assert cfg.parameters["INFERENCE_NUM_THREADS"].string_value == "1"
    # The copied model is the artifact's model: it runs and gives the same outputs.
    onnx = next(m for m in repo.models if m.backend == "onnxruntime").path / "1" / "model.onnx"
    assert onnx.read_bytes() == (Path(tiny_artifact) / "model.onnx").read_bytes()


def test_gpu_config_has_tensorrt_with_the_variant_precision(tiny_artifact, tmp_path):
    repo = write_triton_repository(tiny_artifact, tmp_path / "gpu", device="gpu", instances=2)
    assert [m.variant for m in repo.models] == ["onnx-fp32"]
    assert "openvino-fp32" in dict(repo.skipped) and "CPU" in dict(repo.skipped)["openvino-fp32"]
    cfg = _parse(repo.models[0].path / "config.pbtxt")
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert cfg.instance_group[0].count == 2
    (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP32"
    manifest = Artifact.load(tiny_artifact).manifest
    for precision, mode in (("fp16", "FP16"), ("int8", "INT8")):
        v = replace(manifest.variant("onnx-fp32"), precision=precision, id=f"onnx-{precision}")
        text = model_config(manifest, v, name="m", device="gpu")
        (acc,) = text_format.Parse(
            text, model_config_pb2.ModelConfig()
        ).optimization.execution_accelerators.gpu_execution_accelerator
        assert acc.parameters["precision_mode"] == mode


def test_static_batch_model_has_no_batching(static_artifact, tmp_path):
    repo = write_triton_repository(static_artifact, tmp_path / "static", variants=["onnx-fp32"], name="cnn")
    cfg = _parse(repo.models[0].path / "config.pbtxt")
    _check_against_manifest(cfg, Artifact.load(static_artifact).manifest, batching=False)
    assert cfg.name == "cnn" and not cfg.HasField("dynamic_batching")
    assert [w.batch_size for w in cfg.model_warmup] == [1]


def test_dynamic_sequence_model(tmp_path):
    from tests.runtime.serving_models import build_token_model

    root = build_token_model(tmp_path / "tokens")
    repo = write_triton_repository(root, tmp_path / "text")
    cfg = _parse(repo.models[0].path / "config.pbtxt")
    manifest = Artifact.load(root).manifest
    _check_against_manifest(cfg, manifest, batching=True)
    assert list(cfg.input[0].dims) == [-1] and cfg.input[0].data_type == model_config_pb2.TYPE_INT64
    assert not cfg.model_warmup  # no recorded length to warm up with
    # With reference statistics the warm-up gets a length, and integer inputs get zeros.
    ref = {"inputs": {n: {"shape": [12]} for n in ("ids", "mask")}}
    text = model_config(replace(manifest, extra={REFERENCE_KEY: ref}), manifest.variants[0], name="t")
    warm = text_format.Parse(text, model_config_pb2.ModelConfig()).model_warmup
    assert list(warm[0].inputs["ids"].dims) == [12] and warm[0].inputs["ids"].zero_data


def test_refusals(tiny_artifact, tmp_path):
    out = tmp_path / "r"
    write_triton_repository(tiny_artifact, out, variants=["onnx-fp32"])
    with pytest.raises(InvalidInputError, match="exists"):
        write_triton_repository(tiny_artifact, out, variants=["onnx-fp32"])
    write_triton_repository(tiny_artifact, out, variants=["onnx-fp32"], overwrite=True)
    with pytest.raises(InvalidInputError, match="TorchScript"):
        write_triton_repository(tiny_artifact, out, variants=["torch-fp32"])
    with pytest.raises(ArtifactError, match="no variant"):
        write_triton_repository(tiny_artifact, out, variants=["nope"])
    with pytest.raises(InvalidInputError, match="device"):
        write_triton_repository(tiny_artifact, out, device="tpu")


def test_cli_writes_the_repository(tiny_artifact, tmp_path, capsys):
    from infership.cli import main

    assert (
        main(["triton-repo", str(tiny_artifact), "-o", str(tmp_path / "cli"), "--variant", "onnx-fp32"]) == 0
    )
    assert (tmp_path / "cli" / "tiny_onnx-fp32" / "config.pbtxt").is_file()
    assert "tiny_onnx-fp32" in capsys.readouterr().out
    with Predictor.load(tmp_path / "cli" / "tiny_onnx-fp32" / "1" / "model.onnx", backend="ort-cpu") as p:
        assert [s.name for s in p.inputs] == ["x"]
