"""Rank awareness for torchrun jobs, in one place: the rest of the package asks this module only.

torchrun (`torch.distributed.run`) starts one process per rank with `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
`MASTER_ADDR` and `MASTER_PORT` set. `process_group()` reads them and joins the group: gloo for CPU
tensors, and on a machine with CUDA also nccl for CUDA tensors (`cpu:gloo,cuda:nccl`; each process uses
GPU `LOCAL_RANK`). Without torchrun it yields `SINGLE` and every helper here is the identity, so one
process runs exactly the code it ran before distributed training existed.

What the helpers guarantee:
- `Ranks.shard`: rank r trains on part r of every global batch and evaluates the test batches j with
  j mod world_size == r (`data.batches`, `train.loop`);
- `sum_over_ranks`, `sum_in_order`: metric sums over all ranks, identical on every rank; evaluation sums
  bit-identical to a one-process evaluation;
- `from_main`: rank 0 alone computes (run folder, MLflow, transfer sources), every rank gets the result;
- `agree`: an error on any rank becomes the same error (message, exit code) on every rank, so no rank
  goes on to wait in a collective for a rank that has left; rank 0 prints it, the others stay quiet;
- `share_buffers`: before evaluation every rank holds rank 0's buffers (BatchNorm running statistics), the
  ones `final.pt` saves, so the logged test metrics are those of the saved model;
- `check_replicas`: after every epoch, parameters and buffers are identical on all ranks (gathered checksums).
An error outside `agree` (a crash inside a training step) ends that process; torchrun then stops the
others, and restarts all of them if it was started with `--max-restarts`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from auxcli.data.batches import Shard
from auxcli.errors import AuxcliError, DistributedError, LaunchError
from auxcli.train.loop import add_in_order

T = TypeVar("T")

# Test-only hook, read here and nowhere else: "RANK:EPOCH:MARKER" makes process RANK exit abruptly
# (os._exit(1), as a crash or an OOM kill would) when epoch EPOCH starts, once: it creates MARKER and
# never fires while MARKER exists, so the job torchrun restarts runs through. tests/test_distributed.py.
TEST_EXIT_ENV = "AUXCLI_TEST_EXIT_AT"

AGREED = "_auxcli_agreed_by_all_ranks"  # attribute set on exceptions every rank raised together
JOINED = {"group": False}  # set once this process joined torchrun's process group


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job. `distributed` is True under torchrun, also for one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    def device(self, device: torch.device) -> torch.device:
        """The run's device for this process: CUDA means GPU `LOCAL_RANK` under torchrun."""
        if not self.distributed or device.type != "cuda":
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise LaunchError(f"torchrun started local rank {self.local_rank}, but this machine has "
                              f"{torch.cuda.device_count()} GPUs: start at most one process per GPU "
                              "(--nproc-per-node).")
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` under DistributedDataParallel (gradients averaged over ranks), or `model` itself.
        Rank 0's parameters and buffers are broadcast on wrapping; buffers (BatchNorm running statistics)
        again before every training forward, DDP's default and what the study's runs did."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    # ---------------------------------------------------------------------------------------- collectives

    def sum_over_ranks(self, sums: dict[str, float]) -> dict[str, float]:
        """Each key's sum over all ranks (every rank passes the same keys), the same on every rank."""
        if not self.distributed:
            return sums
        keys = sorted(sums)
        values = torch.tensor([sums[key] for key in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return dict(zip(keys, values.tolist(), strict=True))

    def sum_in_order(self, batches: dict[int, dict[str, float]]) -> dict[str, float]:
        """Per-batch sums from all ranks (each rank holds some batch numbers), added in batch order:
        the same bits as one process adding every batch itself (`loop.add_in_order`)."""
        if not self.distributed:
            return add_in_order(batches)
        everyone: list[dict[int, dict[str, float]] | None] = [None] * self.world_size
        dist.all_gather_object(everyone, batches)
        return add_in_order({number: row for part in everyone for number, row in (part or {}).items()})

    def main_first(self, compute: Callable[[], T]) -> T:
        """`compute()` on rank 0, then (once it succeeded) on the other ranks, each keeping its own result:
        for work that fills a cache the others then read (a download, a generated data set)."""
        result = None
        with self.agree():
            if self.is_main:
                result = compute()
        with self.agree():
            if not self.is_main:
                result = compute()
        return result

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank (any picklable object)."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def from_main(self, compute: Callable[[], T]) -> T:
        """`compute()` on rank 0 only; its result, or its error, on every rank."""
        if not self.distributed:
            return compute()
        result, failure, error = None, None, None
        if self.is_main:
            try:
                result = compute()
            except Exception as exc:
                error, failure = exc, _describe(exc, self.rank)
        result, failure = self.broadcast((result, failure))
        if failure is not None:
            raise _agreed(error) if error is not None else _agreed(DistributedError(*failure, quiet=True))
        return result

    @contextmanager
    def agree(self) -> Iterator[None]:
        """Run the block on every rank; if it raised on any rank, every rank raises the error of the lowest
        failing rank (rank 0 its own exception; the others a quiet `DistributedError`). The block must
        not itself use collectives, or a rank that failed early would leave the others waiting there."""
        if not self.distributed:
            yield
            return
        error: Exception | None = None
        try:
            yield
        except Exception as exc:
            error = exc
        failures: list[tuple[str, int] | None] = [None] * self.world_size
        dist.all_gather_object(failures, _describe(error, self.rank) if error is not None else None)
        first = next(((rank, f) for rank, f in enumerate(failures) if f is not None), None)
        if first is None:
            return
        rank, (message, exit_code) = first
        if error is not None and self.is_main and rank == 0:
            raise _agreed(error)
        raise _agreed(DistributedError(message, exit_code, quiet=not self.is_main)) from error

    def share_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP broadcasts them before each
        training forward only, so after an epoch rank r holds rank 0's statistics updated with its own last
        shard; evaluating with those would score rank r's test batches with a model nobody saved."""
        if not self.distributed:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def check_replicas(self, model: nn.Module, epoch: int) -> None:
        """Raise on every rank unless every rank holds bit-identical parameters and buffers (per-tensor
        float64 sums gathered from all ranks). DDP keeps parameters equal and `share_buffers` the buffers; a
        difference means a broken set-up."""
        if not self.distributed:
            return
        parameters, buffers = list(model.parameters()), list(model.buffers())
        local = torch.stack([t.detach().double().sum() for t in [*parameters, *buffers]]).cpu()
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        split = len(parameters)
        for kind, part in (("parameters", slice(None, split)), ("buffers (BatchNorm statistics)", slice(split, None))):
            differing = [rank for rank, sums in enumerate(gathered) if not torch.equal(sums[part], gathered[0][part])]
            if differing:
                raise _agreed(DistributedError(
                    f"after epoch {epoch} the {kind} of rank(s) {differing} differ from rank 0's; the replicas "
                    "of a DistributedDataParallel run must stay identical. The run is stopped; last.pt holds "
                    f"epoch {epoch - 1}.", 1, quiet=not self.is_main))

    def test_exit_hook(self, epoch: int) -> None:
        """The test-only crash of `TEST_EXIT_ENV` (see there); nothing happens unless it is set."""
        setting = os.environ.get(TEST_EXIT_ENV)
        if not setting or not self.distributed:
            return
        rank, at_epoch, marker = setting.split(":", 2)
        if int(rank) == self.rank and int(at_epoch) == epoch and not Path(marker).exists():
            Path(marker).write_text(f"rank {rank} exited at the start of epoch {epoch}\n")
            os._exit(1)


SINGLE = Ranks()
_current = SINGLE


def current() -> Ranks:
    """The ranks of the running job (`SINGLE` outside `process_group()`)."""
    return _current


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


@contextmanager
def process_group(timeout_minutes: float = 30) -> Iterator[Ranks]:
    """Join torchrun's process group for the block (no-op without torchrun) and leave it cleanly.
    Ranks other than 0 write their standard output to /dev/null: progress and notices come once.

    On success, and on an error every rank raised together, the ranks meet once more before leaving, so
    none exits (and makes torchrun stop the others) while rank 0 still records or prints. Any other
    error leaves at once: the other ranks may be inside a collective that will never complete."""
    global _current
    if not launched_by_torchrun():
        yield SINGLE
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    timeout = timedelta(minutes=timeout_minutes)
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    # torchrun keeps its store across --max-restarts: a restarted attempt must not read the addresses the
    # dead attempt's processes left there (gloo then waits for them forever), hence a prefix per attempt.
    store = dist.PrefixStore(f"auxcli-attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    JOINED["group"] = True
    ranks = Ranks(rank, world_size, int(os.environ.get("LOCAL_RANK", 0)), True)
    _current = ranks
    try:
        with open(os.devnull, "w") as devnull, redirect_stdout(devnull if not ranks.is_main else sys.stdout):
            yield ranks
    except BaseException as exc:
        if getattr(exc, AGREED, False):
            _leave()
        elif isinstance(exc, AuxcliError) and exc.exit_code > 128 and not ranks.is_main:
            exc.quiet = True  # Ctrl-C or SIGTERM reached every rank: rank 0 says so
        raise
    else:
        _leave()
    finally:
        _current = SINGLE


def _leave() -> None:
    # A CPU (gloo) barrier: everyone is done with collectives. No destroy_process_group: once one rank has
    # exited, gloo's teardown in another can abort it (std::terminate, SIGABRT: exit 134 instead of 0 or 2),
    # seen in about one clean-clone test run in three. A process that joined a group ends with os._exit
    # instead (`auxcli.cli.main`), so no gloo destructor runs at all.
    dist.all_reduce(torch.zeros(1))


def joined_a_group() -> bool:
    """Whether this process joined a torchrun process group (it must then end with `os._exit`)."""
    return JOINED["group"]


def _describe(error: BaseException, rank: int) -> tuple[str, int]:
    if isinstance(error, AuxcliError):
        return str(error), error.exit_code
    return f"rank {rank} failed: {type(error).__name__}: {error}", 1


def _agreed(error: Exception) -> Exception:
    setattr(error, AGREED, True)
    return error
