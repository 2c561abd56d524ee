"""The loop-level half of tests/test_distributed.py: run as one process, or under torchrun with 2 ranks.

`python tests/ddp_worker.py OUT` (one process) and `torchrun --nproc-per-node 2 tests/ddp_worker.py OUT`
each write OUT/rank<r>.pt; the test compares them. Every rank trains and evaluates with the real loop:
- the linear backbone (no BatchNorm), no augmentation: 2 epochs of 201 images, global batch 128 (the
  last batch of 73 splits 37 + 36 between two ranks);
- a depth-8 ResNet: 2 ranks with plain BatchNorm vs one process with ghost batch norm in 2 parts;
- evaluation sums of fixed weights, clean and with a (re-seeded) augmenting transform;
and, with 2 ranks, the helpers' behaviour on errors and on replicas that differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from auxcli.augment.normalize import normalize
from auxcli.augment.pipeline import build_train_augment
from auxcli.data.batches import epoch_permutation
from auxcli.errors import DataError, DistributedError
from auxcli.models.batchnorm import use_ghost_batch_norm
from auxcli.models.heads import ClassifierHead
from auxcli.models.network import Network
from auxcli.models.registry import create_backbone
from auxcli.spec import AugmentSpec, ModelSpec
from auxcli.tasks import ClassificationTask
from auxcli.train.distributed import Ranks, process_group
from auxcli.train.loop import SplitTensors, evaluate_batches, train_epoch
from auxcli.train.runtime import Runtime

RUNTIME = Runtime(torch.device("cpu"), None, False)
MEAN, STD = torch.full((3,), 0.5), torch.full((3,), 0.25)
TASKS = [ClassificationTask("main", "gt", 10)]


def split(images: int, seed: int) -> SplitTensors:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return SplitTensors(pixels, {"main": torch.randint(0, 10, (images,), generator=generator)})


def clean(images, targets, generator):
    return normalize(images, MEAN, STD), targets


def network(backbone: str) -> Network:
    torch.manual_seed(0)
    spec = ModelSpec(backbone=backbone, depth=8, base_width=4) if backbone == "resnet" else ModelSpec(backbone="linear")
    body = create_backbone(spec)
    return Network(body, {"main": ClassifierHead(body.feature_width, 10)})


def train(model: Network, ranks: Ranks, data: SplitTensors, *, epochs: int, batch_size: int) -> dict[str, float]:
    forward = ranks.wrap(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sums = {}
    for epoch in range(1, epochs + 1):
        model.train()
        order = epoch_permutation(len(data), seed=0, epoch=epoch)
        sums = train_epoch(forward, TASKS, optimizer, data, order, batch_size=batch_size, augment=clean,
                           generator=torch.Generator(), runtime=RUNTIME, on_batch=lambda n, loss: None,
                           shard=ranks.shard)
        sums = ranks.sum_over_ranks(sums)
        ranks.share_buffers(model)  # as the runner does before evaluating: rank 0's statistics everywhere
        ranks.check_replicas(model, epoch)
    return sums


def evaluation(ranks: Ranks) -> dict[str, dict[str, float]]:
    model = network("resnet").eval()
    test = split(130, seed=2)  # batches of 50: 50, 50, 30 -> rank 0 takes batches 0 and 2, rank 1 batch 1
    augment = build_train_augment(AugmentSpec(), MEAN, STD)
    out = {}
    for name, transform, generator in (("clean", clean, None),
                                       ("augmented", augment, torch.Generator().manual_seed(7))):
        batches = evaluate_batches(model, TASKS, test, batch_size=50, transform=transform, generator=generator,
                                   runtime=RUNTIME, shard=ranks.shard)
        out[name] = ranks.sum_in_order(batches)
    return out


def helper_behaviour(ranks: Ranks, model: Network) -> dict[str, object]:
    found: dict[str, object] = {"from_main": ranks.from_main(lambda: {"run_id": f"made-by-rank-{ranks.rank}"})}
    try:
        with ranks.agree():
            if ranks.rank == 1:
                raise DataError("rank 1 cannot read the data")
    except DistributedError as exc:
        found["agree"] = (str(exc), exc.exit_code, exc.quiet)
    if ranks.rank == 1:
        with torch.no_grad():
            next(model.parameters()).add_(1e-3)
    try:
        ranks.check_replicas(model, epoch=3)
    except DistributedError as exc:
        found["replicas"] = str(exc)
    resnet = network("resnet")
    if ranks.rank == 1:
        next(resnet.buffers()).add_(1e-3)
    try:
        ranks.check_replicas(resnet, epoch=3)
    except DistributedError as exc:
        found["buffers"] = str(exc)
    return found


def main(out: Path) -> None:
    torch.set_num_threads(1)
    with process_group() as ranks:
        linear = network("linear")
        linear_sums = train(linear, ranks, split(201, seed=1), epochs=2, batch_size=128)
        resnet = use_ghost_batch_norm(network("resnet"), 2 // ranks.world_size)
        train(resnet, ranks, split(128, seed=3), epochs=1, batch_size=64)
        result = {"linear": {k: v.clone() for k, v in linear.state_dict().items()}, "linear_sums": linear_sums,
                  "resnet": resnet.state_dict(),
                  "eval": evaluation(ranks)}
        if ranks.world_size > 1:
            result["helpers"] = helper_behaviour(ranks, linear)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(result, out / f"rank{ranks.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
