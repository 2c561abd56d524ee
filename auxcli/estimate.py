"""`auxcli plan --estimate`: each run's and the whole suite's wall time on this machine, before it starts.

time of a run = epochs left x (training images / r + test passes x test images / (3 r)), where r is the
spec's training images/s measured here by a short benchmark of its own train step (backbone, heads,
augmentations, batch size and runtime through `auxcli.train.loop`), and a forward-only test pass costs a
third of a training step (backward ~ 2 x forward). A linear probe trains the head only: its epochs are
costed at the forward rate (3 r). Start-up, data loading, checkpoints and MLflow are not counted.

Measurements are cached per machine in a JSON file keyed by host, device, torch version and what was
measured, so the second `plan --estimate` is instant; `--remeasure` measures again. On CPU the short
benchmark uses batches of at most 32 images (images/s barely depends on the batch size there, and a
PyramidNet-110 batch of 128 takes minutes).
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from auxcli.catalogue import folder_state
from auxcli.plan import plan_order
from auxcli.runfolder import RunFolder
from auxcli.spec import Spec

CPU_BENCH_BATCH = 32
# Training images per class in the full archives; the synthetic archive states its own counts.
FULL_TRAIN_PER_CLASS = {"cifar100": 500, "cifar10": 5000}
FULL_TEST_IMAGES = {"cifar100": 10_000, "cifar10": 10_000}
CLASSES = {"cifar100": 100, "cifar10": 10, "synthetic": 100}


@dataclass(frozen=True)
class RunEstimate:
    spec: str
    seed: int
    status: str  # done | partial | todo
    epochs_left: int
    images_per_second: float
    seconds: float


def split_sizes(spec: Spec) -> tuple[int, int]:
    """Training and test images of the spec's data set, from the spec (an image folder: its file list)."""
    data = spec.data
    if data.dataset == "folder":  # count the image files (nothing is decoded)
        from collections import Counter

        from auxcli.data.folder import list_images
        from auxcli.project import anchored

        listed = list_images(anchored(data.root))
        per_class_counts = Counter(cls for cls, _ in listed["train"]).values()
        return sum(min(n, data.subset or n) for n in per_class_counts), len(listed["test"])
    if data.dataset == "synthetic":
        per_class, test = data.synthetic.train_per_class, data.synthetic.test_per_class * CLASSES["synthetic"]
    else:
        per_class, test = FULL_TRAIN_PER_CLASS[data.dataset], FULL_TEST_IMAGES[data.dataset]
    if data.subset is not None:
        per_class = min(per_class, data.subset)
    return per_class * CLASSES[data.dataset], test


def measurement_key(spec: Spec, batch_size: int) -> str:
    """What a measured rate depends on (the seed, data and schedule do not change images/s)."""
    import torch

    from auxcli.train.runtime import resolve_runtime

    runtime = resolve_runtime(spec.runtime, backbone=spec.model.backbone)
    device = torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else "cpu"
    parts = {"host": platform.node(), "device": device, "torch": torch.__version__,
             "threads": torch.get_num_threads(), "model": spec.model.model_dump(mode="json"),
             # which label set a head learns does not change its cost; whether there is a main head does
             "task": {**spec.task.model_dump(mode="json"), "labels": spec.task.labels != "none"},
             "augment": spec.augment.model_dump(mode="json"),
             "batch": batch_size, "runtime": runtime.params()}
    return json.dumps(parts, sort_keys=True)


class RateCache:
    """Measured images/s per `measurement_key`, in one JSON file (None: nothing is kept)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.rates: dict[str, float] = {}
        if path is not None and path.exists():
            self.rates = _read_rates(path)

    @staticmethod
    def usable(rate: object) -> bool:
        """A rate is a finite positive number of images per second."""
        import math

        return type(rate) in (int, float) and math.isfinite(rate) and rate > 0

    def get(self, key: str) -> float | None:
        rate = self.rates.get(key)
        return float(rate) if self.usable(rate) else None

    def put(self, key: str, rate: float) -> None:
        self.rates[key] = rate
        if self.path is not None:
            from auxcli.runfolder import atomic_write_text

            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.rates, indent=1, sort_keys=True) + "\n")


def _read_rates(path: Path) -> dict[str, float]:
    """The usable entries of a rate cache; a damaged file or entry is named in a warning and measured again."""
    import logging
    import os
    import stat

    log = logging.getLogger(__name__)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > (16 << 20):
            raise ValueError("not a regular file of at most 16 MiB")
        with open(path, "rb") as f:
            data = json.loads(f.read())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        log.warning("ignored the rate cache %s (%s); its rates are measured again (delete it, or --remeasure)",
                    path, exc)
        return {}
    rates = {k: float(v) for k, v in data.items() if isinstance(k, str) and RateCache.usable(v)}
    if len(rates) != len(data):
        log.warning("ignored %d entries of the rate cache %s that are not positive numbers; they are measured again",
                    len(data) - len(rates), path)
    return rates


def measured_rate(spec: Spec, steps: int | None) -> tuple[str, Callable[[], float]]:
    """The cache key of the spec's training rate and a function that measures it."""
    import torch

    from auxcli.bench import train_step_throughput

    on_cuda = spec.runtime.device.startswith("cuda") or (spec.runtime.device == "auto" and torch.cuda.is_available())
    batch = spec.train.batch_size if on_cuda else min(spec.train.batch_size, CPU_BENCH_BATCH)
    steps = steps or (10 if on_cuda else 3)  # a GPU step takes milliseconds: time more of them
    bench = spec.model_copy(update={"train": spec.train.model_copy(update={"batch_size": batch})})
    return measurement_key(spec, batch), lambda: train_step_throughput(bench, steps=steps, repeats=1)


def estimate_runs(specs: Sequence[Spec], *, cache: RateCache, steps: int | None = None,
                  on_measure: Callable[[str], None] = lambda name: None) -> list[RunEstimate]:
    """One estimate per (spec, seed), in run order."""
    from auxcli.tasks import build_tasks

    estimates = []
    for spec in plan_order(specs):
        key, measure = measured_rate(spec, steps)
        rate = cache.get(key)
        if rate is None:
            on_measure(spec.name)
            rate = measure()
            cache.put(key, rate)
        train_images, test_images = split_sizes(spec)
        # the runner's test passes: one for clean-image tasks, one for tasks scored on augmented test images
        # (the class counts do not change which)
        test_passes = len({task.eval_augmented for task in build_tasks(spec, CLASSES.get(spec.data.dataset, 100))})
        probe = spec.transfer is not None and spec.transfer.mode == "linear"
        epoch_seconds = train_images / (3 * rate if probe else rate) + test_passes * test_images / (3 * rate)
        for seed in spec.seeds:
            status = folder_state(spec, seed)
            left = 0 if status == "done" else spec.train.epochs - RunFolder.of(spec, seed).epochs_done()
            estimates.append(RunEstimate(spec.name, seed, status, left, rate, left * epoch_seconds))
    return estimates


def group_of(name: str) -> str:
    """The study table a spec belongs to by its name (`table5-ricap-aux` -> `Table 5`), else the name."""
    found = re.search(r"table(\d+)", name)
    return f"Table {found.group(1)}" if found else name


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_table(estimates: Sequence[RunEstimate], device: str) -> str:
    """One row per run, then one line per study table and the whole suite."""
    from tabulate import tabulate

    rows = [{"spec": e.spec, "seed": e.seed, "status": e.status, "epochs left": e.epochs_left,
             "images/s": f"{e.images_per_second:,.0f}", "estimated": format_duration(e.seconds)}
            for e in estimates]
    lines = [tabulate(rows, headers="keys", tablefmt="simple")]
    groups: dict[str, float] = {}
    for e in estimates:
        groups[group_of(e.spec)] = groups.get(group_of(e.spec), 0.0) + e.seconds
    lines.append("")
    lines += [f"{group}: {format_duration(seconds)}" for group, seconds in groups.items()]
    lines.append(f"whole suite ({len(estimates)} runs, one at a time on {device}): "
                 f"{format_duration(sum(e.seconds for e in estimates))}")
    return "\n".join(lines)


def default_cache_path() -> Path:
    return Path.home() / ".cache" / "auxcli" / "throughput.json"
