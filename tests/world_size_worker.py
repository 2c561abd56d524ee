"""The torchrun half of tests/test_world_sizes.py: `torchrun --nproc-per-node W tests/world_size_worker.py OUT DATA`.

Run in a fresh working directory (its run folders and MLflow store), every rank trains the six augmentation
set-ups below with the real `auxcli run` code (`run_seed`) for 2 epochs of 100 generated images, global batch
20 in BatchNorm groups of 5 (1 process: 4 groups; 2: 2 per rank; 4: 1 per rank), and writes
OUT/rank<r>.pt: per set-up, per training step, a hash of the bytes of every image row that reached this
rank's model, and this rank's loss. The test compares them across world sizes, with the run folders' metrics.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import torch

from auxcli.spec import Spec
from auxcli.train import loop
from auxcli.train.distributed import process_group
from auxcli.train.runner import run_seed

CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {"augment": {"crop": None, "flip": False}},
    "crop": {"task": {"aux": {"kind": "crop"}}},
    "cutout": {"task": {"aux": {"kind": "cutout"}}, "augment": {"cutout": {"size": 16}}},
    "ricap": {"task": {"aux": {"kind": "ricap"}}, "augment": {"ricap": {"beta": 0.3}}},
    "rotation": {"task": {"aux": {"kind": "rotation"}}, "augment": {"rotation": {"copies": "all"}}},
    "sla": {"task": {"joint": "sla"}, "augment": {"rotation": {"copies": "all"}}},
}


def spec(name: str, data_root: str) -> Spec:
    return Spec(name=name, seeds=[0], **{
        "data": {"dataset": "synthetic", "root": data_root, "synthetic": {"train_per_class": 1, "test_per_class": 1}},
        "model": {"backbone": "resnet", "depth": 8, "base_width": 4},
        # lr 0.02: float rounding, which differs with the world size, grows less from step to step than at 0.1
        "train": {"epochs": 2, "batch_size": 20, "lr": 0.02, "milestones": [1], "eval_batch_size": 40},
        "runtime": {"device": "cpu", "threads": 1, "bn_group": 5},
        **CONFIGS[name]})


def main(out: Path, data_root: str) -> None:
    steps: list[dict[str, Any]] = []
    train_step = loop.train_step

    def recording_step(model, tasks, optimizer, images, targets, **kwargs):
        rows = [hashlib.blake2b(row.numpy().tobytes(), digest_size=8).hexdigest()
                for row in images.detach().contiguous().cpu()]
        loss = train_step(model, tasks, optimizer, images, targets, **kwargs)
        steps.append({"rows": rows, "loss": loss.double()})
        return loss

    loop.train_step = recording_step  # train_epoch looks it up in the module at every step
    with process_group() as ranks:
        found = {}
        for name in CONFIGS:
            steps.clear()
            run_seed(spec(name, data_root), 0)
            found[name] = list(steps)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(found, out / f"rank{ranks.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no gloo teardown, which can abort a process whose peers have left (auxcli.cli.main)
