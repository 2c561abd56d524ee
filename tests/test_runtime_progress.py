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
    progress.end_epoch(2, 3, {**METRICS, "epoch_seconds": 4.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["demo-s0 epoch 1/3  train_loss 1.2500  train_acc 50.00%  test_acc 25.00%  900 img/s  2.0s"
                     "  eta 4s",  # 2 epochs left at 2.0 s each
                     "demo-s0 epoch 2/3  train_loss 1.2500  train_acc 50.00%  test_acc 25.00%  900 img/s  4.0s"
                     "  eta 3s"]  # 1 epoch left at the mean so far, 3.0 s


def test_segmentation_progress_shows_miou_beside_pixel_accuracy(capsys):
    PlainProgress("cut-s0").end_epoch(1, 1, {**METRICS, "test_aux_acc": 0.94, "test_aux_miou": 0.47})
    assert "test_aux_acc 94.00%  test_aux_miou 47.00%" in capsys.readouterr().out


def test_eta_reads_as_hours_minutes_seconds():
    from auxcli.train.progress import format_eta

    assert [format_eta(s) for s in (0, 12.4, 245, 3720)] == ["0s", "12s", "4m05s", "1h02m"]


def test_quiet_progress_prints_nothing(capsys, monkeypatch):
    from auxcli.console import ENV

    monkeypatch.setenv(ENV, "-1")
    progress = make_progress("q-s0")
    progress.start_epoch(1, 1, 10)
    progress.end_epoch(1, 1, METRICS)
    progress.close()
    assert capsys.readouterr().out == ""


def test_rich_progress_draws_epoch_and_batch_bars():
    out = io.StringIO()
    progress = RichProgress("demo-s0", console=Console(file=out, force_terminal=True, width=160))
    progress.start_epoch(1, 2, 100)
    progress.batch(50, torch.tensor(1.5))
    progress.end_epoch(1, 2, METRICS)
    progress.close()
    text = out.getvalue()
    assert "demo-s0 epochs" in text and "loss 1.500" in text and "900 img/s" in text
    assert "eta" in text  # the remaining time of the run (epochs bar) and of the epoch


def test_progress_is_plain_when_not_on_a_terminal(capsys):
    assert isinstance(make_progress("x"), PlainProgress)  # pytest captures stdout: not a terminal
