"""A backbone (shared feature extractor) with named heads: the study's Figure 1.

Every head reads the same final feature map, so auxiliary gradients flow into the shared extractor
while the parameters of the main classifier stay exactly those of the plain network.
"""

from __future__ import annotations

import torch
from torch import nn


class Network(nn.Module):
    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone.forward_features(images)
        return {name: head(features) for name, head in self.heads.items()}
