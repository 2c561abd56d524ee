"""Throughput of the batched augmentation pipeline against per-sample torchvision transforms.

Batched: `auxcli.augment.pipeline.build_train_augment` on uint8 batches of 128 already on the device
(crop + flip + normalise + Cutout 16, then also RICAP). Per-sample: the official Cutout recipe
(uoguelph-mlrg/Cutout train.py: RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize, a
per-sample numpy Cutout) through a DataLoader (batch 128, num_workers 0 and 2, persistent workers), and for
RICAP the official per-batch RICAP (jackryo/ricap trainers.py: 4 permutations, slices, concatenation) on
each loader batch. Each pipeline runs one warm-up epoch, then the best of `--repeats` timed epochs is kept.

The batched pipeline runs with `--threads` intra-op threads (default 1, one core, while the 2-worker loader
uses two): its ops are too small to gain from more, and on a shared 2-core machine 2 OpenMP threads that
must wait for a busy core made it ~40x slower (88 ms instead of 2.2 ms per batch of 128).

    python benchmarks/augment_bench.py [--images 10000] [--device cpu] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from auxcli.augment.pipeline import build_train_augment
from auxcli.augment.targets import Targets
from auxcli.spec import AugmentSpec

BATCH = 128
MEAN = torch.tensor([0.507, 0.487, 0.441])  # CIFAR-100 training-set statistics (0..1 units)
STD = torch.tensor([0.267, 0.256, 0.276])


class PerSampleCutout:
    """Per-sample Cutout as the official code does it: a numpy mask multiplied into the tensor."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[1:]
        y, x = np.random.randint(h), np.random.randint(w)
        mask = np.ones((h, w), np.float32)
        mask[max(y - self.length // 2, 0):y + self.length // 2, max(x - self.length // 2, 0):x + self.length // 2] = 0
        return img * torch.from_numpy(mask)


class PILImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def batch_ricap(images: torch.Tensor, labels: torch.Tensor, beta: float = 0.3):
    """The official RICAP step on one loader batch (per-batch boundary, 4 slices and a concatenation)."""
    size_y, size_x = images.shape[2:]
    w = int(np.round(size_x * np.random.beta(beta, beta)))
    h = int(np.round(size_y * np.random.beta(beta, beta)))
    ws, hs = [w, size_x - w, w, size_x - w], [h, h, size_y - h, size_y - h]
    patches, mixed, weights = [], [], []
    for k in range(4):
        index = torch.randperm(images.shape[0])
        x = np.random.randint(0, size_x - ws[k] + 1)
        y = np.random.randint(0, size_y - hs[k] + 1)
        patches.append(images[index][:, :, y:y + hs[k], x:x + ws[k]])
        mixed.append(labels[index])
        weights.append(ws[k] * hs[k] / (size_x * size_y))
    top, bottom = torch.cat(patches[:2], 3), torch.cat(patches[2:], 3)
    return torch.cat([top, bottom], 2), (mixed, weights)


def best_seconds(epoch: Callable[[], None], repeats: int) -> float:
    epoch()  # warm-up: worker start, allocator, first-call overheads
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    return min(times)


def batched_epoch(images: torch.Tensor, labels: torch.Tensor, augment: AugmentSpec,
                  generator: torch.Generator) -> Callable[[], None]:
    transform = build_train_augment(augment, MEAN, STD)

    def epoch() -> None:
        order = torch.randperm(len(images), generator=generator, device=images.device)
        for start in range(0, len(images), BATCH):
            index = order[start:start + BATCH]
            out, _ = transform(images[index], Targets(classes={"main": labels[index]}), generator)
        if images.is_cuda:
            torch.cuda.synchronize()

    return epoch


def loader_epoch(images: np.ndarray, labels: np.ndarray, workers: int, ricap: bool) -> Callable[[], None]:
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(MEAN.tolist(), STD.tolist()), PerSampleCutout(16),
    ])
    loader = DataLoader(PILImages(images, labels, transform), batch_size=BATCH, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0)

    def epoch() -> None:
        for batch, target in loader:
            if ricap:
                batch_ricap(batch, target)

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 100, (args.images,), generator=g)
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    device = torch.device(args.device)
    on_device = images.to(device), labels.to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    print(f"{args.images} images 32x32, batch {BATCH}, device {device}, torch threads {torch.get_num_threads()}")

    for name, spec, ricap in (
        ("crop+flip+normalize+cutout", AugmentSpec(cutout={"size": 16}), False),
        ("crop+flip+normalize+cutout+ricap", AugmentSpec(cutout={"size": 16}, ricap={"beta": 0.3}), True),
    ):
        batched = args.images / best_seconds(batched_epoch(*on_device, spec, generator), args.repeats)
        print(f"\n{name}\n  batched auxcli pipeline        {batched:12,.0f} images/s")
        for workers in (0, 2):
            per_sample = args.images / best_seconds(loader_epoch(hwc, labels.numpy(), workers, ricap),
                                                    args.repeats)
            print(f"  per-sample DataLoader, {workers} workers {per_sample:12,.0f} images/s"
                  f"   speed-up {batched / per_sample:6.1f}x")


if __name__ == "__main__":
    main()
