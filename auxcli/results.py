"""Each finished run's numbers where git carries them, for `dvc metrics`, `dvc exp show` and `dvc plots`.

Run folders are DVC-cached outputs; what DVC compares across revisions and experiments must be readable
in every one of them, so `auxcli results` copies the essentials into small git-tracked files:
- `results/metrics/<name>/seed-<k>.json`: the final numbers of one run, numeric keys only (`RESULT_KEYS`,
  the names of `metrics.json`, which keeps its run id and spec name), so `dvc metrics show` prints one
  narrow row per run;
- `results/history/<name>/seed-<k>.csv`: `history.csv` of the run (one row per epoch), which the
  pipeline's plot definitions draw.
Files of seeds the spec no longer has are removed, so the folder always mirrors the spec.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from auxcli.runfolder import RunFolder, atomic_write_text
from auxcli.spec import Spec

# Few columns on purpose: `dvc exp show` puts every key of every run side by side. These are the numbers the
# study's tables report (final-epoch train and test accuracy, the auxiliary task's accuracy) and mIoU, which
# shows a segmentation head that predicts only background (its pixel accuracy looks high).
RESULT_KEYS: tuple[str, ...] = ("final_test_acc", "final_train_acc", "final_test_aux_acc", "final_test_aux_miou")
RESULTS_DIR = "results"


def result_metrics(metrics: dict) -> dict[str, float]:
    """The `RESULT_KEYS` of a run's metrics.json that are finite numbers, in that order."""
    out: dict[str, float] = {}
    for key in RESULT_KEYS:
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def metrics_dir(results: Path, spec_name: str) -> Path:
    return Path(results) / "metrics" / spec_name


def history_dir(results: Path, spec_name: str) -> Path:
    return Path(results) / "history" / spec_name


def write_results(spec: Spec, results: Path) -> list[Path]:
    """Write the files above for every finished seed of `spec`; returns them. Unfinished seeds get none."""
    import json

    written: list[Path] = []
    wanted = {f"seed-{seed}" for seed in spec.seeds}
    for folder in (metrics_dir(results, spec.name), history_dir(results, spec.name)):
        for stale in folder.glob("seed-*.*") if folder.is_dir() else ():
            if stale.stem not in wanted:
                stale.unlink()
    for seed in spec.seeds:
        run = RunFolder.of(spec, seed)
        if not run.is_finished():
            continue
        target = metrics_dir(results, spec.name) / f"seed-{seed}.json"
        atomic_write_text(target, json.dumps(result_metrics(run.read_metrics()), indent=2) + "\n")
        written.append(target)
        if run.history.is_file():
            run.read_history()  # a damaged history (merge markers) is named, not copied into git
            history = history_dir(results, spec.name) / f"seed-{seed}.csv"
            history.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.history, history)
            written.append(history)
    return written
