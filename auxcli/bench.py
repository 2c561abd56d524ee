"""`auxcli bench`: how much of a run's time goes to the model, and what an auxiliary head costs.

Three measurements on the same machine and process, for one spec:
- model-only: forward, backward and SGD step on a batch already on the device (no data, no augmentation);
- `auxcli run`: a real run (run folder, MLflow, checkpoints); its steady-state cost per epoch is the
  time between two epochs' MLflow records, less the epoch's test pass (`eval_seconds`), so set-up and
  evaluation do not count against the training pipeline;
- with an auxiliary task: train steps with augmentation, with and without the auxiliary head.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from auxcli.augment.pipeline import build_train_augment
from auxcli.spec import Spec
from auxcli.tasks import Task, build_tasks
from auxcli.data.batches import batch_indices
from auxcli.train.loop import SplitTensors, Sums, train_epoch, train_step
from auxcli.train.runtime import resolve_runtime


@dataclass(frozen=True)
class Measurement:
    name: str
    images_per_second: float
    note: str = ""


def _synthetic_split(spec: Spec, tasks: list[Task], images: int, device: torch.device) -> SplitTensors:
    generator = torch.Generator().manual_seed(0)
    size = spec.data.image_size
    pixels = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=generator)
    classes = {t.name: torch.randint(0, 20, (images,), generator=generator) for t in tasks if t.label_set}
    return SplitTensors(pixels.to(device), {k: v.to(device) for k, v in classes.items()})


def train_step_throughput(spec: Spec, *, steps: int, with_augment: bool, repeats: int = 3) -> float:
    """Images/s of train steps through the real loop. Without augmentation, the batches are augmented
    once beforehand and only the steps are timed (the model-only figure)."""
    from auxcli.train.runner import build_network

    runtime = resolve_runtime(spec.runtime)
    torch.manual_seed(0)
    tasks = build_tasks(spec, 100)
    model = build_network(spec, tasks).to(runtime.device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.train.lr, momentum=spec.train.momentum,
                                nesterov=spec.train.nesterov, weight_decay=spec.train.weight_decay)
    batch = spec.train.batch_size
    split = _synthetic_split(spec, tasks, batch * steps, runtime.device)
    mean, std = torch.full((3,), 0.5, device=runtime.device), torch.full((3,), 0.25, device=runtime.device)
    augment = build_train_augment(spec.augment, mean, std)
    generator = torch.Generator(device=runtime.device).manual_seed(0)
    order = torch.arange(batch * steps, device=runtime.device)
    prepared = [augment(*split.batch(index), generator) for index in batch_indices(order, batch)]

    def one_pass() -> None:
        if with_augment:
            train_epoch(model, tasks, optimizer, split, order, batch_size=batch, augment=augment,
                        generator=generator, runtime=runtime, on_batch=lambda n, loss: None)
        else:
            sums = Sums()
            for images, targets in prepared:
                train_step(model, tasks, optimizer, images, targets, sums=sums, runtime=runtime)
            sums.read()  # the same one synchronisation per epoch as the real loop

    rates = []
    for repeat in range(repeats + 1):
        _sync(runtime.device)
        started = time.perf_counter()
        one_pass()
        _sync(runtime.device)
        if repeat:  # the first pass warms up allocators and kernels
            rates.append(batch * steps / (time.perf_counter() - started))
    return statistics.median(rates)


def run_throughput(spec: Spec, *, epochs: int) -> float:
    """Steady-state training images/s of a real `auxcli run` (logging and checkpointing included)."""
    import mlflow

    from auxcli.train.runner import run_seed

    with tempfile.TemporaryDirectory(prefix="auxcli-bench-") as tmp:
        update = {"runtime": spec.runtime.model_copy(update={"runs_dir": str(Path(tmp) / "runs")}),
                  "tracking": spec.tracking.model_copy(update={"uri": f"sqlite:///{tmp}/mlflow.db"}),
                  "train": spec.train.model_copy(update={"epochs": epochs + 1, "milestones": []}),
                  "name": f"{spec.name}-bench"}
        bench_spec = spec.model_copy(update=update)
        outcome = run_seed(bench_spec, 0, force=True)
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        run_id = outcome.run_id
        stamps = sorted((m.step, m.timestamp) for m in client.get_metric_history(run_id, "train_loss"))
        evals = {m.step: m.value for m in client.get_metric_history(run_id, "eval_seconds")}
        train_images = _train_size(bench_spec)
        per_epoch = [(b_ms - a_ms) / 1000 - evals[b_step] for (_, a_ms), (b_step, b_ms) in zip(stamps, stamps[1:])]
        return train_images / statistics.median(per_epoch)


def _train_size(spec: Spec) -> int:
    from auxcli.data.load import load_data

    return len(load_data(spec.data).train)


def benchmark(spec: Spec, *, steps: int, epochs: int) -> list[Measurement]:
    model_only = train_step_throughput(spec, steps=steps, with_augment=False)
    rows = [Measurement("model-only train step", model_only, "batch on the device, no augmentation")]
    end_to_end = run_throughput(spec, epochs=epochs)
    rows.append(Measurement("auxcli run, steady state", end_to_end,
                            f"{end_to_end / model_only:.2f}x model-only (target >= 0.9x)"))
    if spec.task.aux is not None and spec.task.labels != "none":  # aux alone: nothing to compare with
        without = spec.model_copy(update={"task": spec.task.model_copy(update={"aux": None})})
        base = train_step_throughput(without, steps=steps, with_augment=True)
        with_aux = train_step_throughput(spec, steps=steps, with_augment=True)
        rows.append(Measurement("train step + augmentation, no aux head", base))
        rows.append(Measurement(f"train step + augmentation, {spec.task.aux.kind} aux head", with_aux,
                                f"{100 * (base / with_aux - 1):+.1f}% time per step (target <= +10%)"))
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
