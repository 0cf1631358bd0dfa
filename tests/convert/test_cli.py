"""``infership export`` end to end, in-process: exit codes, one-line errors, the artifact it writes."""

from __future__ import annotations

import pytest
import torch
from infership.runtime import Task

from infership import Artifact
from infership.cli import main
from tests.convert import models


def _export(*args: str) -> int:
    return main(["export", *args])


def test_export_factory_with_preprocessing_labels_then_predict_an_image(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\ne\n")
    out = tmp_path / "cls"
    rc = _export(
        "tests.convert.models:tiny_classifier",
        "-o",
        str(out),
        "--input-shape",
        "1x3x32x32",
        "--preprocess",
        "imagenet",
        "--labels",
        str(labels),
        "--no-fp16",
        "--no-openvino",
    )
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "onnx-fp32" in printed and "torch-fp32" in printed and "x float32[batch, 3, 32, 32]" in printed
    m = Artifact.load(out).manifest
    assert m.labels == ("a", "b", "c", "d", "e") and m.preprocessing.crop == (32, 32)
    assert m.task is Task.CLASSIFICATION and "task: classification" in printed
    assert m.variant("onnx-fp32").validation["top1_agreement"] == 1.0

    image = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(image)
    assert main(["predict", str(out), str(image), "--backend", "ort-cpu", "--top", "2"]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # the console may wrap long paths
    assert "coffee.png" in printed and sum(f"{c} (" in printed for c in "abcde") == 2

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "steps of onnx-fp32" in info and "exporter=dynamo" in info


def test_state_dict_with_arch_and_extra_options(tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": models.digits_cnn(num_classes=4).state_dict()}, ckpt)
    out = tmp_path / "d"
    rc = _export(
        str(ckpt),
        "--arch",
        "tests.convert.models:DigitsCNN",
        "--num-classes",
        "4",
        "-o",
        str(out),
        "--input-shape",
        "2x1x8x8",
        "--static-batch",
        "--output-name",
        "logits",
        "--simplifier",
        "onnxsim",
        "--exporter",
        "torchscript",
        "--opset",
        "17",
        "--no-fp16",
        "--no-openvino",
        "--samples",
        "2",
    )
    assert rc == 0, capsys.readouterr().err
    m = Artifact.load(out).manifest
    assert (
        m.inputs[0].shape == (2, 1, 8, 8) and m.outputs[0].name == "logits" and m.outputs[0].shape == (2, 4)
    )
    steps = {s.name: s for s in m.variant("onnx-fp32").steps}
    assert steps["export"].result["exporter"] == "torchscript" and steps["export"].result["opset"] == 17
    assert steps["simplify"].result["tool"] == "onnxsim"


def test_pickled_checkpoint_is_refused_with_one_line(tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(models.digits_cnn(), path)
    rc = _export(str(path), "-o", str(tmp_path / "x"), "--input-shape", "1x1x8x8")
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith("error:") and "--allow-pickle" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()

    rc = _export(
        str(path),
        "-o",
        str(tmp_path / "y"),
        "--input-shape",
        "1x1x8x8",
        "--allow-pickle",
        "--no-fp16",
        "--no-openvino",
        "--no-torch",
        "--samples",
        "1",
    )
    assert rc == 0, capsys.readouterr().err
    assert Artifact.load(tmp_path / "y").manifest.extra["source_kind"] == "checkpoint"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-shape", "1xAx8x8"], "--input-shape '1xAx8x8': expected positive integers"),
        (["--input-shape", "1x1x8x8", "--dynamic-axis", "x-2"], "INPUT:AXIS"),
        (["--input-shape", "1x1x8x8", "--dynamic-axis", "nope:2"], "inputs are ['x']"),
        (["--input-shape", "1x1x8x8", "--crop", "8xA"], "--crop '8xA': expected N or HxW"),
        (["--input-shape", "1x1x8x8", "--resize", "big"], "--resize 'big': expected N or HxW"),
        (["--input-shape", "1x1x8x8", "--validate-with", "x.npy", "cat.jpg"], "need preprocessing"),
    ],
)
def test_bad_arguments_exit_1_with_a_reason(tmp_path, capsys, args, message):
    rc = _export("tests.convert.models:digits_cnn", "-o", str(tmp_path / "z"), *args)
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err


def test_unexportable_model_fails_cleanly(tmp_path, capsys):
    rc = _export("tests.convert.models:Unexportable", "-o", str(tmp_path / "u"), "--input-shape", "2x4")
    err = capsys.readouterr().err
    assert rc == 1 and "could not export the model to ONNX" in err and "Traceback" not in err


def test_task_flag_overrides_the_inferred_task(tmp_path, capsys):
    out = tmp_path / "t"
    rc = _export(
        "tests.convert.models:tiny_classifier",
        "-o",
        str(out),
        "--input-shape",
        "1x3x32x32",
        "--preprocess",
        "imagenet",
        "--task",
        "tensor",
        "--no-fp16",
        "--no-openvino",
        "--no-torch",
        "--samples",
        "1",
    )
    assert rc == 0, capsys.readouterr().err
    m = Artifact.load(out).manifest
    # An image model with one [batch, 5] output would be inferred a classifier; judged element-wise as asked.
    assert m.task is Task.TENSOR and m.preprocessing is not None
    val = m.variant("onnx-fp32").validation
    assert val["passed"] and val["task"] == "tensor" and "top1_agreement" not in val


def test_bad_task_names_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _export(
            "tests.convert.models:tiny_classifier",
            "-o",
            str(tmp_path / "b"),
            "--input-shape",
            "1x3x32x32",
            "--task",
            "pose-estimation",
        )
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--task" in err and "tensor" in err and "classification" in err
    assert not (tmp_path / "b").exists()


def test_help_lists_the_tasks(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "tensor|classification|embedding" in out and "feature-extraction" in out


def _example_commands(text: str) -> list[list[str]]:
    """The ``infership export|quantize ...`` command lines in ``text`` (continuations joined, comments cut)."""
    import shlex

    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if current:
            current += " " + line.rstrip("\\").strip()
        elif line.startswith(("infership export ", "infership quantize ")):
            current = line.rstrip("\\").strip()
        if current and not line.endswith("\\"):
            lines.append(shlex.split(current.split("  #")[0])[1:])
            current = ""
    return lines


def test_every_example_command_in_the_help_and_docs_parses():
    from pathlib import Path

    from infership.calibration import load_callable, split_callable
    from infership.convert.cli import _EXAMPLES as EXPORT_EXAMPLES
    from infership.convert.int8.cli import _EXAMPLES as QUANTIZE_EXAMPLES

    from infership.cli import build_parser

    docs = Path(__file__).resolve().parents[2] / "docs"
    sources = {
        "export --help": EXPORT_EXAMPLES,
        "quantize --help": QUANTIZE_EXAMPLES,
        "docs/converters.md": (docs / "converters.md").read_text(),
        "docs/int8.md": (docs / "int8.md").read_text(),
    }
    parser = build_parser()
    seen, functions = {}, 0
    for where, text in sources.items():
        commands = _example_commands(text)
        seen[where] = len(commands)
        for argv in commands:
            try:
                parser.parse_args(argv)
            except SystemExit:  # pragma: no cover - the failure message names the command
                pytest.fail(f"{where}: example does not parse: infership {' '.join(argv)}")
            # The repository's own FILE.py:FUNCTION examples name functions that exist.
            for token in argv:
                parts = split_callable(token)
                if parts and (docs.parent / parts[0]).is_file():
                    load_callable(f"{docs.parent / parts[0]}:{parts[1]}")
                    functions += 1
    assert seen == {"export --help": 7, "quantize --help": 5, "docs/converters.md": 1, "docs/int8.md": 4}
    assert functions == 10  # data.py:train, data.py:test (twice) and model.py:build_model, in help and docs
