"""Heads, losses and metrics, one place per task.

A run has a main task (classification on `task.labels`, unless `none`) and at most one auxiliary task
(`task.aux`). The training loop only ever calls the `Task` interface: it builds each head, sums
`task.weight * task.loss(...)`, and accumulates `task.batch_metrics(...)`; it never asks which task it runs.
A task whose test score needs other views of the clean test images than the images themselves (SLA's four
rotations) names them in `eval_views`, which the loop applies to the test batch before the forward pass.

Metric sums are accumulated over an epoch (so they are exact over the whole split, not averages of
batch averages) and turned into fractions by `summarize`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from auxcli.augment.crop import NUM_CROP_BLOCKS, CropLabel, crop_block
from auxcli.augment.ricap import NUM_RICAP_SOURCES
from auxcli.augment.rotation import NUM_ROTATIONS, rotate_copies
from auxcli.augment.targets import Targets
from auxcli.models.heads import ClassifierHead, SegmentationHead

if TYPE_CHECKING:
    from auxcli.spec import Spec


class Task(Protocol):
    name: str  # head name, also the key into Targets.classes: "main" or "aux"
    weight: float  # loss weight
    label_set: str | None  # label set the head is trained on (gt | superclass | random), if any
    eval_augmented: bool  # test targets exist only after augmenting test images (fixed generator)
    # views of a test batch the task is scored on (None: the batch as the eval transform gives it)
    eval_views: Callable[[torch.Tensor, Targets], tuple[torch.Tensor, Targets]] | None

    def build_head(self, feature_width: int) -> nn.Module: ...

    def loss(self, output: torch.Tensor, targets: Targets) -> torch.Tensor: ...

    def batch_metrics(self, output: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]: ...

    def summarize(self, sums: dict[str, float]) -> dict[str, float]: ...


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy for plain labels (N,) or RICAP's mixed labels (N, K) with area weights (N, K)
    (Takahashi et al. 2018: the loss is the area-weighted sum of the K labels' losses)."""
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels)
    return per_sample_cross_entropy(logits, labels, weights).mean()


def mixed_correct(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Number of correct predictions; under mixing a prediction earns the area share of the source it
    names (RICAP's official accuracy)."""
    predicted = logits.argmax(1)
    if labels.dim() == 1:
        return (predicted == labels).sum()
    return ((predicted[:, None] == labels).float() * weights).sum()


class _ClassifierMetrics:
    """Loss and accuracy shared by the heads that classify whole images (labels may be RICAP-mixed)."""

    def labels(self, targets: Targets) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, targets: Targets) -> torch.Tensor:
        return mixed_cross_entropy(output, self.labels(targets), targets.mix_weights)

    def batch_metrics(self, output: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]:
        labels = self.labels(targets)
        return {"correct": mixed_correct(output, labels, targets.mix_weights).float(),
                "count": torch.tensor(float(labels.shape[0]), device=output.device)}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return {"acc": sums["correct"] / max(sums["count"], 1.0)}


@dataclass
class ClassificationTask(_ClassifierMetrics):
    """Classification on a label set: the main head, and the `labelset` auxiliary task."""

    name: str
    label_set: str
    num_classes: int
    weight: float = 1.0
    eval_augmented: bool = False
    eval_views: None = None

    def labels(self, targets: Targets) -> torch.Tensor:
        return targets.classes[self.name]

    def build_head(self, feature_width: int) -> nn.Module:
        return ClassifierHead(feature_width, self.num_classes)


@dataclass
class CropTask(_ClassifierMetrics):
    """Random crop + classification (docs/study.md): which of the 3x3 blocks of the crop-offset grid the crop
    came from, a 9-way classification on the pooled features. After RICAP the label mixes like the class
    label: the four sources' blocks, weighted by area."""

    weight: float
    padding: int
    crop_label: CropLabel = "sampled"
    name: str = "aux"
    label_set: str | None = None
    eval_augmented: bool = True
    eval_views: None = None

    def labels(self, targets: Targets) -> torch.Tensor:
        return crop_block(targets.maps["crop_offset"], targets.maps.get("flipped"),
                          padding=self.padding, mode=self.crop_label)

    def build_head(self, feature_width: int) -> nn.Module:
        return ClassifierHead(feature_width, NUM_CROP_BLOCKS)


@dataclass
class SegmentationTask:
    """Per-pixel classification of an augmentation's map: Cutout's zeroed pixels (2 classes: kept, cut)
    or RICAP's source images (4 classes), as in docs/study.md ("Cutout + segmentation", "RICAP +
    segmentation"). Softmax cross-entropy over `num_classes` logits per pixel, also for Cutout's binary
    case, so both tasks share one loss and their mIoU averages the same way.

    Metrics are sums over the epoch: correct pixels, pixels, and per class the intersection and union of
    prediction and target; `summarize` gives pixel accuracy and the mean IoU over the classes that occur
    (in the target or the prediction)."""

    map_key: str
    num_classes: int
    weight: float
    name: str = "aux"
    label_set: str | None = None
    eval_augmented: bool = True
    eval_views: None = None
    image_size: int = 32  # the target maps' side: the head predicts one logit vector per input pixel

    def build_head(self, feature_width: int) -> nn.Module:
        return SegmentationHead(feature_width, self.num_classes, out_size=self.image_size)

    def target(self, targets: Targets) -> torch.Tensor:
        return targets.maps[self.map_key].long()

    def loss(self, output: torch.Tensor, targets: Targets) -> torch.Tensor:
        return F.cross_entropy(output.float(), self.target(targets))

    def batch_metrics(self, output: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]:
        target = self.target(targets)
        predicted = output.argmax(1)
        classes = torch.arange(self.num_classes, device=output.device)
        is_pred = predicted[..., None] == classes  # (N, H, W, K)
        is_true = target[..., None] == classes
        inter = (is_pred & is_true).flatten(0, -2).sum(0).float()
        union = (is_pred | is_true).flatten(0, -2).sum(0).float()
        sums = {"correct": (predicted == target).sum().float(),
                "pixels": torch.tensor(float(target.numel()), device=output.device)}
        for k in range(self.num_classes):
            sums[f"inter_{k}"], sums[f"union_{k}"] = inter[k], union[k]
        return sums

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        ious = [sums[f"inter_{k}"] / sums[f"union_{k}"]
                for k in range(self.num_classes) if sums[f"union_{k}"] > 0]
        return {"acc": sums["correct"] / max(sums["pixels"], 1.0),
                "miou": sum(ious) / len(ious) if ious else 0.0}


def per_sample_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None
                             ) -> torch.Tensor:
    """`mixed_cross_entropy` before the mean: (N,) losses, plain or area-weighted over RICAP's sources."""
    if labels.dim() == 1:
        return F.cross_entropy(logits.float(), labels, reduction="none")
    return -(F.log_softmax(logits.float(), dim=1).gather(1, labels) * weights).sum(1)


def per_sample_correct(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """`mixed_correct` before the sum: (N,) float, 1/0 or the area share of the source named."""
    predicted = logits.argmax(1)
    if labels.dim() == 1:
        return (predicted == labels).float()
    return ((predicted[:, None] == labels).float() * weights).sum(1)


@dataclass
class UnrotatedClassificationTask(ClassificationTask):
    """The main head beside the rotation task (`main_copies: unrotated`): its loss and accuracy count only
    the 0-degree copies of a rotated batch, so it learns from the images a plain run sees while the shared
    features also serve the rotation head (the multi-task set-up of Hendrycks et al. 2019, "Using
    self-supervised learning can improve model robustness and uncertainty"). A batch without rotations
    (the clean test pass) counts every image."""

    def kept(self, targets: Targets, like: torch.Tensor) -> torch.Tensor:
        rotation = targets.maps.get("rotation")
        if rotation is None:
            return torch.ones(like.shape[0], device=like.device)
        return (rotation == 0).float()

    def loss(self, output: torch.Tensor, targets: Targets) -> torch.Tensor:
        keep = self.kept(targets, output)
        losses = per_sample_cross_entropy(output, self.labels(targets), targets.mix_weights)
        return (losses * keep).sum() / keep.sum().clamp_min(1.0)

    def batch_metrics(self, output: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]:
        keep = self.kept(targets, output)
        correct = per_sample_correct(output, self.labels(targets), targets.mix_weights)
        return {"correct": (correct * keep).sum(), "count": keep.sum()}


@dataclass
class RotationTask(_ClassifierMetrics):
    """RotNet's pretext task (Gidaris et al. 2018): a 4-way head on the pooled features names the quarter
    turns of each copy (`maps["rotation"]`, written by augment/rotation.py)."""

    weight: float
    name: str = "aux"
    label_set: str | None = None
    eval_augmented: bool = True
    eval_views: None = None

    def labels(self, targets: Targets) -> torch.Tensor:
        return targets.maps["rotation"]

    def build_head(self, feature_width: int) -> nn.Module:
        return ClassifierHead(feature_width, NUM_ROTATIONS)


def all_rotations(images: torch.Tensor, targets: Targets) -> tuple[torch.Tensor, Targets]:
    """The clean test views of SLA: every image at 0, 90, 180 and 270 degrees, its copies adjacent."""
    return rotate_copies(images, targets, None, copies="all")


def joint_labels(classes: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """SLA's joint label of (class, rotation): class * 4 + rotation (Lee et al. 2020: one label per pair of
    original label and transformation)."""
    return classes * NUM_ROTATIONS + rotation


def aggregated_logits(joint_output: torch.Tensor, rotation: torch.Tensor, source: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """SLA's aggregated inference (Lee et al. 2020): for every source image and class c, the mean over its
    copies x_k (rotated k quarter turns) of the joint logit z(c, k) on x_k; the class is its argmax.

    `joint_output` (M, C * 4), `rotation` and `source` (M,) as recorded by `rotate_copies`. Returns (M, C)
    logits indexed by source image (rows of indices no copy names are 0) and the copies per row (M,).
    Scatter sums on the device, no host synchronisation.
    """
    copies, joint = joint_output.shape
    per_class = joint_output.float().view(copies, joint // NUM_ROTATIONS, NUM_ROTATIONS)
    own = per_class.gather(2, rotation.view(copies, 1, 1).expand(-1, per_class.shape[1], 1)).squeeze(2)
    summed = torch.zeros_like(own).index_add_(0, source, own)
    counts = torch.zeros(copies, device=own.device).index_add_(0, source, torch.ones(copies, device=own.device))
    return summed / counts.clamp_min(1.0)[:, None], counts


@dataclass
class JointRotationTask:
    """SLA (Lee et al. 2020, "Self-supervised label augmentation via input transformations"): the main head
    classifies num_classes * 4 joint labels (class, rotation) on every copy of a rotated batch.

    Metrics: `acc`, single inference (the class whose joint logit at rotation 0 is largest, on the 0-degree
    copies only); `acc_aggregated`, aggregated inference over the four copies of each image
    (`aggregated_logits`); `joint_acc`, the joint label on every copy. The test pass scores the clean test
    images in all four rotations (`eval_views`), so `test_acc` is the usual clean test accuracy of the
    single-inference classifier. One head replaces main and auxiliary heads, so there is no weight to tune.
    """

    label_set: str
    num_classes: int
    name: str = "main"
    weight: float = 1.0
    eval_augmented: bool = False
    eval_views: Callable[[torch.Tensor, Targets], tuple[torch.Tensor, Targets]] | None = all_rotations

    def build_head(self, feature_width: int) -> nn.Module:
        return ClassifierHead(feature_width, self.num_classes * NUM_ROTATIONS)

    def loss(self, output: torch.Tensor, targets: Targets) -> torch.Tensor:
        labels = joint_labels(targets.classes[self.name], targets.maps["rotation"])
        return F.cross_entropy(output.float(), labels)

    def batch_metrics(self, output: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]:
        classes, rotation = targets.classes[self.name], targets.maps["rotation"]
        upright = (rotation == 0).float()
        single = output.view(output.shape[0], self.num_classes, NUM_ROTATIONS)[:, :, 0].argmax(1)
        aggregated, copies = aggregated_logits(output, rotation, targets.maps["rotation_source"])
        source_classes = torch.zeros_like(classes).scatter_(0, targets.maps["rotation_source"], classes)
        present = (copies > 0).float()
        return {
            "correct": ((single == classes).float() * upright).sum(), "count": upright.sum(),
            "correct_aggregated": ((aggregated.argmax(1) == source_classes).float() * present).sum(),
            "count_aggregated": present.sum(),
            "joint_correct": (output.argmax(1) == joint_labels(classes, rotation)).sum().float(),
            "copies": torch.tensor(float(output.shape[0]), device=output.device),
        }

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return {"acc": sums["correct"] / max(sums["count"], 1.0),
                "acc_aggregated": sums["correct_aggregated"] / max(sums["count_aggregated"], 1.0),
                "joint_acc": sums["joint_correct"] / max(sums["copies"], 1.0)}


NUM_CLASSES = {"gt": None, "superclass": 20, "random": None}  # gt/random: the data set's class count
# A factory's class counts: the data's size per label set (`labelsets.label_set_sizes`), or just the
# number of ground-truth classes, with CIFAR-100's 20 superclasses.
ClassCounts = int | Mapping[str, int]

AuxFactory = Callable[["Spec", ClassCounts], Task]  # (spec, class counts) -> task
AUX_TASKS: dict[str, AuxFactory] = {}


def register_aux_task(kind: str) -> Callable[[AuxFactory], AuxFactory]:
    def register(factory: AuxFactory) -> AuxFactory:
        AUX_TASKS[kind] = factory
        return factory

    return register


def label_set_classes(label_set: str, counts: ClassCounts) -> int:
    """Classes of `label_set`: from the data's sizes per label set, or derived from the gt class count."""
    if isinstance(counts, Mapping):
        return counts[label_set]
    return NUM_CLASSES[label_set] or counts


@register_aux_task("labelset")
def _labelset_task(spec: Spec, counts: ClassCounts) -> Task:
    aux = spec.task.aux
    return ClassificationTask("aux", aux.labels, label_set_classes(aux.labels, counts), aux.weight)


@register_aux_task("crop")
def _crop_task(spec: Spec, counts: ClassCounts) -> Task:
    aux = spec.task.aux
    return CropTask(aux.weight, spec.augment.crop.padding, aux.crop_label)


@register_aux_task("cutout")
def _cutout_task(spec: Spec, counts: ClassCounts) -> Task:
    return SegmentationTask("cutout_mask", 2, spec.task.aux.weight, image_size=spec.data.image_size)


@register_aux_task("ricap")
def _ricap_task(spec: Spec, counts: ClassCounts) -> Task:
    return SegmentationTask("ricap_sources", NUM_RICAP_SOURCES, spec.task.aux.weight,
                            image_size=spec.data.image_size)


@register_aux_task("rotation")
def _rotation_task(spec: Spec, counts: ClassCounts) -> Task:
    return RotationTask(spec.task.aux.weight)


def main_task(spec: Spec, counts: ClassCounts) -> Task:
    """The head on `task.labels`: SLA's joint head, the classifier of unrotated copies beside the rotation
    task, or the plain classifier."""
    labels = spec.task.labels
    classes = label_set_classes(labels, counts)
    aux = spec.task.aux
    if spec.task.joint == "sla":
        return JointRotationTask(labels, classes)
    if aux is not None and aux.kind == "rotation" and aux.main_copies == "unrotated":
        return UnrotatedClassificationTask("main", labels, classes)
    return ClassificationTask("main", labels, classes)


def build_tasks(spec: Spec, counts: ClassCounts) -> list[Task]:
    """The run's tasks: main classification (unless `task.labels: none`), then the auxiliary task.

    `counts`: classes per label set of the run's data (`labelsets.label_set_sizes`), or the number of
    ground-truth classes alone (superclass then means CIFAR-100's 20)."""
    tasks: list[Task] = []
    if spec.task.labels != "none":
        tasks.append(main_task(spec, counts))
    if spec.task.aux is not None:
        tasks.append(AUX_TASKS[spec.task.aux.kind](spec, counts))
    return tasks
