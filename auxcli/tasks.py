"""Heads, losses and metrics, one place per task.

A run has a main task (classification on `task.labels`, unless `none`) and at most one auxiliary task
(`task.aux`). The training loop only ever calls the `Task` interface: it builds each head, sums
`task.weight * task.loss(...)`, and accumulates `task.batch_metrics(...)`; it never asks which task it runs.

Metric sums are accumulated over an epoch (so they are exact over the whole split, not averages of
batch averages) and turned into fractions by `summarize`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from auxcli.augment.targets import Targets
from auxcli.models.heads import ClassifierHead
from auxcli.spec import Spec


class Task(Protocol):
    name: str  # head name, also the key into Targets.classes: "main" or "aux"
    weight: float  # loss weight
    label_set: str | None  # label set the head is trained on (gt | superclass | random), if any
    eval_augmented: bool  # test targets exist only after augmenting test images (fixed generator)

    def build_head(self, feature_width: int) -> nn.Module: ...

    def loss(self, output: torch.Tensor, targets: Targets) -> torch.Tensor: ...

    def batch_metrics(self, output: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]: ...

    def summarize(self, sums: dict[str, float]) -> dict[str, float]: ...


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy for plain labels (N,) or RICAP's mixed labels (N, K) with area weights (N, K)
    (Takahashi et al. 2018: the loss is the area-weighted sum of the K labels' losses)."""
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels)
    log_probs = F.log_softmax(logits.float(), dim=1)
    per_source = -log_probs.gather(1, labels)  # (N, K)
    return (per_source * weights).sum(1).mean()


def mixed_correct(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Number of correct predictions; under mixing a prediction earns the area share of the source it
    names (RICAP's official accuracy)."""
    predicted = logits.argmax(1)
    if labels.dim() == 1:
        return (predicted == labels).sum()
    return ((predicted[:, None] == labels).float() * weights).sum()


@dataclass
class ClassificationTask:
    """Classification on a label set: the main head, and the `labelset` auxiliary task."""

    name: str
    label_set: str
    num_classes: int
    weight: float = 1.0
    eval_augmented: bool = False

    def build_head(self, feature_width: int) -> nn.Module:
        return ClassifierHead(feature_width, self.num_classes)

    def loss(self, output: torch.Tensor, targets: Targets) -> torch.Tensor:
        return mixed_cross_entropy(output, targets.classes[self.name], targets.mix_weights)

    def batch_metrics(self, output: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]:
        labels = targets.classes[self.name]
        return {"correct": mixed_correct(output, labels, targets.mix_weights).float(),
                "count": torch.tensor(float(labels.shape[0]))}

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return {"acc": sums["correct"] / max(sums["count"], 1.0)}


NUM_CLASSES = {"gt": None, "superclass": 20, "random": None}  # gt/random: the data set's class count

AuxFactory = Callable[[Spec, int], Task]  # (spec, number of ground-truth classes) -> task
AUX_TASKS: dict[str, AuxFactory] = {}


def register_aux_task(kind: str) -> Callable[[AuxFactory], AuxFactory]:
    def register(factory: AuxFactory) -> AuxFactory:
        AUX_TASKS[kind] = factory
        return factory

    return register


def label_set_classes(label_set: str, num_gt_classes: int) -> int:
    return NUM_CLASSES[label_set] or num_gt_classes


@register_aux_task("labelset")
def _labelset_task(spec: Spec, num_gt_classes: int) -> Task:
    aux = spec.task.aux
    return ClassificationTask("aux", aux.labels, label_set_classes(aux.labels, num_gt_classes), aux.weight)


def build_tasks(spec: Spec, num_gt_classes: int) -> list[Task]:
    """The run's tasks: main classification (unless `task.labels: none`), then the auxiliary task."""
    tasks: list[Task] = []
    if spec.task.labels != "none":
        tasks.append(ClassificationTask("main", spec.task.labels,
                                        label_set_classes(spec.task.labels, num_gt_classes)))
    if spec.task.aux is not None:
        tasks.append(AUX_TASKS[spec.task.aux.kind](spec, num_gt_classes))
    return tasks
