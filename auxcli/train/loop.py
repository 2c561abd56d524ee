"""One epoch of training and one pass of evaluation, for any set of tasks.

The loop knows heads, losses and metrics only through the `Task` interface: the objective is
`sum(task.weight * task.loss(...))`, and metric sums stay on the device until the epoch ends (one
synchronisation per epoch, not per batch). A transform may return more images than it was given
(rotation copies); losses are weighted by the images that reach the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from auxcli.augment.targets import Targets
from auxcli.data.batches import batch_indices
from auxcli.tasks import Task
from auxcli.train.runtime import Runtime

Transform = Callable[[torch.Tensor, Targets, torch.Generator | None], tuple[torch.Tensor, Targets]]


@dataclass(frozen=True)
class SplitTensors:
    """A whole split on the training device: uint8 images and each head's labels."""

    images: torch.Tensor
    classes: dict[str, torch.Tensor]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, Targets]:
        return self.images[index], Targets({name: labels[index] for name, labels in self.classes.items()})

    def __len__(self) -> int:
        return int(self.images.shape[0])


class Sums:
    """Running sums of tensors on the device, read once at the end."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        self._sums[key] = self._sums[key] + value if key in self._sums else value.clone()

    def read(self) -> dict[str, float]:
        return {key: float(value) for key, value in self._sums.items()}


def _objective(model: nn.Module, tasks: Sequence[Task], images: torch.Tensor, targets: Targets,
               sums: Sums, runtime: Runtime) -> torch.Tensor:
    with runtime.autocast():
        outputs = model(images)
    total = torch.zeros((), device=images.device)
    count = torch.tensor(float(images.shape[0]), device=images.device)
    for task in tasks:
        output = outputs[task.name].float()
        loss = task.loss(output, targets)
        total = total + task.weight * loss
        sums.add(f"{task.name}/loss", loss * count)
        for key, value in task.batch_metrics(output, targets).items():
            sums.add(f"{task.name}/{key}", value)
    sums.add("loss", total * count)
    sums.add("count", count)
    return total


def _prepare(images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if runtime.channels_last else images


def train_epoch(model: nn.Module, tasks: Sequence[Task], optimizer: torch.optim.Optimizer,
                split: SplitTensors, order: torch.Tensor, *, batch_size: int, augment: Transform,
                generator: torch.Generator, runtime: Runtime, on_batch: Callable[[int, torch.Tensor], None]
                ) -> dict[str, float]:
    """Train on `split` in the given order; returns the epoch's metric sums (see `Sums`)."""
    sums = Sums()
    order = order.to(split.images.device)
    for index in batch_indices(order, batch_size):
        images, targets = augment(*split.batch(index), generator)
        loss = train_step(model, tasks, optimizer, images, targets, sums=sums, runtime=runtime)
        on_batch(int(index.numel()), loss)
    return sums.read()


def train_step(model: nn.Module, tasks: Sequence[Task], optimizer: torch.optim.Optimizer, images: torch.Tensor,
               targets: Targets, *, sums: Sums, runtime: Runtime) -> torch.Tensor:
    """One SGD step on an augmented, normalised batch; returns the (detached) objective."""
    loss = _objective(model, tasks, _prepare(images, runtime), targets, sums, runtime)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def eval_views(tasks: Sequence[Task]) -> Callable[[torch.Tensor, Targets], tuple[torch.Tensor, Targets]] | None:
    """The one test view transform the tasks ask for (`Task.eval_views`), or None; tasks scored in one pass
    see the same images, so two different ones are an error."""
    # getattr: a task written before `eval_views` joined the interface is scored on the batch as given
    asked = [view for task in tasks if (view := getattr(task, "eval_views", None)) is not None]
    views = list({id(view): view for view in asked}.values())
    if len(views) > 1:
        raise ValueError(f"tasks {[task.name for task in tasks]} ask for different test views; "
                         "evaluate them in separate passes")
    return views[0] if views else None


@torch.no_grad()
def evaluate(model: nn.Module, tasks: Sequence[Task], split: SplitTensors, *, batch_size: int,
             transform: Transform, generator: torch.Generator | None, runtime: Runtime) -> dict[str, float]:
    """Metric sums of `tasks` on the whole split, in file order, the model in eval mode. A batch of
    `batch_size` images grows by the tasks' `eval_views` (SLA: 4x) before the forward pass."""
    sums = Sums()
    order = torch.arange(len(split), device=split.images.device)
    views = eval_views(tasks)
    for index in batch_indices(order, batch_size):
        images, targets = transform(*split.batch(index), generator)
        if views is not None:
            images, targets = views(images, targets)
        _objective(model, tasks, _prepare(images, runtime), targets, sums, runtime)
    return sums.read()
