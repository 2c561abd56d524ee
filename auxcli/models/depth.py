"""The depth rule of the CIFAR ResNet and the basic-block PyramidNet, shared by the spec and the models.

Torch- and pydantic-free, so that the models (and `auxcli.perf`) import without pydantic.
"""

from __future__ import annotations


def valid_depth(backbone: str, depth: int) -> bool:
    """CIFAR ResNet (He et al. 2016) and basic-block PyramidNet (Han et al. 2017): 3 stages of n blocks,
    2 convs each, plus the stem conv and the classifier: depth = 6n + 2. Wide ResNet (Zagoruyko &
    Komodakis 2016) counts its 1x1 projection shortcuts of stages 2 and 3 too: depth = 6n + 4."""
    if backbone == "wrn":
        return depth >= 10 and (depth - 4) % 6 == 0
    return depth >= 8 and (depth - 2) % 6 == 0


def allowed_depths(backbone: str) -> str:
    if backbone == "wrn":
        return "6n+4 with n >= 1 (10, 16, 22, 28, ...)"
    return "6n+2 with n >= 1 (8, 14, 20, ..., 110)"
