"""Backbones, their registry and `auxcli models`: exact parameter counts, shapes, memory formats."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.models.network import Network
from auxcli.models.pyramidnet import pyramid_widths
from auxcli.models.registry import (
    BACKBONES,
    UnknownBackboneError,
    count_parameters,
    create_backbone,
    create_classifier,
    describe_backbones,
)
from auxcli.spec import ModelSpec

# Tiny configurations per registered backbone; a new backbone needs an entry here (see the test below).
SMALL_CONFIGS: dict[str, list[dict]] = {
    "resnet": [{"depth": 8}, {"depth": 14}],
    "pyramidnet": [{"depth": 8, "alpha": 12}],
    "linear": [{"depth": None}],
    "wrn": [{"depth": 10, "widen_factor": 2, "base_width": 4, "dropout": 0.3}],
}
CASES = [pytest.param(name, kw, id=f"{name}-{'-'.join(map(str, kw.values()))}")
         for name in sorted(BACKBONES) for kw in SMALL_CONFIGS.get(name, [{}])]


def small_spec(name: str, kw: dict) -> ModelSpec:
    return ModelSpec(backbone=name, **kw)


def test_every_registered_backbone_has_a_small_config():
    assert set(BACKBONES) <= set(SMALL_CONFIGS), "add a tiny configuration for the new backbone"


def test_study_backbones_are_registered():
    assert {"resnet", "pyramidnet", "linear"} <= set(BACKBONES)


def test_resnet110_with_100_classes_has_the_quoted_parameter_count():
    assert count_parameters(create_classifier(ModelSpec(backbone="resnet", depth=110), 100)) == 1_733_812


def test_pyramidnet110_alpha270_with_100_classes_has_the_quoted_parameter_count():
    with torch.device("meta"):  # 28M parameters: counted by construction, never initialised
        network = create_classifier(ModelSpec(backbone="pyramidnet", depth=110, alpha=270), 100)
    assert count_parameters(network) == 28_511_307
    assert network.backbone.feature_width == 286


def test_linear_baseline_is_a_single_fc_layer():
    network = create_classifier(ModelSpec(backbone="linear", depth=None), 100)
    assert count_parameters(network.backbone) == 0
    assert count_parameters(network) == 3072 * 100 + 100


def test_pyramid_widths_grow_additively_to_base_plus_alpha():
    widths = pyramid_widths(110, 270, 16)
    assert len(widths) == 54 and widths[0] == 21 and widths[-1] == 286
    assert all(b - a == 5 for a, b in zip([16] + widths, widths))
    assert pyramid_widths(8, 12, 16) == [20, 24, 28]


@pytest.mark.parametrize("name", ["resnet", "pyramidnet"])
def test_shortcuts_add_no_parameters(name):
    """Option-A / zero-padded shortcuts: depth-1 convs (the FC is the last layer), and only convs and
    BNs own parameters, so a residual net has exactly the parameters of its plain counterpart."""
    backbone = create_backbone(ModelSpec(backbone=name, depth=20, alpha=12 if name == "pyramidnet" else None))
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 - 1
    owners = {type(m) for m in backbone.modules() if any(True for _ in m.parameters(recurse=False))}
    assert owners <= {nn.Conv2d, nn.BatchNorm2d}


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_forward_features_shape_matches_feature_width(name, kw):
    backbone = create_backbone(small_spec(name, kw)).eval()
    features = backbone.forward_features(torch.randn(2, 3, 32, 32))
    assert features.dim() == 4 and features.shape[:2] == (2, backbone.feature_width)
    if name != "linear":
        assert features.shape[2:] == (8, 8)  # two stride-2 stages on 32x32


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_network_with_classifier_head_gives_logits(name, kw):
    network = create_classifier(small_spec(name, kw), num_classes=7)
    assert isinstance(network, Network)
    out = network(torch.randn(2, 3, 32, 32))
    assert set(out) == {"main"} and out["main"].shape == (2, 7)


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_backbone_has_no_classifier_and_no_conv_bias(name, kw):
    backbone = create_backbone(small_spec(name, kw))
    assert isinstance(backbone.feature_width, int)
    assert not any(isinstance(m, nn.Linear) for m in backbone.modules())
    assert all(m.bias is None for m in backbone.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_channels_last_forward_equals_contiguous_forward(name, kw):
    torch.manual_seed(0)
    network = create_classifier(small_spec(name, kw), num_classes=5).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = network.backbone.forward_features(images)
        network = network.to(memory_format=torch.channels_last)
        got = network.backbone.forward_features(images.contiguous(memory_format=torch.channels_last))
    assert got.is_contiguous(memory_format=torch.channels_last)  # the format survives the shortcuts
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_network_traces_as_one_graph(name, kw):
    """No data-dependent Python control flow: dynamo captures the whole forward (no inductor: fast)."""
    torch._dynamo.reset()
    network = create_classifier(small_spec(name, kw), num_classes=5).eval()
    images = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(network, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(images)["main"], network(images)["main"])


def test_unknown_backbone_raises_key_error_naming_the_registered_ones():
    with pytest.raises(KeyError, match="registered: linear, pyramidnet, resnet, wrn"):
        create_backbone(ModelSpec.model_construct(backbone="vgg", depth=16, alpha=None, base_width=16))
    assert issubclass(UnknownBackboneError, KeyError)


def test_invalid_depth_is_rejected_when_building():
    with pytest.raises(ValueError, match="6n\\+2"):
        create_backbone(ModelSpec(backbone="resnet", depth=9))


def test_describe_backbones_lists_the_study_configurations():
    rows = describe_backbones(backbone=None, depth=None, alpha=None, classes=100)
    by_name = {(r["backbone"], r["depth"], r["alpha"]): r for r in rows}
    assert by_name[("resnet", 110, None)]["parameters"] == 1_733_812
    assert by_name[("pyramidnet", 110, 270)]["parameters"] == 28_511_307
    assert by_name[("linear", None, None)]["feature_width"] == 3072
    assert ("resnet", 20, None) in by_name and ("resnet", 8, None) in by_name
    assert 0.4 < by_name[("resnet", 110, None)]["gflops"] < 0.6  # ~253M multiply-adds, 2 FLOPs each


def test_describe_backbones_filters_and_sets_fields():
    rows = describe_backbones(backbone=None, depth=8, alpha=None, classes=10)
    assert [(r["backbone"], r["depth"]) for r in rows] == [("resnet", 8), ("pyramidnet", 8)]
    rows = describe_backbones(backbone="pyramidnet", depth=8, alpha=12, classes=10)
    assert len(rows) == 1 and rows[0]["feature_width"] == 28


def test_cli_models_prints_the_table_with_the_exact_resnet110_count():
    result = CliRunner().invoke(app, ["models", "--backbone", "resnet", "--depth", "110"])
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split()
    assert {"backbone", "depth", "parameters", "feature_width", "gflops"} <= set(header)
    assert "1,733,812" in result.output


def test_cli_models_rejects_an_invalid_depth_with_exit_code_2():
    result = CliRunner().invoke(app, ["models", "--backbone", "resnet", "--depth", "9"])
    assert result.exit_code == 2
    assert "--depth model.depth: 9 is not a valid resnet depth" in result.stderr
