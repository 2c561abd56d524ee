"""Heads that sit on a backbone's final feature map (N, C, h, w).

The classifier is the study's: global average pooling and one FC layer. The segmentation decoder
(for the Cutout and RICAP auxiliary tasks) is deliberately light, so the auxiliary task must be solved
by the shared features: a 3x3 conv + BN + ReLU on the final feature map, a 1x1 conv to
num_classes * scale^2 logits and a pixel shuffle by `scale` (4: the CIFAR ResNet/PyramidNet 8x8 map to
32x32), so every output pixel has its own logit. Why not a 1x1 conv to per-class logits and bilinear
upsampling: from 8x8 that cannot draw pixel-exact edges. Even free per-image 8x8 logits (no network)
fitted to the targets cap pixel accuracy at ~99.8% for Cutout squares and ~97% for RICAP quadrants
(keep_off_edges), below the study's 99.95% Cutout training accuracy; with a small CNN trained 300 steps
on Cutout the bilinear decoder reached 99.69% pixel accuracy, the pixel-shuffle one 99.995%.

Image sizes other than 32 (`data.image_size`, S): `scale` is the backbones' total stride (two stride-2
stages in ResNet and PyramidNet), so the shuffled map has side 4 * ceil(S / 4) >= S and its pixel
4j + r comes from feature j, whose receptive field is centred on input pixel 4j. The head therefore
keeps the top-left S x S of it: pixel-exact for every S (for S a multiple of 4 nothing is cut). A
feature map of any other size is shuffled and then bilinearly resized to `out_size`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ClassifierHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))


class SegmentationHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, out_size: int = 32, hidden: int = 64,
                 scale: int = 4):
        super().__init__()
        self.out_size = out_size
        self.scale = scale
        self.decode = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes * scale * scale, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = F.pixel_shuffle(self.decode(features), self.scale)
        size = self.out_size
        if size <= logits.shape[-2] < size + self.scale and size <= logits.shape[-1] < size + self.scale:
            return logits[..., :size, :size]  # the stride's rounding (see the module docstring)
        if logits.shape[-2:] != (size, size):
            logits = F.interpolate(logits, size=(size, size), mode="bilinear",
                                   align_corners=False)
        return logits
