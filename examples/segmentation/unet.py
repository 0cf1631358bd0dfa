"""A small U-Net (torchvision has none): an encoder of strided stages, a decoder that upsamples and joins
the encoder's features at each scale (the skip connections), and a 1×1 head giving class scores per pixel.

It is an ordinary ``nn.Module`` returning ``[batch, classes, H, W]``, so it exports like any module::

    infership export examples/segmentation/unet.py:build_unet --num-classes 11 \\
        --input-shape 1x3x96x96 --preprocess unit --task segmentation -o runs/segmentation/unet
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` downsamplings; widths ``base, 2·base, 4·base…``.

    Args:
        num_classes: Classes scored per pixel (background included).
        base: Channels of the first stage.
        depth: Downsamplings (the input's sides must be divisible by ``2**depth``... or are resized back).
    """

    def __init__(self, num_classes: int = 11, *, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.stem = _block(3, widths[0])
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for stage in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = stage(torch.cat([h, skip], 1))
        return self.head(h)


def build_unet(num_classes: int = 11) -> UNet:
    """The factory ``infership export`` calls (``unet.py:build_unet``)."""
    return UNet(num_classes)
