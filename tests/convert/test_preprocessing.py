"""Preprocessing and labels attached at export: raw images fed to the Predictor give exactly the result of
the training transform (torchvision) applied by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from infership.convert import build_artifact, make_preprocessing, read_labels
from infership.convert.preprocessing import IMAGENET_MEAN, IMAGENET_STD, PreprocessingRequest
from infership.runtime import Task

from infership import ConversionError, Predictor, TensorSpec
from tests.convert import models

BACKENDS = ["torch", "ort-cpu", pytest.param("openvino", marks=pytest.mark.openvino)]
LABELS = ["cat", "dog", "rocket", "coffee", "person"]


def _image(name: str):
    from PIL import Image
    from skimage import data

    return Image.fromarray(getattr(data, name)())


def _training_transform():
    from torchvision import transforms as T

    # What a user trains a 32×32 classifier with; --preprocess imagenet must reproduce it.
    return T.Compose([T.Resize(37), T.CenterCrop(32), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    labels = root / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    art = build_artifact(
        models.tiny_classifier(),
        root / "cls",
        input_shapes=[(1, 3, 32, 32)],
        preprocessing="imagenet",
        labels=labels,
        fp16=False,
    )
    return art


def test_manifest_records_the_transform_and_labels(classifier):
    m = classifier.manifest
    assert m.labels == tuple(LABELS)
    pre = m.preprocessing
    assert pre.input == "x" and pre.resize == 37 and pre.crop == (32, 32)
    assert (
        pre.mean == IMAGENET_MEAN
        and pre.std == IMAGENET_STD
        and pre.channels == "RGB"
        and pre.layout == "NCHW"
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_images_match_the_training_transform(classifier, backend, tmp_path):
    img = _image("astronaut")
    manual = _training_transform()(img).numpy()[None]
    path = tmp_path / "astronaut.png"
    img.save(path)
    with Predictor.load(classifier.root, backend=backend) as p:
        want = p.predict(manual)["output"]
        for raw in (img, str(path), np.asarray(img)):
            got = p.predict(raw)["output"]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        batch = p.predict([img, _image("coffee")])["output"]
    assert batch.shape == (2, 5)
    np.testing.assert_allclose(batch[:1], want, rtol=1e-5, atol=1e-5)


def test_non_square_image_matches_the_training_transform(classifier):
    img = _image("chelsea")  # 451×300
    manual = _training_transform()(img).numpy()[None]
    with Predictor.load(classifier.root, backend="ort-cpu") as p:
        np.testing.assert_allclose(
            p.predict(img)["output"], p.predict(manual)["output"], rtol=1e-5, atol=1e-5
        )


def test_real_images_validate_the_export(tmp_path):
    art = build_artifact(
        models.tiny_classifier(),
        tmp_path / "v",
        input_shapes=[(1, 3, 32, 32)],
        preprocessing="imagenet",
        validation_data=[_image("astronaut"), _image("coffee"), np.asarray(_image("rocket"))],
        fp16=False,
        openvino=False,
    )
    val = art.manifest.variant("onnx-fp32").validation
    assert val["real_samples"] == 3 and val["real"]["passed"]
    # An image model with one [batch, 5] output is a classifier (no labels needed), and was checked as one.
    assert art.manifest.task is Task.CLASSIFICATION and val["task"] == "classification"
    assert "top1_agreement" in val


def test_presets_follow_the_input_size():
    spec = TensorSpec("x", "float32", ("batch", 3, 224, 224))
    pre = make_preprocessing("imagenet", spec)
    assert pre.resize == 256 and pre.crop == (224, 224)
    unit = make_preprocessing("unit", spec)
    assert unit.resize == (224, 224) and unit.crop is None and unit.mean == (0.0,)
    centered = make_preprocessing("centered", spec, interpolation="bicubic")
    assert centered.mean == (0.5, 0.5, 0.5) and centered.interpolation == "bicubic"
    gray = make_preprocessing(
        "unit", TensorSpec("x", "float32", ("batch", 1, 8, 8)), channels="L", invert=True
    )
    assert gray.channels == "L" and gray.invert


def test_preprocessing_that_cannot_fit_the_input_is_refused():
    spec = TensorSpec("x", "float32", ("batch", 3, 64, 64))
    with pytest.raises(ConversionError, match="64x64"):
        make_preprocessing(None, spec, resize=80, crop=(56, 56))
    with pytest.raises(ConversionError, match="1 channel"):
        make_preprocessing("unit", spec, channels="L")
    with pytest.raises(ConversionError, match="unknown preprocessing preset"):
        make_preprocessing("vgg", spec)
    with pytest.raises(ConversionError, match="give crop"):
        make_preprocessing(None, spec)
    with pytest.raises(ConversionError, match="exactly one rank-4"):
        PreprocessingRequest(preset="unit").resolve([TensorSpec("a", "float32", ("batch", 4))])


def test_labels_files_and_count_check(tmp_path):
    (tmp_path / "l.txt").write_text("a\nb\n\nc\n")
    (tmp_path / "l.json").write_text(json.dumps(["a", "b", "c"]))
    (tmp_path / "d.json").write_text(json.dumps({"2": "c", "0": "a", "1": "b"}))
    (tmp_path / "gap.json").write_text(json.dumps({"0": "a", "2": "c"}))
    for name in ("l.txt", "l.json", "d.json"):
        assert read_labels(tmp_path / name) == ("a", "b", "c")
    with pytest.raises(ConversionError, match="without gaps"):
        read_labels(tmp_path / "gap.json")
    with pytest.raises(ConversionError, match="3 labels given but output 'output' has 10 classes"):
        build_artifact(
            models.digits_cnn(),
            tmp_path / "x",
            input_shapes=[(1, 1, 8, 8)],
            labels=tmp_path / "l.txt",
            fp16=False,
            openvino=False,
            torch_program=False,
        )
