"""Runtime resolution on this CPU machine, and the two progress displays."""

from __future__ import annotations

import io

import torch
from rich.console import Console

from auxcli.spec import RuntimeSpec
from auxcli.train.progress import PlainProgress, RichProgress, make_progress
from auxcli.train.runtime import resolve_runtime

METRICS = {"train_loss": 1.25, "train_acc": 0.5, "test_acc": 0.25, "images_per_second": 900.0,
           "epoch_seconds": 2.0}


def test_auto_runtime_is_fp32_cpu_without_cuda():
    runtime = resolve_runtime(RuntimeSpec())
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.device.type == expected
    assert (runtime.autocast_dtype is torch.bfloat16) == (expected == "cuda")
    assert runtime.channels_last  # auto: on for convolutional backbones on CUDA and CPU (see runtime.py)


def test_explicit_runtime_choices_are_honoured():
    runtime = resolve_runtime(RuntimeSpec(device="cpu", precision="bf16", channels_last="on"))
    assert runtime.device == torch.device("cpu")
    assert runtime.autocast_dtype is torch.bfloat16
    assert runtime.channels_last
    with runtime.autocast():
        assert torch.is_autocast_enabled("cpu")


def test_plain_progress_prints_one_line_per_epoch(capsys):
    progress = PlainProgress("demo-s0")
    progress.start_epoch(1, 3, 100)
    progress.batch(50, torch.tensor(1.0))
    progress.end_epoch(1, 3, METRICS)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["demo-s0 epoch 1/3  train_loss 1.2500  train_acc 50.00%  test_acc 25.00%  900 img/s  2.0s"]


def test_rich_progress_draws_epoch_and_batch_bars():
    out = io.StringIO()
    progress = RichProgress("demo-s0", console=Console(file=out, force_terminal=True, width=160))
    progress.start_epoch(1, 2, 100)
    progress.batch(50, torch.tensor(1.5))
    progress.end_epoch(1, 2, METRICS)
    progress.close()
    text = out.getvalue()
    assert "demo-s0 epochs" in text and "loss 1.500" in text and "900 img/s" in text


def test_progress_is_plain_when_not_on_a_terminal(capsys):
    assert isinstance(make_progress("x"), PlainProgress)  # pytest captures stdout: not a terminal
