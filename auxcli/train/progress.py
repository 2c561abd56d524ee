"""Progress display: a rich bar on a terminal; elsewhere (CI, DVC, torchrun) one plain line when a run starts
and one per epoch."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from rich.console import Console


class Progress(Protocol):
    def start_run(self, line: str) -> None: ...

    def start_epoch(self, epoch: int, epochs: int, images: int) -> None: ...

    def batch(self, images: int, loss: torch.Tensor) -> None: ...

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


# Segmentation heads show mIoU beside pixel accuracy: predicting "not cut" everywhere scores the share of
# uncut pixels (94% was seen) as Cutout pixel accuracy, but an mIoU of half that (the cut class scores 0).
_SHOWN = ("train_loss", "train_acc", "test_acc", "train_aux_acc", "train_aux_miou", "test_aux_acc", "test_aux_miou")


def _summary(metrics: dict[str, float]) -> str:
    parts = []
    for key in _SHOWN:
        if key in metrics:
            value = metrics[key]
            parts.append(f"{key} {value:.4f}" if key.endswith("loss") else f"{key} {100 * value:.2f}%")
    parts.append(f"{metrics['images_per_second']:.0f} img/s")
    parts.append(f"{metrics['epoch_seconds']:.1f}s")
    return "  ".join(parts)


def format_eta(seconds: float) -> str:
    """`1h02m`, `4m05s`, `12s`."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PlainProgress:
    """One line per epoch with the run's ETA: the mean epoch time so far times the epochs left."""

    def __init__(self, label: str):
        self.label = label
        self.seconds: list[float] = []

    def start_run(self, line: str) -> None:
        """One line before the first epoch, which may take long: a log shows at once what started where."""
        print(line, flush=True)

    def start_epoch(self, epoch: int, epochs: int, images: int) -> None:
        pass

    def batch(self, images: int, loss: torch.Tensor) -> None:
        pass

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self.seconds.append(metrics["epoch_seconds"])
        eta = sum(self.seconds) / len(self.seconds) * (epochs - epoch)
        print(f"{self.label} epoch {epoch}/{epochs}  {_summary(metrics)}  eta {format_eta(eta)}", flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """Epoch and batch bars with the running loss; reads the loss every few batches only."""

    def __init__(self, label: str, console: Console | None = None):  # None: the terminal
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.label = label
        # Elapsed and remaining time per bar: the epochs bar's is the run's ETA.
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                            TimeRemainingColumn(), transient=False, console=console)
        self.bar.start()
        self.epochs_task = None
        self.batch_task = None
        self.batches = 0

    def start_run(self, line: str) -> None:
        pass  # the bars appear at once

    def start_epoch(self, epoch: int, epochs: int, images: int) -> None:
        if self.epochs_task is None:
            self.epochs_task = self.bar.add_task(f"{self.label} epochs", total=epochs, completed=epoch - 1,
                                                 info="")
        if self.batch_task is not None:
            self.bar.remove_task(self.batch_task)
        self.batch_task = self.bar.add_task(f"epoch {epoch}", total=images, info="")

    def batch(self, images: int, loss: torch.Tensor) -> None:
        self.batches += 1
        info = f"loss {float(loss):.3f}" if self.batches % 10 == 1 else None
        if info:
            self.bar.update(self.batch_task, advance=images, info=info)
        else:
            self.bar.update(self.batch_task, advance=images)

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        self.bar.update(self.epochs_task, completed=epoch, info=_summary(metrics))

    def close(self) -> None:
        self.bar.stop()


class SilentProgress:
    """`auxcli -q`: no progress at all."""

    def start_run(self, line: str) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, images: int) -> None:
        pass

    def batch(self, images: int, loss: torch.Tensor) -> None:
        pass

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(label: str) -> Progress:
    from auxcli.console import verbosity

    if verbosity() < 0:
        return SilentProgress()
    return RichProgress(label) if sys.stdout.isatty() else PlainProgress(label)
