"""The training loop as users commonly write it, the peer `auxcli bench` measures auxcli against.

A Dataset of PIL images, torchvision's per-sample `RandomCrop(32, padding=4)`, `RandomHorizontalFlip()`,
`ToTensor()` and `Normalize(mean, std)`, a shuffling DataLoader with worker processes (pinned memory on
CUDA), fp32, eager, and per batch the running loss and accuracy read with `.item()`, as the widely copied
kuangliu/pytorch-cifar `main.py` and the PyTorch CIFAR-10 tutorial do. Same model, optimizer (SGD,
Nesterov momentum 0.9, weight decay 1e-4) and batch size as auxcli's run.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class PILImages(Dataset):
    """uint8 HWC images kept as PIL images, each transformed when it is read (the common pattern)."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform: transforms.Compose):
        self.images = [Image.fromarray(image) for image in images_hwc]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), self.labels[i]


def reference_loader(images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, workers: int,
                     mean: list[float], std: list[float], padding: int = 4, pin_memory: bool = False
                     ) -> DataLoader:
    """uint8 (N, 3, 32, 32) images and (N,) labels as the common per-sample pipeline."""
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=padding), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(mean, std)])
    dataset = PILImages(images.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy(), transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=pin_memory)


def reference_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                    device: torch.device) -> float:
    """One epoch of the common loop; returns the training accuracy. `model(x)["main"]` are the logits."""
    model.train()
    train_loss, correct, total = 0.0, 0, 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        optimizer.zero_grad()
        outputs = model(inputs)["main"]
        loss = F.cross_entropy(outputs, targets)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
        correct += outputs.argmax(1).eq(targets).sum().item()
        total += targets.size(0)
    return correct / max(total, 1)
