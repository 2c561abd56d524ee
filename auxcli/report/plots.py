"""The report's charts (matplotlib, Agg; no pyplot state): the study's Figures 2 and 3, and test accuracy
per epoch for each table.

Figures 2-3 (docs/study.md, Experiment 1): training loss and training accuracy of the fine-tuning runs
(`table3-finetune-*`) over the first 50 epochs against training from scratch (`table1-gt`, dotted).
Curves are the mean over seeds of the per-epoch metric (step = epoch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from auxcli.report.aggregate import mean_curve
from auxcli.report.paper import FIGURES, TABLES
from auxcli.report.tables import Report

# (run ids, metric) -> run id -> [(epoch, value)]
FetchHistory = Callable[[list[str], str], dict[str, list[tuple[int, float]]]]


@dataclass(frozen=True)
class Series:
    label: str
    steps: list[int]
    values: list[float]
    dotted: bool = False


def line_chart(title: str, ylabel: str, series: list[Series], xlabel: str = "epoch") -> Figure:
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    for s in series:
        ax.plot(s.steps, s.values, linestyle=":" if s.dotted else "-", marker="." if len(s.steps) < 20 else None,
                label=s.label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def _series(label: str, run_ids: list[str], metric: str, fetch: FetchHistory, max_step: int | None = None,
            dotted: bool = False) -> Series | None:
    if not run_ids:
        return None
    steps, values = mean_curve(fetch(run_ids, metric).values(), max_step)
    return Series(label, steps, values, dotted) if steps else None


def report_figures(report: Report, fetch: FetchHistory) -> list[tuple[str, Figure]]:
    """(file name, figure) for every chart that has data; suites other than the study's get a suffix."""
    figures: list[tuple[str, Figure]] = []
    history_metric = {t.id: t.history_metric for t in TABLES}
    for table in report.tables:
        suffix = f"-{table.suite}" if table.suite else ""
        if table.id == "table3":
            rows = {row.key: row for row in table.rows}
            for spec in FIGURES:
                series = [_series(label, rows[key].run_ids, spec.metric, fetch, spec.epochs)
                          for key, label in spec.curves]
                key, label = spec.baseline
                series.append(_series(label, rows[key].run_ids, spec.metric, fetch, spec.epochs, dotted=True))
                found = [s for s in series if s]
                if found:
                    figures.append((f"{spec.id}{suffix}.png",
                                    line_chart(spec.title + (f" [{table.suite}]" if table.suite else ""),
                                               spec.ylabel, found)))
        metric = history_metric[table.id]
        found = [s for s in (_series(row.label, row.run_ids, metric, fetch) for row in table.rows) if s]
        if found:
            name = table.title.split(":")[0] + (f" [{table.suite}]" if table.suite else "")
            figures.append((f"{table.id}-{metric.replace('_', '-')}{suffix}.png",
                            line_chart(f"{name}: {metric.replace('_', ' ')} per epoch (mean over seeds)",
                                       metric.replace("_", " "), found)))
    for beyond in report.beyond:  # per-epoch test accuracy of each spec, its plain run dotted
        series: dict[str, Series] = {}
        for row in beyond.rows:
            metric = row.metric.removeprefix("final_")
            for label, ids, dotted in ((f"{row.spec_name} ({metric.replace('_', ' ')})", row.run_ids, False),
                                       (f"{row.baseline_spec} (test acc)", row.baseline_run_ids, True)):
                if label not in series and (found := _series(label, ids, metric if not dotted else "test_acc",
                                                             fetch, dotted=dotted)):
                    series[label] = found
        if series:
            suffix = f"-{beyond.suite}" if beyond.suite else ""
            figures.append((f"beyond-test-acc{suffix}.png",
                            line_chart("Beyond the study: test accuracy per epoch (mean over seeds)"
                                       + (f" [{beyond.suite}]" if beyond.suite else ""), "accuracy",
                                       list(series.values()))))
    generic = []
    for row in report.generic:
        metric = "test_aux_acc" if row.task.endswith(" alone") else "test_acc"
        generic.append(_series(f"{row.spec_name} ({metric.replace('_', ' ')})", row.run_ids, metric, fetch))
    if any(generic):
        figures.append(("generic-test-acc.png", line_chart("Other specs: test accuracy per epoch", "accuracy",
                                                           [s for s in generic if s])))
    return figures
