"""Rotation copies (augment/rotation.py), the rotation task, SLA's joint labels and aggregated inference."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from auxcli.augment.cutout import cutout
from auxcli.augment.pipeline import build_train_augment
from auxcli.augment.rotation import rotate_copies
from auxcli.augment.targets import Targets
from auxcli.models.registry import create_backbone
from auxcli.spec import AugmentSpec, ModelSpec, Spec
from auxcli.tasks import (
    ClassificationTask,
    JointRotationTask,
    RotationTask,
    UnrotatedClassificationTask,
    aggregated_logits,
    build_tasks,
    joint_labels,
)
from auxcli.models.network import Network
from auxcli.train.loop import SplitTensors, evaluate
from auxcli.train.runtime import resolve_runtime
from auxcli.spec import RuntimeSpec

SIZE = 8


def marked_images(n: int) -> torch.Tensor:
    """Images that are 0 everywhere but one pixel per image at a distinct, asymmetric place."""
    images = torch.zeros(n, 1, SIZE, SIZE)
    for j in range(n):
        images[j, 0, j % 3, 1 + j % 5] = 1.0
    return images


def counterclockwise(row: int, col: int, quarter_turns: int) -> tuple[int, int]:
    """Where pixel (row, col) of a SIZE x SIZE image lands after k quarter turns counterclockwise (row 0 at
    the top): one turn sends the top-right corner to the top-left, (r, c) -> (SIZE - 1 - c, r)."""
    for _ in range(quarter_turns % 4):
        row, col = SIZE - 1 - col, row
    return row, col


@pytest.mark.parametrize("copies", ["all", "one"])
def test_rotation_target_is_the_rotation_applied(copies: str) -> None:
    n = 6
    images = marked_images(n)
    labels = torch.arange(n) * 10
    g = torch.Generator().manual_seed(3)
    out, targets = rotate_copies(images, Targets({"main": labels}), g, copies=copies)
    rotation, source = targets.maps["rotation"], targets.maps["rotation_source"]
    assert out.shape[0] == (4 * n if copies == "all" else n)
    for i in range(out.shape[0]):
        j, k = int(source[i]), int(rotation[i])
        expected = counterclockwise(j % 3, 1 + j % 5, k)
        (where,) = out[i, 0].nonzero().tolist()
        assert tuple(where) == expected, (i, j, k)
        assert targets.classes["main"][i] == labels[j]
    if copies == "one":
        assert set(rotation.tolist()) <= {0, 1, 2, 3}
        assert torch.equal(source, torch.arange(n))


def test_all_copies_of_an_image_are_adjacent_the_unrotated_one_first() -> None:
    n = 5
    images = marked_images(n)
    out, targets = rotate_copies(images, Targets({"main": torch.arange(n)}), copies="all")
    assert torch.equal(out[::4], images)
    assert targets.maps["rotation"].tolist() == list(range(4)) * n
    assert targets.maps["rotation_source"].tolist() == [j for j in range(n) for _ in range(4)]
    # a contiguous cut into whole images (a rank's shard, a ghost BatchNorm group) holds all their rotations
    assert torch.equal(rotate_copies(images[2:4], Targets({}), copies="all")[0], out[8:16])


def test_one_rotation_per_image_is_uniform_and_seeded() -> None:
    images = torch.zeros(4000, 1, SIZE, SIZE)
    draw = [rotate_copies(images, Targets({}), torch.Generator().manual_seed(0), copies="one")[1].maps["rotation"]
            for _ in range(2)]
    assert torch.equal(draw[0], draw[1])
    counts = torch.bincount(draw[0], minlength=4).float() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)


def test_pixel_maps_rotate_with_the_pixels_and_image_maps_repeat() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 32, 32, generator=g) + 1.0  # never 0 before Cutout
    cut, targets = cutout(images, Targets({"main": torch.arange(3)}, maps={"flipped": torch.tensor([1, 0, 1]).bool()}),
                          g, size=12)
    out, rotated = rotate_copies(cut, targets, copies="all")
    assert torch.equal(rotated.maps["cutout_mask"], (out == 0).all(1))  # still exactly the zeroed pixels
    assert rotated.maps["flipped"].tolist() == [True] * 4 + [False] * 4 + [True] * 4


def test_rotation_of_non_square_images_is_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        rotate_copies(torch.zeros(1, 3, 32, 16), Targets({}), copies="all")


def test_pipeline_rotates_last_and_grows_the_batch() -> None:
    augment = build_train_augment(AugmentSpec(rotation={"copies": "all"}), torch.full((3,), 0.5),
                                  torch.full((3,), 0.25))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out, targets = augment(images, Targets({"main": torch.arange(4)}), torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert targets.maps["crop_offset"].shape == (16, 2)  # crop ran first, per image, and was carried along
    for k in range(4):
        torch.testing.assert_close(out[k::4], torch.rot90(out[::4], k, dims=(-2, -1)))


def test_joint_labels_are_class_times_four_plus_rotation() -> None:
    classes = torch.arange(100).repeat_interleave(4)
    rotation = torch.arange(4).repeat(100)
    labels = joint_labels(classes, rotation)
    assert labels.tolist() == list(range(400))
    assert joint_labels(torch.tensor([7]), torch.tensor([3])).item() == 31


def test_sla_task_trains_on_joint_labels() -> None:
    task = JointRotationTask("gt", num_classes=10)
    images, targets = rotate_copies(torch.zeros(3, 3, 8, 8), Targets({"main": torch.tensor([2, 5, 9])}), copies="all")
    assert task.build_head(16)(torch.randn(12, 16, 4, 4)).shape == (12, 40)
    expected = targets.classes["main"] * 4 + targets.maps["rotation"]
    logits = torch.randn(12, 40)
    torch.testing.assert_close(task.loss(logits, targets), F.cross_entropy(logits, expected))
    perfect = F.one_hot(expected, 40).float() * 30
    summary = task.summarize({k: float(v) for k, v in task.batch_metrics(perfect, targets).items()})
    assert summary == {"acc": 1.0, "acc_aggregated": 1.0, "joint_acc": 1.0}


def test_single_inference_reads_rotation_zero_logits_of_unrotated_copies() -> None:
    task = JointRotationTask("gt", num_classes=3)
    _, targets = rotate_copies(torch.zeros(2, 1, 4, 4), Targets({"main": torch.tensor([1, 2])}), copies="all")
    logits = torch.zeros(8, 12)
    logits[0, 1 * 4 + 0] = 5.0  # image 0, unrotated (copy 0): class 1 at rotation 0 (right)
    logits[4, 0 * 4 + 0] = 5.0  # image 1, unrotated (copy 4): class 0 (wrong)
    logits[4, 2 * 4 + 1] = 9.0  # a larger logit at rotation 1 must not count for single inference
    sums = task.batch_metrics(logits, targets)
    assert float(sums["count"]) == 2 and float(sums["correct"]) == 1


@pytest.fixture(scope="module")
def tiny_network() -> Network:
    torch.manual_seed(0)
    backbone = create_backbone(ModelSpec(backbone="resnet", depth=8, base_width=4))
    task = JointRotationTask("gt", num_classes=5)
    return Network(backbone, {"main": task.build_head(backbone.feature_width)}).eval()


def test_aggregated_inference_is_the_mean_of_the_four_rotations_computed_separately(tiny_network) -> None:
    g = torch.Generator().manual_seed(2)
    images = torch.randn(6, 3, 32, 32, generator=g)
    labels = torch.randint(0, 5, (6,), generator=g)
    with torch.no_grad():
        separate = [tiny_network(torch.rot90(images, k, dims=(-2, -1)))["main"].view(6, 5, 4)[:, :, k]
                    for k in range(4)]
        expected = torch.stack(separate).mean(0)  # (6, 5)
        batch, targets = rotate_copies(images, Targets({"main": labels}), copies="all")
        joint = tiny_network(batch)["main"]
    got, copies = aggregated_logits(joint, targets.maps["rotation"], targets.maps["rotation_source"])
    torch.testing.assert_close(got[:6], expected, rtol=1e-4, atol=1e-5)
    assert copies[:6].tolist() == [4.0] * 6 and copies[6:].sum() == 0
    sums = JointRotationTask("gt", 5).batch_metrics(joint, targets)
    assert float(sums["count_aggregated"]) == 6
    assert float(sums["correct_aggregated"]) == float((expected.argmax(1) == labels).sum())


def test_evaluate_scores_sla_on_the_four_rotations_of_clean_images(tiny_network) -> None:
    g = torch.Generator().manual_seed(4)
    split = SplitTensors(torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=g),
                         {"main": torch.randint(0, 5, (10,), generator=g)})
    task = JointRotationTask("gt", 5)

    def clean(images, targets, generator):
        return images.float() / 255, targets

    runtime = resolve_runtime(RuntimeSpec(device="cpu", threads=1))
    sums = evaluate(tiny_network, [task], split, batch_size=4, transform=clean, generator=None, runtime=runtime)
    assert sums["count"] == 40  # images reaching the model: 4 rotations of 10
    assert sums["main/count"] == 10 and sums["main/count_aggregated"] == 10 and sums["main/copies"] == 40
    with torch.no_grad():  # single inference by hand: clean images, the rotation-0 logits of each class
        single = tiny_network(split.images.float() / 255)["main"].view(10, 5, 4)[:, :, 0].argmax(1)
    assert sums["main/correct"] == float((single == split.classes["main"]).sum())


def test_main_head_beside_rotation_sees_only_unrotated_copies() -> None:
    task = UnrotatedClassificationTask("main", "gt", 5)
    labels = torch.tensor([0, 3, 4])
    _, targets = rotate_copies(torch.zeros(3, 1, 4, 4), Targets({"main": labels}), copies="all")
    logits = torch.randn(12, 5)
    rotated = targets.maps["rotation"] != 0
    logits[rotated] = 100 * F.one_hot(torch.tensor(1), 5).float()  # confidently wrong, must not count
    upright = logits[~rotated]
    torch.testing.assert_close(task.loss(logits, targets), F.cross_entropy(upright, labels))
    sums = task.batch_metrics(logits, targets)
    assert float(sums["count"]) == 3
    assert float(sums["correct"]) == float((upright.argmax(1) == labels).sum())
    clean = Targets({"main": labels})  # the clean test pass has no rotation: every image counts
    torch.testing.assert_close(task.loss(upright, clean), F.cross_entropy(upright, labels))


def test_build_tasks_for_rotation_and_sla_specs() -> None:
    rotation = Spec(name="r", task={"aux": {"kind": "rotation", "weight": 0.5}}, augment={"rotation": {}})
    main, aux = build_tasks(rotation, 100)
    assert isinstance(main, UnrotatedClassificationTask) and isinstance(aux, RotationTask)
    assert aux.weight == 0.5 and aux.eval_augmented and main.eval_views is None
    every = rotation.model_copy(update={"task": rotation.task.model_copy(
        update={"aux": rotation.task.aux.model_copy(update={"main_copies": "all"})})})
    assert type(build_tasks(every, 100)[0]) is ClassificationTask
    (sla,) = build_tasks(Spec(name="s", task={"joint": "sla"}, augment={"rotation": {}}), 100)
    assert isinstance(sla, JointRotationTask) and sla.num_classes == 100 and sla.eval_views is not None


def test_main_head_beside_rotation_keeps_ricap_mixed_labels_of_the_unrotated_copies() -> None:
    from auxcli.tasks import mixed_cross_entropy

    spec = Spec(name="rr", task={"aux": {"kind": "rotation"}}, augment={"ricap": {}, "rotation": {}})
    augment = build_train_augment(spec.augment, torch.full((3,), 0.5), torch.full((3,), 0.25))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    out, targets = augment(images, Targets({"main": torch.randint(0, 5, (6,), generator=g)}), g)
    assert out.shape[0] == 24 and targets.classes["main"].shape == (24, 4) and targets.mix_weights.shape == (24, 4)
    main, aux = build_tasks(spec, 5)
    logits = torch.randn(24, 5)
    upright = targets.maps["rotation"] == 0
    torch.testing.assert_close(main.loss(logits, targets), mixed_cross_entropy(
        logits[upright], targets.classes["main"][upright], targets.mix_weights[upright]))
    assert aux.loss(torch.randn(24, 4), targets).isfinite()


def test_rotation_alone_trains_only_the_rotation_head() -> None:
    (task,) = build_tasks(Spec(name="rotnet", task={"labels": "none", "aux": {"kind": "rotation"}},
                               augment={"rotation": {"copies": "one"}}), 100)
    assert isinstance(task, RotationTask) and task.label_set is None


def test_tasks_asking_for_different_test_views_in_one_pass_are_refused() -> None:
    from dataclasses import replace

    from auxcli.train.loop import eval_views

    sla = JointRotationTask("gt", 5)
    other = replace(JointRotationTask("gt", 5, name="aux"), eval_views=lambda images, targets: (images, targets))
    assert eval_views([ClassificationTask("main", "gt", 5)]) is None
    assert eval_views([sla, ClassificationTask("aux", "gt", 5)]) is sla.eval_views
    with pytest.raises(ValueError, match="different test views"):
        eval_views([sla, other])
