"""A finished run's weights as a plain image classifier, for MLflow's `pytorch` flavour.

`final.pt` holds what transfers need (extractor, every head, the spec); a user of the MLflow registry wants
one module that maps images to class scores. `image_classifier` rebuilds that module from `final.pt`:
images as float32 (N, 3, H, W) in [0, 1] -> the training set's normalisation -> backbone -> the main head's
logits (N, classes). Auxiliary heads are left out. There is none to export when the run has no main head
(`task.labels: none`), when its main head is SLA's joint (class, rotation) head, or for a `final.pt`
written before the normalisation was recorded in it.

MLflow saves the module with `torch.export` (its "pt2" format), so loading it needs torch only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from auxcli.models.heads import ClassifierHead
from auxcli.models.registry import create_backbone


class ImageClassifier(nn.Module):
    """float32 images in [0, 1], (N, 3, H, W) -> main-head logits (N, classes)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: torch.Tensor, std: torch.Tensor,
                 image_size: int = 32):
        super().__init__()
        self.image_size = image_size  # the side of the square images it was trained on
        self.backbone = backbone
        self.head = head
        self.register_buffer("mean", mean.float().reshape(1, -1, 1, 1))
        self.register_buffer("std", std.float().reshape(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features((images - self.mean) / self.std))


def image_classifier(final: dict[str, Any]) -> ImageClassifier | None:
    """The classifier of a loaded `final.pt` (`auxcli.train.checkpoint.FINAL_FORMAT`), in eval mode on the
    CPU; None when the run has nothing to export as one (see the module docstring)."""
    from auxcli.spec import ModelSpec

    spec = final["spec"]
    main = final["heads"].get("main")
    joint = (spec.get("task") or {}).get("joint")
    if main is None or joint == "sla" or "normalize" not in final:
        return None
    image_size = (spec.get("data") or {}).get("image_size", 32)
    backbone = create_backbone(ModelSpec.model_validate(spec["model"]), image_size=image_size)
    backbone.load_state_dict(final["backbone"])
    head = ClassifierHead(backbone.feature_width, main["fc.weight"].shape[0])
    head.load_state_dict(main)
    normalize = final["normalize"]
    return ImageClassifier(backbone, head, normalize["mean"], normalize["std"], image_size).eval()
