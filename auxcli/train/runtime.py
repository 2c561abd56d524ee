"""Where and how a run computes: device, precision, memory format, compilation, determinism (`runtime:`).

`resolve_runtime` turns the spec's `auto` values into what this machine runs, and `Runtime.params`
names the resolved values, which every run records in MLflow (`runtime.resolved.*`): the spec's
`auto` says what was asked, these what ran.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from auxcli.errors import Problem, SpecError

if TYPE_CHECKING:
    from auxcli.spec import RuntimeSpec

# Backbones without convolutions: channels_last changes nothing but the copies it costs.
NO_CONV_BACKBONES = frozenset({"linear"})
# torch.compile modes that capture CUDA graphs (on a CUDA device; inductor skips them on CPU).
CUDA_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})


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
    compile_mode: str | None = None  # None: eager; else the mode given to torch.compile

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype == torch.bfloat16 else "fp32"

    @property
    def memory_format(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    @property
    def static_shapes(self) -> bool:
        """Compiled code is specialised to one batch shape: the loop then drops the last partial training
        batch and evaluates a last partial test batch eagerly, so no shape change recompiles."""
        return self.compile_mode is not None

    @property
    def cuda_graphs(self) -> bool:
        return self.compile_mode in CUDA_GRAPH_MODES and self.device.type == "cuda"

    def params(self) -> dict[str, str]:
        """The resolved values as MLflow params (never `auto`)."""
        return {"runtime.resolved.device": str(self.device), "runtime.resolved.precision": self.precision,
                "runtime.resolved.memory_format": self.memory_format,
                "runtime.resolved.compile_mode": self.compile_mode or "none"}

    def compile(self, model: nn.Module) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        """The model's forward (and, through AOTAutograd, its backward) compiled with static shapes, or the
        model itself. Augmentation, losses and the optimizer step stay outside the compiled region."""
        if self.compile_mode is None:
            return model
        return torch.compile(model, mode=self.compile_mode, dynamic=False)

    def place(self, model: nn.Module) -> nn.Module:
        """The model on the device, in the memory format its inputs will have (`prepare`)."""
        return model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


def channels_last_auto(device_type: str, backbone: str | None) -> bool:
    """`channels_last: auto`: on for convolutional backbones on CUDA (cuDNN's NHWC kernels, tensor cores)
    and on CPU (oneDNN's blocked NHWC convolutions: ResNet-20 on 2 cores trained 625 images/s with it, 455
    without; `python -m auxcli.perf bench --channels-last on/off` measures a machine); off for backbones
    without convolutions and on other devices (not measured)."""
    if backbone in NO_CONV_BACKBONES:
        return False
    return device_type in ("cuda", "cpu")


def compile_mode_auto(device_type: str) -> str:
    """`compile_mode: auto`: CUDA graphs on CUDA (`reduce-overhead`: ResNet-110's many small kernels are
    launch-bound; benchmarks/gpu.sh compares it with `max-autotune`), inductor's default elsewhere."""
    return "reduce-overhead" if device_type == "cuda" else "default"


def threads_per_process(device: str, threads: int | None, *, processes: int, cores: int,
                        cuda_available: bool) -> int | None:
    """CPU threads for one of `processes` runs at once on this machine (`run --concurrent`, `perf sharing`):
    an equal share of `cores` for a run on the CPU that leaves `threads` to torch; None (torch's default,
    or the given `threads`) on a GPU. K CPU runs that each take every core fight over them."""
    on_cpu = device == "cpu" or (device == "auto" and not cuda_available)
    if not on_cpu or threads is not None:
        return None
    return max(1, cores // processes)


def device_problem(device: str) -> str | None:
    """Why `runtime.device` cannot be used on this machine (None when it can): `cuda` without a CUDA
    device, `cuda:N` beyond the devices there, `mps` without Apple's Metal backend."""
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if count == 0:
            return f"{device!r} was asked for, but torch sees no CUDA device here"
        if index >= count:
            return f"{device!r} was asked for, but torch sees {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return "'mps' was asked for, but the Metal (MPS) backend is not available here"
    return None


def check_devices(specs: list[tuple[object, object]]) -> None:
    """`SpecError` naming each (file, spec) whose `runtime.device` this machine lacks, before anything runs."""
    problems = [Problem(str(file), None, None, "runtime.device", problem, "auto or cpu on this machine")
                for file, spec in specs if (problem := device_problem(spec.runtime.device))]
    if problems:
        raise SpecError(problems)


def _check_available(device: torch.device) -> None:
    from auxcli.errors import DeviceError

    problem = device_problem(str(device))
    if problem:
        raise DeviceError(f"runtime.device: {problem}; allowed: auto, cpu.")


def resolve_runtime(spec: RuntimeSpec, backbone: str | None = None) -> Runtime:
    """`auto` picks CUDA when present; precision `auto` is bf16 autocast on CUDA and fp32 on CPU;
    channels_last and compile_mode `auto` per device (and backbone), see the functions above.

    `spec` is a `RuntimeSpec` or any object with its fields (`auxcli.perf` runs without pydantic).
    """
    if spec.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(spec.device)
    _check_available(device)
    on_gpu = device.type == "cuda"
    precision = spec.precision if spec.precision != "auto" else ("bf16" if on_gpu else "fp32")
    channels_last = spec.channels_last == "on" or (spec.channels_last == "auto"
                                                   and channels_last_auto(device.type, backbone))
    compile_mode = None
    if spec.compile:
        compile_mode = compile_mode_auto(device.type) if spec.compile_mode == "auto" else spec.compile_mode
    if spec.threads:
        torch.set_num_threads(spec.threads)
    # Set both ways: one process may run several specs (`auxcli run a.yaml b.yaml`, `auxcli reproduce`).
    torch.use_deterministic_algorithms(spec.deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = spec.deterministic
    torch.backends.cudnn.benchmark = on_gpu and not spec.deterministic
    if spec.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS_WORKSPACE)
    return Runtime(device, torch.bfloat16 if precision == "bf16" else None, channels_last, compile_mode)
