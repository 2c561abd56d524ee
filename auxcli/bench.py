"""`auxcli bench`: auxcli's training speed beside the loop users write by hand, and where time goes.

For a spec, or a backbone given by options, on the same generated images in one process
(`auxcli.perf.measure`): (a) the reference loop (PIL + torchvision per-sample transforms + DataLoader,
fp32, eager), (b) auxcli's model-only train step, (c) auxcli's training pipeline end to end, their
ratios, and achieved FLOP/s as a fraction of a stated peak; (a)-(c) use 32x32 images (CIFAR), whatever
the spec's `data.image_size`. With a spec, also:
- `auxcli run`, steady state: a real run (run folder, MLflow, checkpoints) on the spec's data; its cost
  per epoch is the time between two epochs' MLflow records less the epoch's test pass (`eval_seconds`);
- with an auxiliary task: train steps with augmentation, with and without the auxiliary head.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from auxcli.augment.pipeline import build_train_augment
from auxcli.perf.measure import (
    DEFAULT_MODELS,
    Crop,
    ModelChoice,
    Recipe,
    RuntimeChoice,
    format_text,
    median_rate,
    run_bench,
)
from auxcli.spec import Spec
from auxcli.tasks import Task, build_tasks
from auxcli.train.loop import SplitTensors, train_epoch
from auxcli.train.runtime import resolve_runtime


@dataclass(frozen=True)
class Measurement:
    name: str
    images_per_second: float
    note: str = ""


def bench_choices(spec: Spec, device: str | None) -> tuple[ModelChoice, RuntimeChoice, Recipe]:
    """The spec's model, runtime (device overridden) and optimizer/crop/flip recipe for `auxcli.perf`."""
    m, r, t, a = spec.model, spec.runtime, spec.train, spec.augment
    runtime = RuntimeChoice(device=device or r.device, precision=r.precision, channels_last=r.channels_last,
                            compile=r.compile, compile_mode=r.compile_mode, deterministic=r.deterministic,
                            threads=r.threads)
    recipe = Recipe(batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                    weight_decay=t.weight_decay, crop=Crop(a.crop.padding) if a.crop else None, flip=a.flip)
    return ModelChoice(m.backbone, m.depth, m.alpha, m.base_width, m.widen_factor, m.dropout), runtime, recipe


def bench_spec(path: Path | None, overrides: Sequence[str] = (), *, backbone: str | None = None,
               depth: int | None = None, alpha: float | None = None) -> Spec:
    """The spec to measure: the file's (with `--set` overrides), or the study's defaults, with the
    `--backbone/--depth/--alpha` options applied to `model`; a bad option is a `SpecError` naming it.
    Without a spec the depth defaults to 20 (resnet) or 110 (pyramidnet, alpha 270)."""
    from auxcli.specfile import load_spec, validate_spec_data

    data = load_spec(path, overrides).to_plain() if path else {"name": "bench", "model": dict(DEFAULT_MODELS["resnet"])}
    model = dict(data["model"])
    if backbone is not None and backbone != model.get("backbone", "resnet"):
        model = {"backbone": backbone, "base_width": model.get("base_width", 16), **DEFAULT_MODELS.get(backbone, {})}
    model.update({k: v for k, v in (("depth", depth), ("alpha", alpha)) if v is not None})
    locations = {("model", key): (f"--{key}", None, None)
                 for key, value in (("backbone", backbone), ("depth", depth), ("alpha", alpha)) if value is not None}
    return validate_spec_data({**data, "model": model}, locations, str(path) if path else "auxcli bench")


def benchmark(spec: Spec, *, steps: int, epochs: int, device: str | None = None, workers: int | None = None,
              repeats: int = 3) -> dict[str, Any]:
    """The JSON object of `auxcli bench --format json` (see `BenchResult` for the fixed keys), plus
    `run_images_per_second` (None without `epochs`) and, with an auxiliary task,
    `no_aux_head_images_per_second` and `aux_head_images_per_second`."""
    model, runtime, recipe = bench_choices(spec, device)
    result = run_bench(model, runtime, recipe, steps=steps, repeats=repeats, workers=workers).as_json()
    result["run_images_per_second"] = run_throughput(spec, epochs=epochs, device=device) if epochs else None
    if spec.task.aux is not None and spec.task.labels != "none":  # aux alone: nothing to compare with
        without = spec.model_copy(update={"task": spec.task.model_copy(update={"aux": None})})
        result["aux_kind"] = spec.task.aux.kind
        result["no_aux_head_images_per_second"] = train_step_throughput(without, steps=steps, device=device)
        result["aux_head_images_per_second"] = train_step_throughput(spec, steps=steps, device=device)
    return result


def format_report(result: dict[str, Any]) -> str:
    """`format_text` of the three-way comparison, then the spec's extra rows."""
    from auxcli.perf.measure import BenchResult

    fields = BenchResult.__dataclass_fields__
    lines = [format_text(BenchResult(**{k: v for k, v in result.items() if k in fields}))]
    rows = []
    if result.get("run_images_per_second"):
        run = result["run_images_per_second"]
        rows.append(Measurement("auxcli run, steady state", run,
                                f"{run / result['model_only_images_per_second']:.2f}x model-only (target >= 0.9x)"))
    if "aux_head_images_per_second" in result:
        base, with_aux = result["no_aux_head_images_per_second"], result["aux_head_images_per_second"]
        rows.append(Measurement("train step + augmentation, no aux head", base))
        rows.append(Measurement(f"train step + augmentation, {result['aux_kind']} aux head", with_aux,
                                f"{100 * (base / with_aux - 1):+.1f}% time per step (target <= +10%)"))
    if rows:
        from tabulate import tabulate

        lines.append(tabulate([(r.name, f"{r.images_per_second:,.0f}", r.note) for r in rows],
                              headers=["measurement", "images/s", "note"]))
    return "\n\n".join(lines)


def _synthetic_split(spec: Spec, tasks: list[Task], images: int, device: torch.device) -> SplitTensors:
    generator = torch.Generator().manual_seed(0)
    size = spec.data.image_size
    pixels = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=generator)
    classes = {t.name: torch.randint(0, 20, (images,), generator=generator) for t in tasks if t.label_set}
    return SplitTensors(pixels.to(device), {k: v.to(device) for k, v in classes.items()})


def train_step_throughput(spec: Spec, *, steps: int, repeats: int = 3, device: str | None = None) -> float:
    """Images/s of the spec's train steps with its augmentations (all its tasks) through the real loop."""
    from auxcli.train.runner import build_network

    runtime_spec = spec.runtime.model_copy(update={"device": device}) if device else spec.runtime
    runtime = resolve_runtime(runtime_spec, backbone=spec.model.backbone)
    torch.manual_seed(0)
    tasks = build_tasks(spec, 100)
    model = runtime.place(build_network(spec, tasks))
    forward = runtime.compile(model)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.train.lr, momentum=spec.train.momentum,
                                nesterov=spec.train.nesterov, weight_decay=spec.train.weight_decay)
    batch = spec.train.batch_size
    split = _synthetic_split(spec, tasks, batch * steps, runtime.device)
    mean, std = torch.full((3,), 0.5, device=runtime.device), torch.full((3,), 0.25, device=runtime.device)
    augment = build_train_augment(spec.augment, mean, std)
    generator = torch.Generator(device=runtime.device).manual_seed(0)
    order = torch.arange(batch * steps, device=runtime.device)

    def one_pass() -> None:
        train_epoch(forward, tasks, optimizer, split, order, batch_size=batch, augment=augment,
                    generator=generator, runtime=runtime, on_batch=lambda n, loss: None)

    return median_rate(one_pass, len(split), runtime.device, repeats)


def run_throughput(spec: Spec, *, epochs: int, device: str | None = None) -> float:
    """Steady-state training images/s of a real `auxcli run` (logging and checkpointing included)."""
    import mlflow

    from auxcli.train.runner import run_seed

    with tempfile.TemporaryDirectory(prefix="auxcli-bench-") as tmp:
        runtime_update: dict[str, Any] = {"runs_dir": str(Path(tmp) / "runs")}
        if device:
            runtime_update["device"] = device
        update = {"runtime": spec.runtime.model_copy(update=runtime_update),
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
