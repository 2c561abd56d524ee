"""One epoch of training and one pass of evaluation, for any set of tasks.

The loop knows heads, losses and metrics only through the `Task` interface: the objective is
`sum(task.weight * task.loss(...))`, and metric sums stay on the device until the epoch ends (one
synchronisation per epoch, not per batch). A transform may return more images than it was given
(rotation copies); losses are weighted by the images that reach the model.

Under torchrun the loop sees its rank only as a `Shard`: training draws every global batch's augmentations
(`data.batches.step_seed`) and trains on the rank's part of it (`data.batches.sharded_batches`,
`augment.targets.Part`), evaluation the test batches j with j mod world_size == rank, and
both return this rank's sums; `train.distributed` adds them up over ranks. Evaluation keeps each batch's
sums apart and adds them in batch order (`add_in_order`), in one process too, so a distributed
evaluation gives bit-identical sums to a one-process one.

With `runtime.compile`, the model is compiled for one batch shape: training drops the last partial batch
(a different subset each epoch, as the order is reshuffled) and evaluation runs a last partial batch
through the eager model, so nothing recompiles; augmentation stays outside the compiled region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from auxcli.augment.targets import Part, Targets, take_images
from auxcli.data.batches import Shard, batch_indices, sharded_batches, step_seed
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

    def stacked(self, keys: Sequence[str]) -> torch.Tensor:
        return torch.stack([self._sums[key] for key in keys])

    def keys(self) -> list[str]:
        return list(self._sums)


def add_in_order(rows: dict[int, dict[str, float]]) -> dict[str, float]:
    """Per-batch sums added in batch-number order in float32, exactly as `Sums` adds batches on the
    device: the same rows give the same bits, whichever process computed which row."""
    if not rows:
        return {}
    keys = list(rows[min(rows)])
    total: torch.Tensor | None = None
    for number in sorted(rows):
        row = torch.tensor([rows[number][key] for key in keys], dtype=torch.float32)
        total = row if total is None else total + row
    return dict(zip(keys, total.tolist(), strict=True))


def _objective(model: nn.Module, tasks: Sequence[Task], images: torch.Tensor, targets: Targets,
               sums: Sums, runtime: Runtime) -> torch.Tensor:
    if runtime.cuda_graphs:  # a new step: the previous replay's outputs may be overwritten
        torch.compiler.cudagraph_mark_step_begin()
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


def train_epoch(model: nn.Module, tasks: Sequence[Task], optimizer: torch.optim.Optimizer,
                split: SplitTensors, order: torch.Tensor, *, batch_size: int, augment: Transform,
                generator: torch.Generator, runtime: Runtime, on_batch: Callable[[int, torch.Tensor], None],
                shard: Shard = Shard()) -> dict[str, float]:
    """Train on `split` in the given order, `batch_size` images per step over all ranks, this rank
    taking its `shard` of each; returns this rank's metric sums (see `Sums`).

    Before step s, `generator` is re-seeded with `step_seed(its seed, s)`; every rank draws the whole global
    batch's augmentations with it and trains on its shard's rows, so a sample's augmentation and RICAP's
    mixing do not depend on the world size (one process: the shard is the batch, nothing is cut). A transform
    with `augments_parts` (`augment.pipeline`) transforms only the shard's images; any other transforms the
    whole global batch, and the shard's rows are kept."""
    sums = Sums()
    order = order.to(split.images.device)
    epoch_seed = generator.initial_seed()
    for step, part in enumerate(sharded_batches(order, batch_size, shard, drop_last=runtime.static_shapes)):
        generator.manual_seed(step_seed(epoch_seed, step))
        share = Part(part.start, part.index.numel(), part.global_size)
        if share.count < share.total and getattr(augment, "augments_parts", False):
            images, targets = augment(*split.batch(part.batch), generator, share)
        else:
            images, targets = take_images(*augment(*split.batch(part.batch), generator), *share)
        loss = train_step(model, tasks, optimizer, images, targets, sums=sums, runtime=runtime,
                          loss_scale=part.loss_scale)
        on_batch(part.global_size, loss)
    return sums.read()


def train_step(model: nn.Module, tasks: Sequence[Task], optimizer: torch.optim.Optimizer, images: torch.Tensor,
               targets: Targets, *, sums: Sums, runtime: Runtime, loss_scale: float = 1.0) -> torch.Tensor:
    """One SGD step on an augmented, normalised batch; returns the (detached, unscaled) objective.
    `loss_scale` weights this rank's share of a global batch (`sharded_batches`)."""
    loss = _objective(model, tasks, runtime.prepare(images), targets, sums, runtime)
    optimizer.zero_grad(set_to_none=True)
    (loss * loss_scale if loss_scale != 1.0 else loss).backward()
    optimizer.step()
    return loss.detach()


def eval_views(tasks: Sequence[Task]) -> Callable[[torch.Tensor, Targets], tuple[torch.Tensor, Targets]] | None:
    """The one test view transform the tasks ask for (`Task.eval_views`), or None; tasks scored in one pass
    see the same images, so two different ones are an error."""
    asked = [task.eval_views for task in tasks if task.eval_views is not None]
    views = list({id(view): view for view in asked}.values())
    if len(views) > 1:
        raise ValueError(f"tasks {[task.name for task in tasks]} ask for different test views; "
                         "evaluate them in separate passes")
    return views[0] if views else None


def evaluate(model: nn.Module, tasks: Sequence[Task], split: SplitTensors, *, batch_size: int,
             transform: Transform, generator: torch.Generator | None, runtime: Runtime,
             eager: nn.Module | None = None) -> dict[str, float]:
    """Metric sums of `tasks` on the whole split, in file order, the model in eval mode. A batch of
    `batch_size` images grows by the tasks' `eval_views` (SLA: 4x) before the forward pass. `eager`, the
    uncompiled model, takes a last batch smaller than `batch_size` when `model` is compiled."""
    return add_in_order(evaluate_batches(model, tasks, split, batch_size=batch_size, transform=transform,
                                         generator=generator, runtime=runtime, eager=eager))


@torch.no_grad()
def evaluate_batches(model: nn.Module, tasks: Sequence[Task], split: SplitTensors, *, batch_size: int,
                     transform: Transform, generator: torch.Generator | None, runtime: Runtime,
                     shard: Shard = Shard(), eager: nn.Module | None = None) -> dict[int, dict[str, float]]:
    """Each batch's metric sums, by batch number, for the batches of the split (in file order) that
    `shard` owns: batch j belongs to rank j mod world_size, so ranks evaluate disjoint parts with no
    padding and no duplicates. A `generator` is re-seeded with its initial seed + j before batch j, so a
    batch's augmentation does not depend on which rank evaluates it. One synchronisation at the end.
    `eager` (the uncompiled model) takes a last partial batch when `model` is compiled (static shapes)."""
    base_seed = generator.initial_seed() if generator is not None else 0
    batches: dict[int, Sums] = {}
    order = torch.arange(len(split), device=split.images.device)
    views = eval_views(tasks)
    for number, index in enumerate(batch_indices(order, batch_size)):
        if number % shard.world_size != shard.rank:
            continue
        if generator is not None:
            generator.manual_seed(base_seed + number)
        sums = batches[number] = Sums()
        images, targets = transform(*split.batch(index), generator)
        if views is not None:
            images, targets = views(images, targets)
        partial = eager is not None and runtime.static_shapes and index.numel() < batch_size
        _objective(eager if partial else model, tasks, runtime.prepare(images), targets, sums, runtime)
    if not batches:
        return {}
    keys = next(iter(batches.values())).keys()
    values = torch.stack([sums.stacked(keys) for sums in batches.values()]).tolist()
    return {number: dict(zip(keys, row, strict=True)) for number, row in zip(batches, values, strict=True)}
