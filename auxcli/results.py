"""Each finished run's numbers where git carries them, for `dvc metrics`, `dvc exp show` and `dvc plots`.

Run folders are DVC-cached outputs; what DVC compares across revisions and experiments must be readable
in every one of them, so `auxcli results` copies the essentials into small git-tracked files:
- `results/metrics/<name>/seed-<k>.json`: every summary metric of one run (`final_*`, `best_*`,
  `best_epoch`: the numeric keys of `metrics.json`, which also keeps its run id and spec name);
- `results/history/<name>/seed-<k>.csv`: `history.csv` of the run (one row per epoch), which the
  pipeline's plot definitions draw.
Files of seeds the spec no longer has are removed, so the folder always mirrors the spec.

`auxcli results --summary` writes `results/summary.json` from those per-run files: per spec name, the
`mean`, sample `std` (left out for one seed: it is undefined, and 0 would read as "perfectly
reproducible") and `n` of the spec's headline metric (`headline_metric`) over its seeds. It is the one
file the pipeline declares as DVC metrics, so `dvc exp show` prints one narrow column per number.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from auxcli.catalogue import finished_folders
from auxcli.runfolder import atomic_write_text
from auxcli.spec import Spec

# The numbers the study's tables report (final-epoch train and test accuracy, the auxiliary task's accuracy)
# and mIoU, which shows a segmentation head that predicts only background (its pixel accuracy looks high):
# first in each per-run file, then every other summary metric in name order.
RESULT_KEYS: tuple[str, ...] = ("final_test_acc", "final_train_acc", "final_test_aux_acc", "final_test_aux_miou")
SUMMARY_PREFIXES: tuple[str, ...] = ("final_", "best_")  # auxcli.train.metrics.summary_metrics
# A spec's headline in results/summary.json: the metric of its cell in its own study table (`study_metric`:
# Table 1 final train acc, Table 4 final aux train acc, Tables 2, 3 and 5 test acc), what `auxcli report`
# shows there; a spec outside the study: test accuracy, or without a main head its auxiliary task's.
HEADLINE_METRICS: tuple[str, ...] = ("final_test_acc", "final_test_aux_acc")
RESULTS_DIR = "results"
SUMMARY_FILE = "summary.json"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def result_metrics(metrics: dict) -> dict[str, float]:
    """Every summary metric (`final_*`, `best_*`) of a run's metrics.json that is a finite number:
    `RESULT_KEYS` first, then the rest by name; `best_epoch` stays an integer."""
    keys = [k for k in RESULT_KEYS if k in metrics] + sorted(
        k for k in metrics if k.startswith(SUMMARY_PREFIXES) and k not in RESULT_KEYS)
    return {k: int(v) if k == "best_epoch" else float(v) for k in keys if _finite(v := metrics[k])}


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
    for seed, run in finished_folders(spec):
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


def summary_path(results: Path) -> Path:
    return Path(results) / SUMMARY_FILE


def study_metric(spec_name: str) -> str | None:
    """The summary metric of the spec's cell in its own study table (`table1-gt` -> Table 1's train acc),
    the test column where that table has one; None for a spec outside the study's tables."""
    from auxcli.report.paper import TABLES, match_key

    hit = match_key(spec_name)
    if hit is None:
        return None
    table = next((t for t in TABLES if t.id == hit[1].split("-")[0]), None)
    if table is None or not any(row.key == hit[1] for row in table.rows):
        return None
    columns = {column.name: column.metric for column in table.columns}
    return columns.get("test") or next(iter(columns.values()))


def headline_metric(per_seed: list[dict], spec_name: str = "") -> str | None:
    """The spec's `study_metric` when its seeds hold it, else the first of `HEADLINE_METRICS` they hold."""
    candidates = ((study_metric(spec_name),) if spec_name else ()) + HEADLINE_METRICS
    return next((key for key in candidates if key and any(_finite(m.get(key)) for m in per_seed)), None)


def cell_summary(values: list[float]) -> dict[str, float | int]:
    """`mean`, sample `std` (ddof=1; only for two values or more) and `n` of one spec's seeds."""
    import statistics

    cell: dict[str, float | int] = {"mean": statistics.fmean(values)}
    if len(values) > 1:
        cell["std"] = statistics.stdev(values)
    cell["n"] = len(values)
    return cell


def summarize(specs: list[Spec], results: Path) -> dict[str, dict[str, float | int]]:
    """Per spec name (in the order given), the `cell_summary` of its headline metric over the per-run files
    of the seeds it has now; specs without a finished seed are left out."""
    import json

    summary: dict[str, dict[str, float | int]] = {}
    for spec in specs:
        files = [metrics_dir(results, spec.name) / f"seed-{seed}.json" for seed in spec.seeds]
        per_seed = [json.loads(f.read_text()) for f in files if f.is_file()]
        key = headline_metric(per_seed, spec.name)
        if key is not None:
            summary[spec.name] = cell_summary([float(m[key]) for m in per_seed if _finite(m.get(key))])
    return summary


def write_summary(specs: list[Spec], results: Path) -> Path:
    """`results/summary.json` (`summarize`); returns its path."""
    import json

    target = summary_path(results)
    atomic_write_text(target, json.dumps(summarize(specs, results), indent=2) + "\n")
    return target
