"""The study's raw-pixel baseline (Table 2, "a single FC layer on raw pixels").

The backbone has no parameters: it hands the normalised pixels of a 3x32x32 image to the heads as a
(N, 3072, 1, 1) feature map, so the classifier head's global pooling is the identity and its FC layer
is the single layer of the baseline (3072 * 100 + 100 = 307,300 parameters for CIFAR-100). Its width is
3 * S * S for S x S images (`data.image_size`), the only backbone whose width depends on the size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from auxcli.models.registry import register_backbone

if TYPE_CHECKING:
    from auxcli.spec import ModelSpec


class RawPixels(nn.Module):
    """Flatten the (already normalised) image to a 1x1 feature map with C*H*W channels."""

    def __init__(self, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.feature_width: int = in_channels * image_size * image_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # flatten follows the logical (C, H, W) order, so channels_last input gives the same features
        return torch.flatten(x, 1)[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as `forward_features`."""
        return self.forward_features(x)


@register_backbone("linear")
def linear_from_spec(spec: ModelSpec, *, image_size: int = 32) -> RawPixels:
    return RawPixels(image_size=image_size)
