"""Heads that sit on a backbone's final feature map (N, C, h, w).

The classifier is the study's: global average pooling and one FC layer. The segmentation decoder
(for the Cutout and RICAP auxiliary tasks) is deliberately light, so the auxiliary task must be solved
by the shared features: a 3x3 conv + BN + ReLU on the final feature map, a 1x1 conv to per-class
logits, and bilinear upsampling to the input's 32x32 resolution.
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
    def __init__(self, in_channels: int, num_classes: int, out_size: int = 32, hidden: int = 64):
        super().__init__()
        self.out_size = out_size
        self.decode = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.decode(features)
        return F.interpolate(logits, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
