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


def test_wrn_28_10_with_100_classes_has_the_official_parameter_count():
    """Zagoruyko & Komodakis 2016, Table 1: WRN-28-10 has 36.5M parameters (36,536,884 with a 100-way FC)."""
    with torch.device("meta"):
        network = create_classifier(ModelSpec(backbone="wrn", depth=28, widen_factor=10, dropout=0.3), 100)
    assert count_parameters(network) == 36_536_884
    assert network.backbone.feature_width == 640


def test_wrn_blocks_are_pre_activation_with_dropout_between_the_convs():
    backbone = create_backbone(ModelSpec(backbone="wrn", depth=16, widen_factor=2, base_width=4, dropout=0.5))
    blocks = [m for m in backbone.modules() if type(m).__name__ == "WideBlock"]
    assert len(blocks) == 3 * 2  # n = (16 - 4) / 6 blocks per stage
    projections = [b for b in blocks if b.projection is not None]
    assert len(projections) == 3  # the width changes at the first block of every stage (16 -> 16k too)
    assert all(isinstance(b.dropout, nn.Dropout) and b.dropout.p == 0.5 for b in blocks)
    x = torch.randn(2, 3, 32, 32)
    backbone.train()
    assert not torch.equal(backbone(x), backbone(x))  # dropout is active in training
    backbone.eval()
    assert torch.equal(backbone(x), backbone(x))
    no_dropout = create_backbone(ModelSpec(backbone="wrn", depth=16, widen_factor=2, base_width=4))
    assert count_parameters(no_dropout) == count_parameters(backbone)


def test_option_a_shortcut_pads_zero_channels_half_before_and_half_after():
    from auxcli.models.resnet import BasicBlock

    block = BasicBlock(4, 8, stride=2)
    x = torch.randn(2, 4, 6, 6) + 10  # no zero among the identity channels
    shortcut = block.shortcut(x)
    assert shortcut.shape == (2, 8, 3, 3)
    zero = [c for c in range(8) if torch.all(shortcut[:, c] == 0)]
    assert zero == [0, 1, 6, 7]  # planes // 4 = 2 on each side (akamaster/pytorch_resnet_cifar10)
    assert torch.equal(shortcut[:, 2:6], x[:, :, ::2, ::2])


class _ReferenceBlock(nn.Module):
    """akamaster/pytorch_resnet_cifar10 resnet.py BasicBlock, option A, as published."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = stride != 1 or in_planes != planes
        self.planes = planes

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = (torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.planes // 4, self.planes // 4))
                    if self.pad else x)
        return torch.relu(out + shortcut)


class _ReferenceResNet(nn.Module):
    def __init__(self, n, num_classes=10, width=16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes, layers = width, []
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for i in range(n):
                blocks.append(_ReferenceBlock(in_planes, planes, 2 if stage and not i else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))


def test_reference_cifar_resnet_weights_load_and_give_the_same_outputs():
    """A checkpoint of the reference CIFAR ResNet (random weights and BN statistics here) maps onto auxcli's
    ResNet by renaming alone (backbone.*, linear -> heads.main.fc) and gives the same logits."""
    torch.manual_seed(0)
    reference = _ReferenceResNet(n=2, num_classes=10, width=8)
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, as a trained checkpoint has
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    reference.eval()
    ours = create_classifier(ModelSpec(backbone="resnet", depth=14, base_width=8), 10).eval()
    state = {(k.replace("linear.", "heads.main.fc.") if k.startswith("linear.") else f"backbone.{k}"): v
             for k, v in reference.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["main"], reference(x), rtol=1e-5, atol=1e-5)


def test_describe_backbones_lists_wrn_28_10_and_keeps_backbones_that_can_have_the_depth():
    rows = describe_backbones(backbone=None, depth=None, alpha=None, classes=100)
    wrn = next(r for r in rows if r["backbone"] == "wrn")
    assert (wrn["depth"], wrn["widen_factor"], wrn["parameters"]) == (28, 10, 36_536_884)
    assert [r["backbone"] for r in describe_backbones(depth=28)] == ["wrn"]  # 28 is no 6n+2
    assert "wrn" not in {r["backbone"] for r in describe_backbones(depth=20)}  # 20 is no 6n+4
    (small,) = describe_backbones(backbone="wrn", depth=16, widen_factor=4)
    assert small["feature_width"] == 256 and small["widen_factor"] == 4


def test_cli_models_takes_a_widen_factor():
    result = CliRunner().invoke(app, ["models", "--backbone", "wrn", "--depth", "28", "--widen-factor", "10"])
    assert result.exit_code == 0, result.output
    assert "36,536,884" in result.output
    result = CliRunner().invoke(app, ["models", "--backbone", "wrn", "--depth", "26", "--widen-factor", "2"])
    assert result.exit_code == 2 and "6n+4" in result.stderr


MEAN, STD = torch.tensor([0.5, 0.45, 0.4]), torch.tensor([0.25, 0.25, 0.3])


def final_state(name: str, kw: dict, network: Network, **spec: object) -> dict:
    """What `final.pt` holds for `network` (`auxcli.train.runner.finish`), spec sections overridable."""
    return {"spec": {"name": "x", "model": small_spec(name, kw).model_dump(mode="json"),
                     "data": {"image_size": 32}, "task": {"joint": None}, **spec},
            "seed": 0, "backbone": network.backbone.state_dict(),
            "heads": {head: module.state_dict() for head, module in network.heads.items()},
            "normalize": {"mean": MEAN, "std": STD}}


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_final_weights_export_as_an_image_classifier(name, kw):
    """What the logged model's pytorch flavour holds (`auxcli.models.export`): every backbone rebuilds from
    `final.pt`'s content and goes through torch.export, any batch size, with the network's main logits."""
    from auxcli.models.export import image_classifier

    torch.manual_seed(0)
    network = create_classifier(small_spec(name, kw), num_classes=5).eval()
    batch = torch.export.Dim("batch")
    exported = torch.export.export(image_classifier(final_state(name, kw, network)), (torch.rand(2, 3, 32, 32),),
                                   dynamic_shapes={"images": {0: batch}}).module()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = network((images - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1))["main"]
        torch.testing.assert_close(exported(images), expected, rtol=1e-4, atol=1e-5)


def test_only_a_plain_main_classifier_with_its_normalisation_is_exported():
    from auxcli.models.export import image_classifier

    network = create_classifier(small_spec("resnet", {"depth": 8}), num_classes=5)
    final = final_state("resnet", {"depth": 8}, network)
    assert image_classifier(final) is not None
    assert image_classifier({**final, "heads": {"rotation": final["heads"]["main"]}}) is None  # labels: none
    assert image_classifier(final_state("resnet", {"depth": 8}, network, task={"joint": "sla"})) is None
    assert image_classifier({k: v for k, v in final.items() if k != "normalize"}) is None  # an older final.pt


THIN_WRN_BACKWARD = """
import torch
from torch.nn import functional as F
from auxcli.models.registry import create_backbone
from auxcli.spec import ModelSpec
torch.manual_seed(0)
torch.set_num_threads(1)  # as runtime.threads: 1; the bug shows in the one-thread kernel
net = create_backbone(ModelSpec(backbone="wrn", depth=10, widen_factor=1, base_width=4), image_size=32)
net = net.to(memory_format=torch.channels_last)
x = torch.randn(64, 3, 32, 32).to(memory_format=torch.channels_last)
for _ in range(3):
    net.forward_features(x).sum().backward()
block = net.layer2[0]
act = torch.randn(16, 4, 16, 16).to(memory_format=torch.channels_last)
reference = F.conv2d(act.contiguous(), block.projection.weight.detach().contiguous(), stride=2)
print((block._project(act) - reference).abs().max().item())
"""


def test_a_thin_wrn_trains_in_channels_last_on_the_cpu_and_projects_as_the_strided_conv():
    """torch 2.14.1 corrupts the heap in the CPU backward of a strided 1x1 conv with < 8 input channels in
    channels_last (the projection of a base_width-4 WRN); `WideBlock._project` sidesteps it with the same sum.
    In a subprocess: the bug aborts the interpreter."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", THIN_WRN_BACKWARD], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip()) == 0.0
