"""The backbone registry (timm's `@register_model` pattern) and the `auxcli models` table.

A backbone module decorates a factory `(spec: ModelSpec, *, image_size: int = 32) -> nn.Module` with
`@register_backbone(name)` (convolutional backbones accept any size, their classifier pools globally;
the size matters only where the width depends on it, as for the raw-pixel baseline);
importing this module imports the built-in ones, so `BACKBONES` is always complete. Every backbone has
`feature_width: int` and `forward_features(x) -> (N, feature_width, h, w)`, the final feature map after
the final activation and before pooling; classifiers and auxiliary modules are heads (`heads.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from auxcli.models.heads import ClassifierHead
from auxcli.models.network import Network

if TYPE_CHECKING:  # the models import without pydantic (auxcli.perf runs where it is missing)
    from auxcli.spec import ModelSpec

BackboneFactory = Callable[..., nn.Module]  # (spec: ModelSpec, *, image_size: int) -> nn.Module
BACKBONES: dict[str, BackboneFactory] = {}

# What `auxcli models` lists without filters: the study's networks, then small ones for quick runs.
CATALOGUE: tuple[dict[str, Any], ...] = (
    {"backbone": "resnet", "depth": 110, "alpha": None},  # Experiment 2 (Tables 4 and 5)
    {"backbone": "pyramidnet", "depth": 110, "alpha": 270.0},  # Experiment 1 (Tables 1 to 3)
    {"backbone": "linear", "depth": None, "alpha": None},  # Table 2, "a single FC layer on raw pixels"
    {"backbone": "resnet", "depth": 20, "alpha": None},  # He et al. 2016, Table 6's smallest
    {"backbone": "resnet", "depth": 8, "alpha": None},  # the smallest 6n+2, for smoke runs
    {"backbone": "wrn", "depth": 28, "alpha": None, "widen_factor": 10},  # Cutout's and RICAP's WRN-28-10
)


class UnknownBackboneError(KeyError):
    """A backbone name nobody registered (a KeyError whose message prints without quotes)."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Register `factory(spec, *, image_size) -> nn.Module` under `name` (the spec's `model.backbone`)."""

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES and BACKBONES[name] is not factory:
            raise ValueError(f"backbone {name!r} is already registered by {BACKBONES[name].__module__}")
        BACKBONES[name] = factory
        return factory

    return decorate


def create_backbone(spec: ModelSpec, *, image_size: int = 32) -> nn.Module:
    """The backbone named by `spec.backbone` for `image_size`-pixel square images (`data.image_size`);
    `UnknownBackboneError` (a KeyError) for unregistered names."""
    factory = BACKBONES.get(spec.backbone)
    if factory is None:
        raise UnknownBackboneError(
            f"unknown backbone {spec.backbone!r}; registered: {', '.join(sorted(BACKBONES))}")
    return factory(spec, image_size=image_size)


def create_classifier(spec: ModelSpec, num_classes: int) -> Network:
    """Backbone plus one `num_classes`-way classifier head named "main": the network of the study's
    tables, whose parameter count is the one quoted for ResNet-110 and PyramidNet-110."""
    backbone = create_backbone(spec)
    return Network(backbone, {"main": ClassifierHead(backbone.feature_width, num_classes)})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, image_size: int = 32) -> int:
    """FLOPs of one forward pass of one 3 x image_size x image_size image, by
    `torch.utils.flop_counter.FlopCounterMode`: convolutions and matrix products only (BN, ReLU,
    pooling and additions are not counted), a multiply-add counted as 2 FLOPs. Works on meta tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    images = torch.zeros(1, 3, image_size, image_size, device=device)
    was_training = model.training
    model.eval()  # BN with running statistics: no batch statistics to update
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(images)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def describe_backbones(backbone: str | None = None, depth: int | None = None, alpha: float | None = None,
                       classes: int = 100, widen_factor: int | None = None) -> list[dict[str, Any]]:
    """Rows for `auxcli models`, one per configuration: backbone, depth, alpha, parameters (backbone
    plus a `classes`-way classifier head), feature_width, gflops (forward GFLOPs of one 32x32 image,
    a multiply-add counted as 2 FLOPs; see `forward_flops`) and widen_factor (Wide ResNet).

    Without filters: `CATALOGUE`. `backbone` keeps that backbone's entries (or names a new one);
    `depth`, `alpha` and `widen_factor` set those fields on the entries they apply to (without `backbone`,
    the linear model is dropped by `depth`, all but PyramidNet by `alpha`, all but WRN by `widen_factor`,
    and a depth that only some backbones can have drops the others). Each configuration is checked by
    the spec's own rules; a `SpecError` names the option at fault (e.g. `--depth model.depth: 9 is not
    a valid resnet depth`). Networks are built on the meta device: no memory, no init time.
    """
    from auxcli.errors import SpecError
    from auxcli.specfile import validate_spec_data

    from auxcli.models.depth import valid_depth

    locations = {("model", key): (f"--{key.replace('_', '-')}", None, None)
                 for key, value in (("backbone", backbone), ("depth", depth), ("alpha", alpha),
                                    ("widen_factor", widen_factor))
                 if value is not None}
    entries = [c for c in CATALOGUE if backbone in (None, c["backbone"])] or [
        {"backbone": backbone, "depth": None, "alpha": None}]
    if backbone is None and depth is not None:  # keep the backbones that can have this depth, if any can
        entries = [c for c in entries if valid_depth(c["backbone"], depth)] or entries
    configs: list[dict[str, Any]] = []
    for entry in entries:
        config = dict(entry)
        if depth is not None:
            if backbone is None and config["backbone"] == "linear":
                continue
            config["depth"] = depth
        if alpha is not None:
            if backbone is None and config["backbone"] != "pyramidnet":
                continue
            config["alpha"] = alpha
        if widen_factor is not None:
            if backbone is None and config["backbone"] != "wrn":
                continue
            config["widen_factor"] = widen_factor
        if config not in configs:
            configs.append(config)

    specs, problems = [], []
    for config in configs:
        try:
            specs.append(validate_spec_data({"name": "models", "model": config}, locations, "models").model)
        except SpecError as exc:
            problems += [p for p in exc.problems if p not in problems]
    if problems:
        raise SpecError(problems)

    rows = []
    for spec in specs:
        with torch.device("meta"):
            network = create_classifier(spec, classes)
        rows.append({
            "backbone": spec.backbone, "depth": spec.depth, "alpha": spec.alpha,
            "parameters": count_parameters(network),
            "feature_width": network.backbone.feature_width,
            "gflops": forward_flops(network) / 1e9,
            "widen_factor": spec.widen_factor,
        })
    return rows


# The built-in backbones register themselves on import (they import `register_backbone` from here).
from auxcli.models import linear, pyramidnet, resnet, wrn  # noqa: E402, F401
