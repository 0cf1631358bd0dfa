"""``torchvision:NAME`` sources never touch the network: untrained backbones too, and weights are refused."""

from __future__ import annotations

import socket
import urllib.request

import pytest
import torch
from infership.convert.source import load_model_source
from infership.runtime import ConversionError


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or a URL fails the test."""

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network used: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_the_fixture_blocks_downloads(no_network):
    with pytest.raises(NetworkUsed):
        torch.hub.load_state_dict_from_url("https://example.invalid/w.pth")


def test_segmenter_builds_without_its_backbone_weights(no_network):
    src = load_model_source("torchvision:lraspp_mobilenet_v3_large", num_classes=3)
    assert src.kind == "torchvision"
    with torch.no_grad():
        out = src.model(torch.rand(1, 3, 64, 64))
    assert list(out["out"].shape) == [1, 3, 64, 64]


def test_detector_builds_without_its_backbone_weights(no_network):
    src = load_model_source("torchvision:fasterrcnn_mobilenet_v3_large_fpn", num_classes=4)
    assert src.model.roi_heads.box_predictor.cls_score.out_features == 4


def test_builder_arguments_after_a_question_mark(no_network):
    src = load_model_source("torchvision:fcn_resnet50?aux_loss=true", num_classes=2)
    assert src.model.aux_classifier is not None


@pytest.mark.parametrize(
    "spec",
    [
        "torchvision:resnet18?weights=DEFAULT",
        "torchvision:lraspp_mobilenet_v3_large?weights_backbone=IMAGENET1K_V1",
        "torchvision:resnet18?pretrained=true",
    ],
)
def test_asking_for_weights_is_refused_with_the_offline_way(no_network, spec):
    with pytest.raises(ConversionError, match="not available offline") as err:
        load_model_source(spec)
    assert "--arch torchvision:" in str(err.value)


def test_malformed_builder_arguments_are_refused():
    with pytest.raises(ConversionError, match="key=value"):
        load_model_source("torchvision:resnet18?aux_loss")


def test_segmenter_checkpoint_reads_its_classes(no_network, tmp_path):
    model = load_model_source("torchvision:lraspp_mobilenet_v3_large", num_classes=5).model
    ckpt = tmp_path / "seg.pt"
    torch.save(model.state_dict(), ckpt)
    src = load_model_source(ckpt, arch="torchvision:lraspp_mobilenet_v3_large")
    assert src.model.classifier.high_classifier.out_channels == 5
    assert "num_classes=5 read from the last layer's weight" in src.notes
