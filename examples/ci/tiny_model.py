"""A tiny image classifier for checking the CI recipes (examples/ci/check.sh): ``build()`` returns it
untrained with fixed weights, so every export of it is the same model."""

from __future__ import annotations


def build():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
