"""Where and how a run computes: device, precision, memory format, determinism (`runtime:` spec).

`deterministic: true` asks PyTorch for reproducible kernels (https://pytorch.org/docs/stable/notes/
randomness.html): `torch.use_deterministic_algorithms(True)` (an op without a deterministic kernel raises
instead of running), `cudnn.deterministic = True`, `cudnn.benchmark = False` (no timing-dependent
algorithm choice) and `CUBLAS_WORKSPACE_CONFIG=:4096:8` (cuBLAS needs it for reproducible results on
CUDA >= 10.2; set before the first cuBLAS call unless the environment already sets it). Every seed is
set per run by `seed_everything`. The flags are recorded in the run's `repro/environment.json`.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import torch

from auxcli.spec import RuntimeSpec


DETERMINISTIC_CUBLAS_WORKSPACE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy and torch (CPU and every CUDA device) with the run's seed."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: full fp32
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def resolve_runtime(spec: RuntimeSpec) -> Runtime:
    """`auto` picks CUDA when present; precision `auto` is bf16 autocast on CUDA and fp32 on CPU."""
    if spec.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(spec.device)
    on_gpu = device.type == "cuda"
    precision = spec.precision if spec.precision != "auto" else ("bf16" if on_gpu else "fp32")
    channels_last = spec.channels_last == "on" or (spec.channels_last == "auto" and on_gpu)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    # Set both ways: one process may run several specs (`auxcli run a.yaml b.yaml`, `auxcli reproduce`).
    torch.use_deterministic_algorithms(spec.deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = spec.deterministic
    torch.backends.cudnn.benchmark = on_gpu and not spec.deterministic
    if spec.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS_WORKSPACE)
    return Runtime(device, torch.bfloat16 if precision == "bf16" else None, channels_last)
