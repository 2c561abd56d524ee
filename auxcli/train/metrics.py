"""Metric names (a contract: the report and the DVC pipeline read them) from the loop's sums.

Per epoch: `train_loss` (the objective: main loss + weight * aux loss), `train_acc`, `test_loss` (main
head, clean test images), `test_acc`, `lr`, `epoch_seconds` (train + test), `eval_seconds`,
`images_per_second` (training phase); with an auxiliary task `train_aux_loss`, `train_aux_acc`,
`test_aux_loss`, `test_aux_acc` and, for segmentation, `train_aux_miou`/`test_aux_miou`; with SLA's joint
head (`task.joint: sla`) `train_acc`/`test_acc` are single inference (rotation 0), plus
`train_acc_aggregated`/`test_acc_aggregated` (mean of the four rotations' joint logits) and
`train_joint_acc`/`test_joint_acc` (its `test_loss` is the joint loss over the four rotations). Summary:
`final_*` of the last epoch (the study reports the final epoch), `best_test_acc` and `best_epoch`.
Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

from auxcli.tasks import Task

FINAL_KEYS = ("train_acc", "test_acc", "train_loss", "test_loss", "train_aux_acc", "test_aux_acc",
              "train_aux_miou", "test_aux_miou",
              "train_acc_aggregated", "test_acc_aggregated", "train_joint_acc", "test_joint_acc")  # SLA


def metric_name(split: str, task: Task, key: str) -> str:
    return f"{split}_{key}" if task.name == "main" else f"{split}_{task.name}_{key}"


def split_metrics(split: str, tasks: Sequence[Task], sums: dict[str, float]) -> dict[str, float]:
    """Turn one pass's sums (keys `loss`, `count`, `<task>/<key>`) into named metrics."""
    metrics: dict[str, float] = {}
    count = max(sums.get("count", 0.0), 1.0)
    if split == "train":
        metrics["train_loss"] = sums["loss"] / count
    for task in tasks:
        prefix = f"{task.name}/"
        own = {k[len(prefix):]: v for k, v in sums.items() if k.startswith(prefix)}
        if not own:
            continue
        if not (split == "train" and task.name == "main"):
            metrics[metric_name(split, task, "loss")] = own["loss"] / count
        metrics.update({metric_name(split, task, k): v for k, v in task.summarize(own).items()})
    return metrics


def summary_metrics(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """Final-epoch numbers (the headline) and the best epoch by test accuracy."""
    last = history[-1]
    summary = {f"final_{key}": last[key] for key in FINAL_KEYS if key in last}
    best_key = "test_acc" if "test_acc" in last else "test_aux_acc" if "test_aux_acc" in last else None
    if best_key:
        best = max(history, key=lambda row: row[best_key])
        summary[f"best_{best_key}"] = best[best_key]
        summary["best_epoch"] = best["epoch"]
    return summary
