"""CIFAR ResNet: He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2.

The study's Experiment 2 backbone (ResNet-110, basic blocks). Depth 6n+2: a 3x3 stem conv, three stages
of n basic blocks (2 convs each) with base_width, 2*base_width and 4*base_width channels (16/32/64 in the
paper) on 32x32, 16x16 and 8x8 maps, and the classifier FC, which lives in `heads.ClassifierHead`.

Blocks are post-activation (conv-BN-ReLU-conv-BN, add, ReLU). Shortcuts are the paper's option A
("identity shortcuts in all cases ... exactly the same number of parameters as the plain counterparts"):
stride-2 subsampling plus zero channels, half of them before the identity channels and half after, as in
the widely used reference CIFAR ResNet (akamaster/pytorch_resnet_cifar10, resnet.py, LambdaLayer:
`F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))`), so its published checkpoints load
into this network and give the same outputs. (fb.resnet.torch appends all zeros after the identity;
auxcli did so before: weights trained that way do not transfer.) So the backbone holds depth-1 convs and
their BNs, nothing else: ResNet-110 with a 100-way head has exactly 1,733,812 parameters.

Init: convs normal with std sqrt(2 / (k*k*out_channels)) (He et al. 2015; fb.resnet.torch's
`MSRinit`, torchvision's kaiming_normal_ with mode="fan_out"), BN weight 1 and bias 0.
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
    """3x3 conv, padding 1, no bias (the BN that follows has one)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the parameter-free option-A shortcut (zeros padded on both sides), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # the branches depend on construction-time constants only, so torch.compile sees one graph
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            before = self.extra_channels // 2  # planes // 4 when the width doubles
            x = F.pad(x, (0, 0, 0, 0, before, self.extra_channels - before))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResNet(nn.Module):
    """Feature extractor of the CIFAR ResNet: `forward_features` ends after the last block's ReLU."""

    def __init__(self, depth: int = 110, base_width: int = 16):
        super().__init__()
        if not valid_depth("resnet", depth):
            raise ValueError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ..., 110), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = conv3x3(3, base_width)
        self.bn1 = nn.BatchNorm2d(base_width)
        in_channels, stages = base_width, []
        for stage, width in enumerate((base_width, 2 * base_width, 4 * base_width)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_channels, width, stride=2 if stage > 0 and i == 0 else 1))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.feature_width: int = in_channels
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as `forward_features` (the classifier is a head, not part of the backbone)."""
        return self.forward_features(x)


def init_weights(model: nn.Module) -> None:
    """He et al. 2015 normal init on fan-out for convs (fb.resnet.torch), BN affine to identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_backbone("resnet")
def resnet_from_spec(spec: ModelSpec, *, image_size: int = 32) -> ResNet:
    if spec.depth is None:
        raise ValueError("resnet needs a depth (6n+2)")
    return ResNet(depth=spec.depth, base_width=spec.base_width)
