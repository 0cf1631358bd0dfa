"""load_model_source: every form a user's model comes in, and safe checkpoint loading."""

from __future__ import annotations

import pytest
import torch
from infership.convert.source import load_model_source
from infership.runtime import ConversionError

from tests.convert.models import DigitsCNN, digits_cnn


def _same_outputs(a, b, shape=(2, 1, 8, 8)) -> bool:
    x = torch.randn(shape)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_module_object_in_eval_mode_with_forward_names():
    model = DigitsCNN().train()
    src = load_model_source(model)
    assert src.model is model and not model.training
    assert src.kind == "module" and src.input_names == ("x",)
    assert src.step.name == "load" and src.step.result["kind"] == "module"


def test_torchvision_name_builds_without_weights():
    src = load_model_source("torchvision:mobilenet_v3_small", num_classes=7)
    assert src.kind == "torchvision"
    assert src.model.classifier[-1].out_features == 7
    assert src.step.params == {"source": "torchvision:mobilenet_v3_small", "num_classes": 7}


def test_unknown_torchvision_name_is_a_conversion_error():
    with pytest.raises(ConversionError, match="no model named 'resnet_nope'"):
        load_model_source("torchvision:resnet_nope")


def test_factory_by_module_and_by_file(tmp_path):
    src = load_model_source("tests.convert.models:digits_cnn", num_classes=4)
    assert src.kind == "factory" and src.model.classifier[-1].out_features == 4
    script = tmp_path / "net.py"
    script.write_text("import torch\n\ndef build():\n    return torch.nn.Linear(3, 2)\n")
    src = load_model_source(f"{script}:build")
    assert isinstance(src.model, torch.nn.Linear)
    with pytest.raises(ConversionError, match="no attribute 'nope'"):
        load_model_source(f"{script}:nope")


def test_state_dict_checkpoints_with_arch(tmp_path):
    model = digits_cnn(num_classes=5)
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    src = load_model_source(plain, arch="tests.convert.models:DigitsCNN", num_classes=5)
    assert src.kind == "checkpoint" and _same_outputs(src.model, model)

    # The usual training-loop checkpoint: nested under a key, saved from DataParallel ("module." prefix).
    nested = tmp_path / "nested.pth"
    torch.save(
        {"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, nested
    )
    src = load_model_source(nested, arch="tests.convert.models:DigitsCNN", num_classes=5)
    assert _same_outputs(src.model, model)
    assert "stripped key prefix 'module.'" in src.step.result["notes"]


def test_torchvision_checkpoint_reads_num_classes_from_the_head(tmp_path):
    model = load_model_source("torchvision:resnet18", num_classes=3).model
    ckpt = tmp_path / "r18.pt"
    torch.save(model.state_dict(), ckpt)
    src = load_model_source(ckpt, arch="torchvision:resnet18")
    assert src.model.fc.out_features == 3
    assert any("num_classes=3" in n for n in src.notes)


def test_state_dict_errors_say_what_is_missing(tmp_path):
    ckpt = tmp_path / "sd.pt"
    torch.save(digits_cnn().state_dict(), ckpt)
    with pytest.raises(ConversionError, match="--arch"):
        load_model_source(ckpt)
    with pytest.raises(ConversionError, match="does not fit torchvision:resnet18"):
        load_model_source(ckpt, arch="torchvision:resnet18", num_classes=10)
    odd = tmp_path / "odd.pt"
    torch.save({"weights": [1, 2, 3]}, odd)
    with pytest.raises(ConversionError, match="top-level keys are: weights"):
        load_model_source(odd, arch="tests.convert.models:DigitsCNN")


def test_pickled_module_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(digits_cnn(), path)
    with pytest.raises(ConversionError) as info:
        load_model_source(path)
    msg = str(info.value)
    assert "--allow-pickle" in msg and "runs code" in msg and "DigitsCNN" in msg
    src = load_model_source(path, allow_pickle=True)
    assert isinstance(src.model, DigitsCNN)
    assert "loaded with allow_pickle=True" in src.step.result["notes"]


def test_torchscript_and_torch_export_files(tmp_path):
    model = digits_cnn()
    x = torch.randn(2, 1, 8, 8)
    ts = tmp_path / "model.ts"
    torch.jit.trace(model, (x,)).save(str(ts))
    src = load_model_source(ts)
    assert src.kind == "torchscript" and src.file == ts and _same_outputs(src.model, model)

    pt2 = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(pt2))
    src = load_model_source(pt2)
    assert src.kind == "torch-export" and src.program is not None and _same_outputs(src.model, model)


def test_bad_sources():
    with pytest.raises(ConversionError, match="expected an existing file"):
        load_model_source("no_such_file.pt")
    with pytest.raises(ConversionError, match="got int"):
        load_model_source(42)
    with pytest.raises(ConversionError, match="only used with a checkpoint"):
        load_model_source("torchvision:resnet18", arch="torchvision:resnet18")
