"""Which images BatchNorm takes its statistics over: ghost batch norm and SyncBatchNorm.

The study trained on 4 GPUs with batch 128 and plain BatchNorm under DistributedDataParallel, so each
layer normalised over the 32 images of its own GPU, and the running statistics that were saved were
rank 0's (DDP broadcasts rank 0's buffers before every forward). A spec states that as a group size,
`runtime.bn_group: 32`, and gets the same statistics on any number of processes: `GhostBatchNorm2d`
(Hoffer et al. 2017, "Train longer, generalize better", section 4) cuts each process's batch into
`ghost_parts` contiguous groups (`torch.tensor_split`, as the ranks of a torchrun job split a global batch),
normalises each group with its own statistics and updates the running statistics from the first group
only, as rank 0's are. So 1 process with 4 groups, 2 with 2 and 4 with 1 compute the same statistics, up
to floating-point rounding. Rotation copies of one image are adjacent (`augment/rotation.py`), so a group
holds all four rotations of its images, as each of the study's GPUs did. Exact for full batches and for a
last partial batch whose images split evenly into the groups (CIFAR's last 80 of 50,000 with batch 128 in
groups of 32: 4 x 20); otherwise a last batch of rotation copies may be cut between an image's copies.
SyncBatchNorm (`runtime.sync_bn`) is the opposite: statistics over the whole global batch, across
processes (CUDA only).

Both keep `nn.BatchNorm2d`'s state-dict keys, so checkpoints and transfer load either way.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are per part of the batch (see the module docstring)."""

    def __init__(self, num_features: int, parts: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.parts = parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.parts == 1 or x.shape[0] < 2:
            return super().forward(x)
        first, *rest = [piece for piece in x.tensor_split(self.parts) if piece.shape[0]]
        outputs = [super().forward(first)]  # updates the running statistics, as rank 0 does
        outputs += [F.batch_norm(piece, None, None, self.weight, self.bias, True, 0.0, self.eps) for piece in rest]
        return torch.cat(outputs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, parts={self.parts}"


def ghost_parts(bn_group: int | None, batch_size: int, world_size: int = 1) -> int:
    """The groups of `bn_group` images in each of `world_size` processes' share of a global batch of
    `batch_size` (1, plain BatchNorm, when `bn_group` is None). The spec's rules guarantee whole groups."""
    return 1 if bn_group is None else max(1, batch_size // world_size // bn_group)


def use_ghost_batch_norm(model: nn.Module, parts: int) -> nn.Module:
    """Replace every `nn.BatchNorm2d` of `model` by a `GhostBatchNorm2d` with the same state, in place."""
    if parts == 1:
        return model
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            ghost = GhostBatchNorm2d(child.num_features, parts, eps=child.eps, momentum=child.momentum,
                                     affine=child.affine, track_running_stats=child.track_running_stats)
            ghost.load_state_dict(child.state_dict())
            ghost.train(child.training)
            setattr(model, name, ghost.to(next(child.buffers(), torch.empty(0)).device))
        else:
            use_ghost_batch_norm(child, parts)
    return model


def use_sync_batch_norm(model: nn.Module) -> nn.Module:
    """Every BatchNorm layer of `model` as `nn.SyncBatchNorm` (statistics over all processes)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
