"""Wide ResNet: Zagoruyko & Komodakis 2016, "Wide Residual Networks" (WRN-d-k).

The backbone on which Cutout (DeVries & Taylor 2017) and RICAP (Takahashi et al. 2018) publish their
CIFAR-100 numbers (WRN-28-10, dropout 0.3). Facts from the paper and the authors' code
(szagoruyko/wide-residual-networks, pytorch/main.py; the same network as the Cutout and RICAP code):

- depth 6n+4 (the paper's convention, n = (depth - 4) / 6): a 3x3 stem conv (16 channels), three
  stages of n pre-activation basic blocks with 16k, 32k, 64k channels on 32x32, 16x16 and 8x8 maps
  (stride 2 at the first block of stages 2 and 3), and the classifier;
- block (paper Fig. 1c, "B(3,3)"): BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3, added to the shortcut;
- shortcut: identity when the width and stride stay, else a 1x1 conv (stride 1 or 2) applied to the
  block's *pre-activated* input (BN-ReLU shared with the first conv), as in the official code;
- after the last stage: BN and ReLU; pooling and the FC are the classifier head's.

WRN-28-10 with a 100-way head has 36,536,884 parameters (36.5M, the paper's Table 1 count).
The stem width is `base_width` (16 in the paper); stages are base_width * (1, 2, 4) * k.
Init: convs He et al. 2015 normal on fan-out, as the Cutout code (after xternalz/WideResNet-pytorch) and
the other CIFAR backbones here (the authors' and RICAP's code use fan-in); BN weight 1 and bias 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from auxcli.models.registry import register_backbone
from auxcli.models import resnet  # the module, not its names: importing resnet first imports this file mid-way
from auxcli.models.depth import allowed_depths, valid_depth

if TYPE_CHECKING:
    from auxcli.spec import ModelSpec


class WideBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-dropout-conv plus the identity or 1x1-projection shortcut; no final activation."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = resnet.conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = resnet.conv3x3(out_channels, out_channels)
        self.projection = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                           if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out), inplace=True)))
        # the projection reads the pre-activated input, the identity the raw one (official code)
        return out + (x if self.projection is None else self._project(activated))

    def _project(self, activated: torch.Tensor) -> torch.Tensor:
        conv = self.projection
        assert conv is not None
        stride = conv.stride[0]
        if stride > 1 and conv.in_channels < FEW_CHANNELS:
            # The same sum on the pixels the stride keeps: torch 2.14.1's one-thread CPU backward of a strided 1x1 conv
            # with fewer than 8 input channels in channels_last corrupts the heap ("free(): invalid next
            # size", SIGABRT; in_channels 1-7 crash, 8 and 12 do not). Outputs are identical (difference 0.0).
            return F.conv2d(activated[:, :, ::stride, ::stride], conv.weight)
        return conv(activated)


FEW_CHANNELS = 8  # below this, a strided 1x1 projection is computed as subsample + 1x1 conv (WideBlock._project)


class WideResNet(nn.Module):
    """Feature extractor of WRN-depth-widen_factor: `forward_features` ends after the final BN-ReLU."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0, base_width: int = 16):
        super().__init__()
        if not valid_depth("wrn", depth):
            raise ValueError(f"Wide ResNet depth must be {allowed_depths('wrn')}, got {depth}")
        n = (depth - 4) // 6
        self.depth, self.widen_factor = depth, widen_factor
        self.conv1 = resnet.conv3x3(3, base_width)
        in_channels, stages = base_width, []
        for stage, width in enumerate(base_width * widen_factor * m for m in (1, 2, 4)):
            blocks = []
            for i in range(n):
                blocks.append(WideBlock(in_channels, width, stride=2 if stage > 0 and i == 0 else 1,
                                        dropout=dropout))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final = nn.BatchNorm2d(in_channels)
        self.feature_width: int = in_channels
        resnet.init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return F.relu(self.bn_final(x), inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as `forward_features` (the classifier is a head, not part of the backbone)."""
        return self.forward_features(x)


@register_backbone("wrn")
def wrn_from_spec(spec: ModelSpec, *, image_size: int = 32) -> WideResNet:
    """WRN-depth-k; any `image_size` (global pooling at the end), as every registered factory takes it."""
    if spec.depth is None or spec.widen_factor is None:
        raise ValueError("wrn needs a depth (6n+4) and widen_factor (10 for WRN-28-10)")
    return WideResNet(depth=spec.depth, widen_factor=spec.widen_factor, dropout=spec.dropout,
                      base_width=spec.base_width)
