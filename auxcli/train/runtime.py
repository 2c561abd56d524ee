"""Where and how a run computes: device, precision, memory format, determinism (`runtime:` spec)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from auxcli.spec import RuntimeSpec


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
    if spec.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    elif on_gpu:
        torch.backends.cudnn.benchmark = True
    return Runtime(device, torch.bfloat16 if precision == "bf16" else None, channels_last)
