"""Every registered auxiliary task, on targets made by the real augmentation pipeline: its head's output
fits its target, its loss is finite and differentiable, and its metrics summarise to fractions."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from auxcli.augment.pipeline import build_train_augment
from auxcli.augment.targets import Targets
from auxcli.spec import AUX_KINDS, Spec
from auxcli.tasks import AUX_TASKS, ClassificationTask, CropTask, RotationTask, SegmentationTask, Task, build_tasks

N, FEATURES, NUM_CLASSES = 8, 16, 100
AUX = {
    "labelset": {"kind": "labelset", "labels": "superclass"},
    "crop": {"kind": "crop", "crop_label": "visible", "weight": 0.5},
    "cutout": {"kind": "cutout"},
    "ricap": {"kind": "ricap"},
    "rotation": {"kind": "rotation"},
}
AUGMENT = {"labelset": {}, "crop": {}, "cutout": {"cutout": {"size": 16}},
           "ricap": {"ricap": {"beta": 0.3, "keep_off_edges": True}}, "rotation": {"rotation": {"copies": "all"}}}


def make_spec(kind: str) -> Spec:
    return Spec(name=f"aux-{kind}", task={"aux": AUX[kind]}, augment=AUGMENT[kind], model={"depth": 8})


def augmented_batch(spec: Spec, seed: int = 0) -> tuple[torch.Tensor, Targets]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (N, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (N,), generator=g)
    targets = Targets(classes={"main": labels, "aux": labels % 20})
    augment = build_train_augment(spec.augment, torch.full((3,), 0.5), torch.full((3,), 0.25))
    return augment(images, targets, g)


def aux_task(kind: str) -> Task:
    return AUX_TASKS[kind](make_spec(kind), NUM_CLASSES)


def perfect_logits(task: Task, targets: Targets) -> torch.Tensor:
    """Logits that put all mass on the target class (of every pixel, for segmentation)."""
    if isinstance(task, SegmentationTask):
        target = task.target(targets)
        return F.one_hot(target, task.num_classes).permute(0, 3, 1, 2).float() * 20
    labels = task.labels(targets) if isinstance(task, CropTask | RotationTask) else targets.classes[task.name]
    width = 20 if isinstance(task, ClassificationTask) else 4 if isinstance(task, RotationTask) else 9
    return F.one_hot(labels, width).float() * 20


def test_every_aux_kind_of_the_spec_is_registered() -> None:
    assert set(AUX_KINDS) == set(AUX_TASKS)


@pytest.mark.parametrize("kind", list(AUX_TASKS))
def test_head_output_fits_target_and_loss_is_differentiable(kind: str) -> None:
    spec = make_spec(kind)
    task = aux_task(kind)
    assert task.name == "aux" and task.weight == spec.task.aux.weight
    assert task.eval_augmented == (kind != "labelset")
    images, targets = augmented_batch(spec)
    m = images.shape[0]  # 4N with rotation copies
    features = torch.randn(m, FEATURES, 8, 8, requires_grad=True)
    output = task.build_head(FEATURES)(features)
    if isinstance(task, SegmentationTask):
        assert output.shape == (m, task.num_classes, *task.target(targets).shape[1:])
    else:
        assert output.shape[0] == m and output.dim() == 2
    loss = task.loss(output, targets)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", list(AUX_TASKS))
def test_summary_of_summed_batch_metrics_is_fractions(kind: str) -> None:
    spec = make_spec(kind)
    task = aux_task(kind)
    head = task.build_head(FEATURES)
    sums: dict[str, float] = {}
    for seed in range(3):  # sums over batches, as the training loop accumulates them
        images, targets = augmented_batch(spec, seed)
        with torch.no_grad():
            metrics = task.batch_metrics(head(torch.randn(images.shape[0], FEATURES, 8, 8)), targets)
        assert all(v.dim() == 0 for v in metrics.values())
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value)
    summary = task.summarize(sums)
    assert "acc" in summary and all(0.0 <= v <= 1.0 for v in summary.values())
    if isinstance(task, SegmentationTask):
        assert "miou" in summary


@pytest.mark.parametrize("kind", list(AUX_TASKS))
def test_perfect_logits_score_one(kind: str) -> None:
    task = aux_task(kind)
    _, targets = augmented_batch(make_spec(kind))
    logits = perfect_logits(task, targets)
    summary = task.summarize({k: float(v) for k, v in task.batch_metrics(logits, targets).items()})
    assert summary["acc"] == pytest.approx(1.0)
    assert summary.get("miou", 1.0) == pytest.approx(1.0)
    assert task.loss(logits, targets).item() < 1e-6


def test_segmentation_miou_counts_each_class() -> None:
    task = SegmentationTask("cutout_mask", 2, 1.0)
    target = torch.zeros(1, 2, 2, dtype=torch.bool)
    target[0, 0, 0] = True  # one cut pixel of four
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 0] = 1.0  # predict "kept" everywhere
    sums = {k: float(v) for k, v in task.batch_metrics(logits, Targets({}, maps={"cutout_mask": target})).items()}
    summary = task.summarize(sums)
    assert summary["acc"] == pytest.approx(0.75)
    assert summary["miou"] == pytest.approx((3 / 4 + 0 / 1) / 2)


def test_crop_label_modes_follow_the_spec() -> None:
    spec = make_spec("crop")
    _, targets = augmented_batch(spec, seed=1)
    sampled = CropTask(1.0, 4, "sampled").labels(targets)
    visible = CropTask(1.0, 4, "visible").labels(targets)
    flipped = targets.maps["flipped"]
    assert torch.equal(sampled[~flipped], visible[~flipped])
    assert torch.equal(visible[flipped] % 3, 2 - sampled[flipped] % 3)  # horizontal block mirrored


def test_crop_task_mixes_its_label_under_ricap() -> None:
    spec = Spec(name="crop-ricap", task={"aux": {"kind": "crop"}}, augment={"ricap": {}}, model={"depth": 8})
    _, targets = augmented_batch(spec)
    task = aux_task("crop")
    labels = task.labels(targets)
    assert labels.shape == (N, 4)
    logits = torch.randn(N, 9, requires_grad=True)
    loss = task.loss(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("feature_size", [4, 8, 16])
def test_segmentation_head_outputs_the_image_size_for_any_feature_map(feature_size: int) -> None:
    head = aux_task("ricap").build_head(FEATURES)
    assert head(torch.randn(2, FEATURES, feature_size, feature_size)).shape == (2, 4, 32, 32)


def test_build_tasks_puts_main_first_then_aux() -> None:
    tasks = build_tasks(make_spec("ricap"), NUM_CLASSES)
    assert [t.name for t in tasks] == ["main", "aux"]
    assert isinstance(tasks[1], SegmentationTask) and tasks[1].num_classes == 4
