"""A whole training process as users commonly write it, to time against `auxcli run` from outside.

The loop of `auxcli.perf.reference` (PIL images, per-sample torchvision transforms, a DataLoader with
workers, fp32, eager, `.item()` per batch) over generated 32x32 images, with a test pass (ToTensor +
Normalize) and a checkpoint (`torch.save` of model and optimizer) after every epoch, as the official
Cutout and RICAP training scripts do. benchmarks/cpu_whole_process.sh runs it beside `auxcli run` on the
same number of images, model and epochs.

    python benchmarks/reference_run.py [--images 10000] [--test-images 2000] [--depth 20] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from auxcli.perf.measure import MEAN, STD, ModelChoice, Recipe, bench_images, build_model, make_optimizer
from auxcli.perf.reference import PILImages, reference_epoch, reference_loader
from auxcli.tasks import ClassificationTask
from auxcli.train.runtime import Runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--test-images", type=int, default=2_000)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_images, train_labels = bench_images(args.images, seed=1)
    test_images, test_labels = bench_images(args.test_images, seed=2)
    model = build_model(ModelChoice("resnet", args.depth), [ClassificationTask("main", "gt", 100)],
                        Runtime(device, None, False))
    optimizer = make_optimizer(model, Recipe())
    loader = reference_loader(train_images, train_labels, batch_size=128, workers=args.workers, mean=MEAN, std=STD,
                              pin_memory=device.type == "cuda")
    test = DataLoader(PILImages(test_images.permute(0, 2, 3, 1).numpy(), test_labels.numpy(),
                                transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])),
                      batch_size=1000, num_workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(1, args.epochs + 1):
            epoch_started = time.perf_counter()
            train_acc = reference_epoch(model, optimizer, loader, device)
            model.eval()
            correct = 0
            with torch.no_grad():
                for inputs, targets in test:
                    correct += model(inputs.to(device))["main"].argmax(1).eq(targets.to(device)).sum().item()
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                       Path(tmp) / "checkpoint.pt")
            print(f"epoch {epoch}: train acc {100 * train_acc:.2f}%, test acc {100 * correct / len(test_images):.2f}%, "
                  f"{args.images / (time.perf_counter() - epoch_started):,.0f} images/s (epoch incl. test)", flush=True)
    print(f"reference process: {time.perf_counter() - started:.1f} s after imports", flush=True)


if __name__ == "__main__":
    main()
