"""Small models for the converter tests, built in-process (importable as ``tests.convert.models:NAME``).

Randomly initialised deep CNNs produce vanishing outputs (torchvision's MobileNetV3 gives logits ~1e-10),
which would make any relative comparison meaningless. :func:`settle_batchnorm` gives every BatchNorm the
statistics of its actual inputs, as training would, so activations keep a sensible scale.
"""

from __future__ import annotations

import torch
from torch import nn


def settle_batchnorm(model: nn.Module, shape: tuple[int, ...], *, steps: int = 3, seed: int = 0) -> nn.Module:
    """Set BatchNorm running statistics from a few random batches, then switch to eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(shape, generator=gen))
    return model.eval()


class DigitsCNN(nn.Module):
    """An MNIST-style CNN for 1×8×8 digit images (sklearn's digits), 10 classes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def digits_cnn(num_classes: int = 10) -> nn.Module:
    """Factory for ``tests.convert.models:digits_cnn`` (deterministic weights)."""
    torch.manual_seed(0)
    return settle_batchnorm(DigitsCNN(num_classes), (16, 1, 8, 8))


class TwoInTwoOut(nn.Module):
    """image [b,3,16,16] + extra [b,4] → (logits [b,3], embedding [b,6])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mix = nn.Linear(8, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, image: torch.Tensor, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = torch.relu(self.conv(image)).mean((2, 3))
        embed = torch.tanh(self.mix(torch.cat([feat, extra], dim=1)))
        return self.head(embed), embed


def two_in_two_out() -> nn.Module:
    torch.manual_seed(1)
    return TwoInTwoOut().eval()


class FullyConv(nn.Module):
    """Segmentation-style: any H×W in, per-pixel 3-class logits of the same H×W out (upsampled)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.down(x))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def fully_conv() -> nn.Module:
    torch.manual_seed(2)
    return settle_batchnorm(FullyConv(), (4, 3, 32, 32))


@torch.library.custom_op("infership_tests::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    """An operator no ONNX exporter knows (a custom op without an ONNX translation)."""
    return x.clone() * 2


@mystery.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Unexportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mystery(x) + 1


class DataDependent(nn.Module):
    """Branches on a tensor value: torch.export refuses it, the TorchScript-based exporter traces it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if bool(x.abs().sum() >= 0) else 0.0  # always 1.0, but only a value can tell
        return self.fc(x) * scale


class Drifting(nn.Module):
    """Each call scales its output differently: no export can match the eager model."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x) * float(self.calls)


class TinyClassifier(nn.Module):
    """RGB image [b,3,32,32] → 5 class logits; small enough to export in a second."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.adaptive_avg_pool2d(self.conv(x), 4).flatten(1))


def tiny_classifier(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(3)
    return settle_batchnorm(TinyClassifier(num_classes), (4, 3, 32, 32))
