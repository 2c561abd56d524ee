"""What DistributedDataParallel costs: one plain process against `auxcli run --nproc 1` (torchrun, one rank).

Both train the same spec in a fresh temporary folder (own run folder and MLflow store) for `--epochs`
epochs; the figure is the median `images_per_second` (training phase) and `epoch_seconds` (training +
evaluation) over the epochs after the first, read from `history.csv`. With one rank DDP still wraps the
model, registers gradient hooks, all-reduces (a no-op copy) and broadcasts BatchNorm buffers every step,
and the epoch adds the ranks' metric collectives and the replica check: the difference is that overhead.
Start-up (torchrun, rendezvous) is reported as whole-command wall time.

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

from auxcli.data.load import load_data
from auxcli.specfile import load_spec

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "smoke.yaml"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
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
