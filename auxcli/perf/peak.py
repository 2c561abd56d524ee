"""The peak FLOP/s that achieved FLOP/s are a fraction of.

GPU: dense bf16 tensor-core peaks from NVIDIA's datasheets, keyed by `torch.cuda.get_device_name()`
(the first key contained in the name wins, so the specific names come first); a card not listed gets a
measured bf16 matmul peak. CPU: a measured fp32 matmul peak with the current torch thread count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# Dense bf16 (no sparsity) tensor-core FLOP/s, from the NVIDIA datasheets of each card.
GPU_BF16_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),  # same compute as H100 SXM, more and faster memory
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),  # AWS g5; A10G datasheet: 70 TFLOPS bf16 dense
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


@dataclass(frozen=True)
class Peak:
    flops: float  # FLOP/s
    source: str  # "datasheet: <key> bf16 dense" | "measured: <dtype> matmul n=<n>"


def peak_flops(device: torch.device) -> Peak:
    """The stated peak of `device`: the datasheet's bf16 peak of a known GPU, else a measured matmul peak."""
    if device.type == "cuda":
        return datasheet_peak(torch.cuda.get_device_name(device)) or measured_matmul_peak(device, torch.bfloat16)
    return measured_matmul_peak(device, torch.float32)


def datasheet_peak(device_name: str) -> Peak | None:
    """The bf16 dense peak of the first `GPU_BF16_PEAK_FLOPS` key contained in `device_name`, if any."""
    for key, flops in GPU_BF16_PEAK_FLOPS:
        if key in device_name:
            return Peak(flops, f"datasheet: {key} bf16 dense")
    return None


def measured_matmul_peak(device: torch.device, dtype: torch.dtype, *, n: int | None = None,
                         repeats: int = 7) -> Peak:
    """The best FLOP/s of `repeats` n x n matrix products (2 n^3 FLOPs each) after one warm-up: what the
    BLAS reaches on this device with the current threads. The best, not the median: a peak."""
    n = n or (8192 if device.type == "cuda" else 1024)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    best = float("inf")
    for repeat in range(repeats + 1):
        synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        if repeat:
            best = min(best, time.perf_counter() - started)
    dtype_name = str(dtype).removeprefix("torch.")
    return Peak(2 * n**3 / best, f"measured: {dtype_name} matmul n={n}, {torch.get_num_threads()} threads"
                if device.type == "cpu" else f"measured: {dtype_name} matmul n={n}")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); timed regions start and end with it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the machine type."""
    import platform

    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
