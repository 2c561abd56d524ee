"""What DistributedDataParallel costs: one plain process against `auxcli run --nproc 1` (torchrun, one rank).

Both train the same spec in a fresh temporary folder (own run folder and MLflow store) for `--epochs`
epochs; the figure is the median `images_per_second` (training phase) and `epoch_seconds` (training +
evaluation) over the epochs after the first, read from `history.csv`. With one rank DDP still wraps the
model, registers gradient hooks, all-reduces (a no-op copy) and broadcasts BatchNorm buffers every step,
and the epoch adds the ranks' metric collectives and the replica check: the difference is that overhead.
Start-up (torchrun, rendezvous) is reported as whole-command wall time.

Then, in this process, what a rank of a `--world-size`-process job spends per step on augmentation with
draws for the global batch (issue 20: re-seed from (seed, epoch, step), draw for all `train.batch_size`
images, transform the rank's share; with RICAP the whole batch) against augmenting only its share from a
generator of its own (before), on the spec's augmentations and device; median over repeated passes of
`--draw-steps` steps.

    python benchmarks/ddp_overhead.py [SPEC] [--epochs 4] [--set runtime.device=cuda ...]

Runs on CPU too (gloo); on a GPU machine pass `--set runtime.device=cuda` to measure nccl.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from auxcli.augment.pipeline import build_train_augment
from auxcli.augment.targets import Part, Targets
from auxcli.data.batches import step_seed
from auxcli.data.load import load_data
from auxcli.spec import Spec
from auxcli.specfile import load_spec
from auxcli.train.runtime import resolve_runtime

ROOT = Path(__file__).resolve().parents[1]


def measure(spec: Path, epochs: int, overrides: list[str], nproc: int | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="auxcli-ddp-bench-") as tmp:
        args = [sys.executable, "-m", "auxcli", "run", str(spec.resolve()), "--set", f"train.epochs={epochs}",
                "--set", "train.milestones=[]"]
        for override in overrides:
            args += ["--set", override]
        if nproc is not None:
            args += ["--nproc", str(nproc)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env.pop("MLFLOW_TRACKING_URI", None)
        started = time.perf_counter()
        subprocess.run(args, cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        history = next(Path(tmp, "runs").glob("*/seed-*/history.csv"))
        with history.open() as f:
            rows = list(csv.DictReader(f))[1:]  # the first epoch warms up
    return {"images_per_second": statistics.median(float(r["images_per_second"]) for r in rows),
            "epoch_seconds": statistics.median(float(r["epoch_seconds"]) for r in rows),
            "command_seconds": wall}


def draw_cost(spec: Spec, world_size: int, steps: int) -> dict[str, float]:
    """Milliseconds per step one rank spends augmenting: its share alone (before) and the global batch with
    the step's seed, keeping its share (now)."""
    runtime = resolve_runtime(spec.runtime, backbone=spec.model.backbone)
    device, batch, size = runtime.device, spec.train.batch_size, spec.data.image_size
    share = batch // world_size
    half = torch.full((3,), 0.5, device=device)
    augment = build_train_augment(spec.augment, half, half / 2)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 100, (batch,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def before(step: int) -> torch.Tensor:
        return augment(images[:share], Targets({"main": labels[:share]}), generator)[0]

    def now(step: int) -> torch.Tensor:
        generator.manual_seed(step_seed(12345, step))  # as train.loop.train_epoch does for a rank's share
        return augment(images, Targets({"main": labels}), generator, Part(0, share, batch))[0]

    def timed(step_fn) -> float:
        passes = []
        for _ in range(5):
            started = time.perf_counter()
            for step in range(steps):
                out = step_fn(step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            passes.append((time.perf_counter() - started) / steps * 1000)
            del out
        return statistics.median(passes[1:])  # the first pass warms up

    return {"before_ms": timed(before), "now_ms": timed(now)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "smoke.yaml"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--world-size", type=int, default=4, help="ranks of the augmentation comparison")
    parser.add_argument("--draw-steps", type=int, default=50)
    parser.add_argument("--draw-only", action="store_true", help="skip the two runs; only the augmentation figures")
    args = parser.parse_args()
    spec = load_spec(args.spec, args.overrides)
    cost = draw_cost(spec, args.world_size, args.draw_steps)
    print(f"augmentation per step and rank, {args.world_size} ranks x {spec.train.batch_size // args.world_size} "
          f"images: own share {cost['before_ms']:.2f} ms, global batch's draws {cost['now_ms']:.2f} ms")
    if args.draw_only:
        return
    with tempfile.TemporaryDirectory(prefix="auxcli-ddp-bench-data-") as data:
        overrides = [f"data.root={data}", *args.overrides]
        load_data(load_spec(args.spec, overrides).data)  # generate (or download) once, outside the timing
        plain = measure(Path(args.spec), args.epochs, overrides, nproc=None)
        ddp = measure(Path(args.spec), args.epochs, overrides, nproc=1)
    print(f"{'':<28}{'images/s':>10}{'epoch s':>10}{'command s':>11}")
    for name, row in (("1 process", plain), ("--nproc 1 (torchrun, DDP)", ddp)):
        print(f"{name:<28}{row['images_per_second']:>10.0f}{row['epoch_seconds']:>10.2f}{row['command_seconds']:>11.1f}")
    print(f"DDP overhead: {100 * (plain['images_per_second'] / ddp['images_per_second'] - 1):+.1f}% time per "
          f"training image, {ddp['command_seconds'] - plain['command_seconds']:+.1f} s start-up and teardown")


if __name__ == "__main__":
    main()
