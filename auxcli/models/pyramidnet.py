"""Additive PyramidNet with basic blocks: Han et al. 2017, "Deep Pyramidal Residual Networks".

The study's Experiment 1 backbone (PyramidNet-110, alpha 270, final width 286). Facts taken from the
paper and the authors' PyTorch code (github.com/dyhan0920/PyramidNet-PyTorch, PyramidNet.py):

- stem: conv3x3(3 -> base_width) + BN, no ReLU (every block begins with its own BN);
- N = (depth - 2) / 6 blocks per stage, 3 stages, stride 2 at the first block of stages 2 and 3;
- the width grows by alpha / (3N) per block (paper eq. 3, additive); the running width is a float and
  each block's width is `round(running)` (Python 3's round, half to even), so the last block has
  round(base_width + alpha) channels;
- block (paper Fig. 6d): BN-conv3x3-BN-ReLU-conv3x3-BN, no ReLU after the addition;
- shortcut: 2x2 average pooling with stride 2 on stride-2 blocks (ceil mode, so odd maps from image
  sizes that are not multiples of 4 keep the conv branch's size), identity otherwise, with zero
  channels appended for the extra width (paper section 3, "zero-padded identity mapping");
- after the last stage: BN and ReLU; pooling and the FC are the classifier head's.

PyramidNet-110 (alpha 270) with a 100-way head has exactly 28,511,307 parameters. Init as in the
official code: conv weights normal with std sqrt(2 / (k*k*out_channels)), BN weight 1 and bias 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from auxcli.models.registry import register_backbone
from auxcli.models.depth import valid_depth

if TYPE_CHECKING:
    from auxcli.spec import ModelSpec


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def init_weights(model: nn.Module) -> None:
    """The official code's init: conv normal(0, sqrt(2 / (k*k*out_channels))), i.e. He et al. 2015 on
    fan-out; BN weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def pyramid_widths(depth: int, alpha: float, base_width: int = 16) -> list[int]:
    """Output channels of the 3N blocks in order: base_width + k * alpha / (3N), rounded per block."""
    n = (depth - 2) // 6
    add_rate = alpha / (3 * n)
    running, widths = float(base_width), []
    for _ in range(3 * n):
        running += add_rate  # accumulated as a float, as the official code does; rounded only on use
        widths.append(round(running))
    return widths


class PyramidBlock(nn.Module):
    """BN-conv-BN-ReLU-conv-BN plus the zero-padded (average-pooled on stride 2) shortcut; no final ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # the branches depend on construction-time constants only, so torch.compile sees one graph
        if self.stride > 1:
            # ceil_mode: an odd map (image sizes not a multiple of 4) keeps the conv branch's ceil(n / 2)
            # rows, its last one averaging the single row left; even maps (CIFAR's) pool exactly as before
            x = F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        return self.bn3(out) + self.shortcut(x)


class PyramidNet(nn.Module):
    """Feature extractor of the additive basic-block PyramidNet: ends after the final BN-ReLU."""

    def __init__(self, depth: int = 110, alpha: float = 270.0, base_width: int = 16):
        super().__init__()
        if not valid_depth("pyramidnet", depth):
            raise ValueError(f"PyramidNet (basic block) depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.depth, self.alpha = depth, alpha
        self.conv1 = conv3x3(3, base_width)
        self.bn1 = nn.BatchNorm2d(base_width)
        widths = pyramid_widths(depth, alpha, base_width)
        in_channels, stages = base_width, []
        for stage in range(3):
            blocks = []
            for i in range(n):
                out_channels = widths[stage * n + i]
                blocks.append(PyramidBlock(in_channels, out_channels, stride=2 if stage > 0 and i == 0 else 1))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final = nn.BatchNorm2d(in_channels)
        self.feature_width: int = in_channels
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.relu(self.bn_final(x), inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as `forward_features` (the classifier is a head, not part of the backbone)."""
        return self.forward_features(x)


@register_backbone("pyramidnet")
def pyramidnet_from_spec(spec: ModelSpec, *, image_size: int = 32) -> PyramidNet:
    if spec.depth is None or spec.alpha is None:
        raise ValueError("pyramidnet needs a depth (6n+2) and alpha (270 in the study)")
    return PyramidNet(depth=spec.depth, alpha=spec.alpha, base_width=spec.base_width)
