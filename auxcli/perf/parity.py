"""Does bf16 autocast change results? ResNet-20 trained in fp32 and in bf16 on the same generated data.

Both precisions train the same seeds with the same data order and augmentations through auxcli's real
loop (`train_epoch`, `evaluate`), the study's optimizer and a step schedule (lr / 10 at 50% and 75% of
the epochs). bf16 stays the CUDA default only if its mean test accuracy is within seed noise of fp32's:
|mean difference| <= 2 x the larger of the two seed standard deviations (and at least 1 point).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from auxcli.augment.pipeline import build_eval_transform, build_train_augment
from auxcli.data.batches import epoch_permutation, epoch_seed
from auxcli.perf.measure import (
    MEAN,
    NUM_CLASSES,
    STD,
    ModelChoice,
    Recipe,
    RuntimeChoice,
    bench_images,
    build_model,
    make_optimizer,
)
from auxcli.tasks import ClassificationTask, Task
from auxcli.train.loop import SplitTensors, evaluate, train_epoch
from auxcli.train.runtime import resolve_runtime


@dataclass(frozen=True)
class ParityRun:
    precision: str
    seed: int
    test_acc: float
    seconds: float


def train_once(model: ModelChoice, runtime_choice: RuntimeChoice, recipe: Recipe, *, seed: int, epochs: int,
               train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]) -> ParityRun:
    runtime = resolve_runtime(runtime_choice, backbone=model.backbone)
    tasks: list[Task] = [ClassificationTask("main", "gt", NUM_CLASSES)]
    network = build_model(model, tasks, runtime, seed=seed)
    optimizer = make_optimizer(network, recipe)
    milestones = [max(1, epochs // 2), max(1, 3 * epochs // 4)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, sorted(set(milestones)), 0.1)
    mean, std = torch.tensor(MEAN, device=runtime.device), torch.tensor(STD, device=runtime.device)
    augment = build_train_augment(recipe, mean, std)
    normalize_only = build_eval_transform(mean, std)
    train_split = SplitTensors(train[0].to(runtime.device), {"main": train[1].to(runtime.device)})
    test_split = SplitTensors(test[0].to(runtime.device), {"main": test[1].to(runtime.device)})
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        network.train()
        generator = torch.Generator(device=runtime.device).manual_seed(epoch_seed(seed, epoch, stream=1))
        train_epoch(network, tasks, optimizer, train_split, epoch_permutation(len(train_split), seed=seed, epoch=epoch),
                    batch_size=recipe.batch_size, augment=augment, generator=generator, runtime=runtime,
                    on_batch=lambda n, loss: None)
        scheduler.step()
    network.eval()
    sums = evaluate(network, tasks, test_split, batch_size=1000, runtime=runtime, generator=None,
                    transform=lambda images, targets, g: (normalize_only(images), targets))
    return ParityRun(runtime.precision, seed, sums["main/correct"] / sums["main/count"],
                     time.perf_counter() - started)


def precision_parity(*, device: str = "auto", depth: int = 20, epochs: int = 15, train_images: int = 20_000,
                     test_images: int = 5_000, seeds: tuple[int, ...] = (0, 1)) -> tuple[list[ParityRun], str]:
    """fp32 and bf16 runs per seed, and a one-line verdict."""
    model = ModelChoice("resnet", depth)
    train, test = bench_images(train_images, seed=1), bench_images(test_images, seed=2)
    runs = [train_once(model, RuntimeChoice(device=device, precision=precision), Recipe(), seed=seed,
                       epochs=epochs, train=train, test=test)
            for precision in ("fp32", "bf16") for seed in seeds]
    return runs, verdict(runs)


def verdict(runs: list[ParityRun]) -> str:
    acc = {p: [r.test_acc for r in runs if r.precision == p] for p in ("fp32", "bf16")}
    mean = {p: statistics.fmean(v) for p, v in acc.items()}
    spread = max((statistics.stdev(v) if len(v) > 1 else 0.0) for v in acc.values())
    tolerance = max(2 * spread, 0.01)
    diff = mean["bf16"] - mean["fp32"]
    same = abs(diff) <= tolerance
    return (f"test accuracy fp32 {100 * mean['fp32']:.2f}%, bf16 {100 * mean['bf16']:.2f}% "
            f"(difference {100 * diff:+.2f} points, tolerance {100 * tolerance:.2f}): "
            + ("the same within seed noise" if same else "DIFFERENT beyond seed noise"))

