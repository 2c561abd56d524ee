"""BatchNorm groups and global-batch draws (issue 20): what a spec computes does not depend on how many
processes compute it. The torchrun half is `test_world_sizes.py`."""

from __future__ import annotations

import pytest
import torch

from auxcli.augment.pipeline import build_train_augment
from auxcli.augment.rotation import rotate_copies
from auxcli.augment.targets import Targets, take_images
from auxcli.data.batches import Shard, sharded_batches
from auxcli.models.batchnorm import ghost_parts, use_ghost_batch_norm
from auxcli.models.heads import ClassifierHead
from auxcli.models.network import Network
from auxcli.models.registry import create_backbone
from auxcli.spec import AugmentSpec, ModelSpec


def tiny_resnet(groups: int) -> Network:
    torch.manual_seed(0)
    body = create_backbone(ModelSpec(backbone="resnet", depth=8, base_width=4))
    return use_ghost_batch_norm(Network(body, {"main": ClassifierHead(body.feature_width, 10)}), groups).train()


def test_bn_groups_of_rotation_copies_are_groups_of_whole_images_with_all_their_rotations():
    """4 groups of 2 images each (with their 4 rotations) must equal normalising each group of 2 images on its
    own, as 4 GPUs would; the rotation-major layout normalised each rotation separately (issue 20)."""
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    copies, _ = rotate_copies(images, Targets({}), copies="all")
    with torch.no_grad():
        grouped = tiny_resnet(groups=4)(copies)["main"]
        per_gpu = torch.cat([tiny_resnet(groups=1)(rotate_copies(part, Targets({}), copies="all")[0])["main"]
                             for part in images.split(2)])
        rotation_major = copies.view(8, 4, 3, 32, 32).transpose(0, 1).flatten(0, 1)
        by_rotation = tiny_resnet(groups=4)(rotation_major)["main"].view(4, 8, 10).transpose(0, 1).flatten(0, 1)
    torch.testing.assert_close(grouped, per_gpu, rtol=1e-5, atol=1e-5)
    assert (by_rotation - per_gpu).abs().max() > 1e-3  # the layout matters: the old one is measurably off


def test_a_shard_of_a_globally_augmented_batch_is_the_rank_s_images_with_renumbered_copies():
    augment = build_train_augment(AugmentSpec(rotation={"copies": "all"}), torch.full((3,), 0.5),
                                  torch.full((3,), 0.25))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    out, targets = augment(images, Targets({"main": torch.arange(6)}), torch.Generator().manual_seed(3))
    part, mine = take_images(out, targets, 2, 3, 6)  # images 2, 3, 4 of the 6
    assert torch.equal(part, out[8:20])
    assert mine.classes["main"].tolist() == [2] * 4 + [3] * 4 + [4] * 4
    assert mine.maps["rotation_source"].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # positions in the shard
    assert torch.equal(mine.maps["crop_offset"], targets.maps["crop_offset"][8:20])
    assert take_images(out, targets, 0, 6, 6)[0] is out  # one process: nothing is cut


@pytest.mark.parametrize("size", [64, 63, 37])
def test_shard_start_is_where_the_rank_s_part_begins(size):
    batch = torch.arange(100, 100 + size)
    for world_size in (1, 2, 4):
        for rank in range(world_size):
            (part,) = sharded_batches(batch, size, Shard(rank, world_size))  # one step
            assert torch.equal(part.batch, batch)
            assert torch.equal(part.batch[part.start:part.start + part.index.numel()], part.index)


def test_ghost_parts_keep_the_groups_of_one_process_on_every_rank():
    """Groups of a global batch of 64 in 8 images: 8 groups in one process, 4 per rank on 2, 2 on 4; one
    process's groups are exactly the union of the ranks' groups, in order."""
    batch = torch.randn(64, 3, 4, 4)
    one = batch.tensor_split(ghost_parts(8, 64, 1))
    for world_size in (2, 4):
        ranks = [batch.tensor_split(world_size)[r].tensor_split(ghost_parts(8, 64, world_size))
                 for r in range(world_size)]
        assert all(torch.equal(a, b) for a, b in zip(one, [g for groups in ranks for g in groups], strict=True))


def test_paper_specs_state_the_study_s_4_x_32_batch_norm_for_1_2_or_4_processes():
    from pathlib import Path

    from auxcli.spec import launch_problems
    from auxcli.specfile import load_spec

    paper = sorted((Path(__file__).resolve().parents[1] / "specs" / "paper").glob("*.yaml"))
    assert paper
    for path in paper:
        spec = load_spec(path)
        if spec.model.backbone == "linear":  # no BatchNorm
            continue
        assert spec.runtime.bn_group == 32 and spec.train.batch_size == 128, path.name
        assert [ghost_parts(spec.runtime.bn_group, spec.train.batch_size, w) for w in (1, 2, 4)] == [4, 2, 1]
        assert all(not launch_problems(spec, world_size=w, device_type="cuda") for w in (1, 2, 4)), path.name


@pytest.mark.parametrize("augment", [{}, {"cutout": {"size": 16}}, {"rotation": {"copies": "one"}},
                                     {"cutout": {"size": 16}, "rotation": {"copies": "all"}},
                                     {"ricap": {"beta": 0.3}, "rotation": {"copies": "all"}}])
def test_a_rank_s_part_is_augmented_exactly_as_in_the_whole_global_batch(augment):
    from auxcli.augment.targets import Part

    transform = build_train_augment(AugmentSpec(**augment), torch.full((3,), 0.5), torch.full((3,), 0.25))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = Targets({"main": torch.randint(0, 10, (12,), generator=g)})
    whole = transform(images, labels, torch.Generator().manual_seed(5))
    for part in (Part(0, 6, 12), Part(6, 6, 12), Part(3, 3, 12), Part(9, 3, 12)):
        out, targets = transform(images, labels, torch.Generator().manual_seed(5), part)
        expected, kept = take_images(*whole, *part)
        assert torch.equal(out, expected)
        assert targets.classes.keys() == kept.classes.keys() and targets.maps.keys() == kept.maps.keys()
        assert all(torch.equal(targets.classes[k], kept.classes[k]) for k in kept.classes)
        assert all(torch.equal(targets.maps[k], kept.maps[k]) for k in kept.maps)
