"""Images/s of (a) the reference loop, (b) auxcli's model-only train step and (c) auxcli's training
pipeline end to end, on the same generated images, model, optimizer and batch size, in one process.

(b) times `auxcli.train.loop.train_step` on batches augmented beforehand and already on the device;
(c) times `auxcli.train.loop.train_epoch`, what `auxcli run` does per epoch (data resident on the
device, one permutation, batched augmentation, train steps; the test pass and checkpoints are not
counted). Each figure is the median of `repeats` timed passes after one warm-up pass (allocators, cuDNN
autotuning, compilation), with CUDA synchronised around every timed pass. Achieved FLOP/s are
(c) x the training FLOPs of one image, 3 x the forward FLOPs (backward ~ 2 x forward; multiply-add = 2).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from auxcli.augment.pipeline import build_train_augment
from auxcli.data.batches import batch_indices, epoch_permutation, images_in_batches
from auxcli.data.synthetic import render_images
from auxcli.models.network import Network
from auxcli.models.registry import create_backbone, forward_flops
from auxcli.perf.peak import cpu_name, peak_flops, synchronize
from auxcli.perf.reference import reference_epoch, reference_loader
from auxcli.tasks import ClassificationTask, Task
from auxcli.train.loop import SplitTensors, Sums, train_epoch, train_step
from auxcli.train.runtime import Runtime, resolve_runtime

MEAN = [0.507, 0.487, 0.441]  # CIFAR-100 training-set statistics (0..1 units)
STD = [0.267, 0.256, 0.276]
NUM_CLASSES = 100


# What `auxcli bench` and `python -m auxcli.perf bench` measure when given only a backbone: the study's
# ResNet-20 default and PyramidNet-110 (alpha 270).
DEFAULT_MODELS: dict[str, dict[str, int | float]] = {"resnet": {"depth": 20},
                                                     "pyramidnet": {"depth": 110, "alpha": 270.0}}


@dataclass(frozen=True)
class ModelChoice:
    """The fields of `auxcli.spec.ModelSpec` that build a backbone."""

    backbone: str = "resnet"
    depth: int | None = 20
    alpha: float | None = None
    base_width: int = 16
    widen_factor: int | None = None  # wrn
    dropout: float = 0.0  # wrn

    @property
    def label(self) -> str:
        if self.backbone == "linear":
            return "linear"
        alpha = f"-a{self.alpha:g}" if self.alpha is not None else ""
        return f"{self.backbone}-{self.depth}{alpha}" + (f"-w{self.base_width}" if self.base_width != 16 else "")


@dataclass(frozen=True)
class RuntimeChoice:
    """The fields of `auxcli.spec.RuntimeSpec` that `resolve_runtime` reads."""

    device: str = "auto"
    precision: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    compile_mode: str = "auto"
    deterministic: bool = False
    threads: int | None = None


@dataclass(frozen=True)
class Crop:
    padding: int = 4


@dataclass(frozen=True)
class Recipe:
    """The study's optimizer and augmentation (`auxcli.spec` defaults): what every peer trains with."""

    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    # The fields of AugmentSpec that `build_train_augment` reads (a new augmentation adds its field here,
    # off; tests/test_perf.py fails until it does).
    crop: Crop | None = field(default_factory=Crop)
    flip: bool = True
    cutout: None = None
    ricap: None = None
    rotation: None = None


@dataclass(frozen=True)
class BenchResult:
    """One `auxcli bench` measurement; `as_json` keys are a contract (add, never rename)."""

    device: str
    device_name: str
    backbone: str
    depth: int | None
    alpha: float | None
    batch_size: int
    steps: int
    precision: str
    memory_format: str
    compile_mode: str
    threads: int
    workers: int
    reference_images_per_second: float | None
    model_only_images_per_second: float
    end_to_end_images_per_second: float
    train_flops_per_image: float
    peak_flops: float
    peak_source: str
    achieved_flops: float
    achieved_fraction: float
    end_to_end_vs_reference: float | None
    end_to_end_vs_model_only: float
    torch_version: str = torch.__version__
    host: str = platform.node()

    def as_json(self) -> dict:
        return asdict(self)


def bench_images(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` generated 32x32 images (the synthetic data set's renderer) and their fine labels."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, NUM_CLASSES, size=count)
    return torch.from_numpy(render_images(labels, rng)), torch.from_numpy(labels).long()


def build_model(model: ModelChoice, tasks: list[Task], runtime: Runtime, seed: int = 0) -> Network:
    torch.manual_seed(seed)
    backbone = create_backbone(model)  # duck-typed ModelSpec
    network = Network(backbone, {task.name: task.build_head(backbone.feature_width) for task in tasks})
    return runtime.place(network)


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                           weight_decay=recipe.weight_decay)


def train_flops_per_image(model: ModelChoice) -> float:
    """3 x the forward FLOPs of one image with a 100-way head (built on the meta device)."""
    tasks = [ClassificationTask("main", "gt", NUM_CLASSES)]
    with torch.device("meta"):
        backbone = create_backbone(model)
        network = Network(backbone, {t.name: t.build_head(backbone.feature_width) for t in tasks})
    return 3.0 * forward_flops(network)


def median_rate(one_pass: Callable[[], None], images: int, device: torch.device, repeats: int) -> float:
    """Median images/s of `repeats` timed passes after one untimed warm-up pass."""
    rates = []
    for repeat in range(repeats + 1):
        synchronize(device)
        started = time.perf_counter()
        one_pass()
        synchronize(device)
        if repeat:
            rates.append(images / (time.perf_counter() - started))
    return statistics.median(rates)


def model_only_rate(model: ModelChoice, recipe: Recipe, runtime: Runtime, images: torch.Tensor,
                    labels: torch.Tensor, repeats: int) -> float:
    """(b): auxcli's train step on batches augmented once beforehand, already on the device."""
    tasks: list[Task] = [ClassificationTask("main", "gt", NUM_CLASSES)]
    network = build_model(model, tasks, runtime)
    forward = runtime.compile(network)
    optimizer = make_optimizer(network, recipe)
    split = SplitTensors(images.to(runtime.device), {"main": labels.to(runtime.device)})
    augment = build_train_augment(recipe, torch.tensor(MEAN), torch.tensor(STD))
    generator = torch.Generator(device=runtime.device).manual_seed(0)
    order = torch.arange(len(split), device=runtime.device)
    batches = [augment(*split.batch(index), generator)
               for index in batch_indices(order, recipe.batch_size, drop_last=runtime.static_shapes)]
    network.train()

    def one_pass() -> None:
        sums = Sums()
        for batch, targets in batches:
            train_step(forward, tasks, optimizer, batch, targets, sums=sums, runtime=runtime)
        sums.read()  # the one synchronisation per epoch of the real loop

    return median_rate(one_pass, sum(len(b) for b, _ in batches), runtime.device, repeats)


def end_to_end_rate(model: ModelChoice, recipe: Recipe, runtime: Runtime, images: torch.Tensor,
                    labels: torch.Tensor, repeats: int, seed: int = 0) -> float:
    """(c): `train_epoch` as `auxcli run` calls it: a new permutation and augmentation every pass."""
    tasks: list[Task] = [ClassificationTask("main", "gt", NUM_CLASSES)]
    network = build_model(model, tasks, runtime)
    forward = runtime.compile(network)
    optimizer = make_optimizer(network, recipe)
    split = SplitTensors(images.to(runtime.device), {"main": labels.to(runtime.device)})
    augment = build_train_augment(recipe, torch.tensor(MEAN, device=runtime.device),
                                  torch.tensor(STD, device=runtime.device))
    network.train()
    epoch = iter(range(1, 1_000_000))
    trained = images_in_batches(len(split), recipe.batch_size, runtime.static_shapes)

    def one_pass() -> None:
        e = next(epoch)
        generator = torch.Generator(device=runtime.device).manual_seed(seed * 1000 + e)
        train_epoch(forward, tasks, optimizer, split, epoch_permutation(len(split), seed=seed, epoch=e),
                    batch_size=recipe.batch_size, augment=augment, generator=generator, runtime=runtime,
                    on_batch=lambda n, loss: None)

    return median_rate(one_pass, trained, runtime.device, repeats)


def reference_rate(model: ModelChoice, recipe: Recipe, device: torch.device, images: torch.Tensor,
                   labels: torch.Tensor, repeats: int, workers: int) -> float:
    """(a): the common loop (`reference.py`) in fp32, eager, contiguous memory format."""
    eager = Runtime(device, None, False)
    network = build_model(model, [ClassificationTask("main", "gt", NUM_CLASSES)], eager)
    optimizer = make_optimizer(network, recipe)
    loader = reference_loader(images, labels, batch_size=recipe.batch_size, workers=workers, mean=MEAN,
                              std=STD, padding=recipe.crop.padding if recipe.crop else 0,
                              pin_memory=device.type == "cuda")
    return median_rate(lambda: reference_epoch(network, optimizer, loader, device), len(images), device, repeats)


def default_workers() -> int:
    """DataLoader workers of the reference loop: one per core, at most 8 (common practice)."""
    return max(1, min(8, os.cpu_count() or 1))


def run_bench(model: ModelChoice, runtime_choice: RuntimeChoice, recipe: Recipe = Recipe(), *, steps: int = 20,
              repeats: int = 3, workers: int | None = None, reference: bool = True) -> BenchResult:
    """The three measurements on `steps` batches of generated images; see the module docstring."""
    runtime = resolve_runtime(runtime_choice, backbone=model.backbone)
    workers = default_workers() if workers is None else workers
    images, labels = bench_images(recipe.batch_size * steps)
    ref = reference_rate(model, recipe, runtime.device, images, labels, repeats, workers) if reference else None
    model_only = model_only_rate(model, recipe, runtime, images, labels, repeats)
    end_to_end = end_to_end_rate(model, recipe, runtime, images, labels, repeats)
    flops = train_flops_per_image(model)
    peak = peak_flops(runtime.device)
    device_name = torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else cpu_name()
    return BenchResult(
        device=str(runtime.device), device_name=device_name, backbone=model.backbone, depth=model.depth,
        alpha=model.alpha, batch_size=recipe.batch_size, steps=steps, precision=runtime.precision,
        memory_format=runtime.memory_format, compile_mode=runtime.compile_mode or "none",
        threads=torch.get_num_threads(), workers=workers, reference_images_per_second=ref,
        model_only_images_per_second=model_only, end_to_end_images_per_second=end_to_end,
        train_flops_per_image=flops, peak_flops=peak.flops, peak_source=peak.source,
        achieved_flops=end_to_end * flops, achieved_fraction=end_to_end * flops / peak.flops,
        end_to_end_vs_reference=end_to_end / ref if ref else None, end_to_end_vs_model_only=end_to_end / model_only)


def format_text(result: BenchResult) -> str:
    """The human-readable report of one measurement."""
    r = result
    ref = r.reference_images_per_second
    rates = [(f"(a) reference loop (PIL + torchvision, DataLoader {r.workers} workers, fp32 eager)", ref),
             ("(b) auxcli model-only train step", r.model_only_images_per_second),
             ("(c) auxcli end to end (train_epoch: augment on the device + steps)", r.end_to_end_images_per_second)]
    lines = [f"{r.backbone} depth {r.depth}" + (f" alpha {r.alpha:g}" if r.alpha is not None else "")
             + f", batch {r.batch_size}, {r.steps} steps per pass; {r.device} ({r.device_name}), {r.precision}, "
             f"{r.memory_format}, compile {r.compile_mode}, {r.threads} threads, torch {r.torch_version}"]
    lines += [f"  {label:<78} " + (f"{rate:12,.0f} images/s" if rate else "   (skipped)") for label, rate in rates]
    if r.end_to_end_vs_reference is not None:
        lines.append(f"  (c)/(a) {r.end_to_end_vs_reference:.2f}x the reference loop")
    lines.append(f"  (c)/(b) {r.end_to_end_vs_model_only:.2f}x the model-only step")
    lines.append(f"  achieved {_flop_rate(r.achieved_flops)} = {100 * r.achieved_fraction:.1f}% of "
                 f"{_flop_rate(r.peak_flops)} peak ({r.peak_source}); "
                 f"{r.train_flops_per_image / 1e9:.3f} GFLOP per training image (3 x forward)")
    return "\n".join(lines)


def _flop_rate(flops: float) -> str:
    return f"{flops / 1e12:.1f} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:.1f} GFLOP/s"
