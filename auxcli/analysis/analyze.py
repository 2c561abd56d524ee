"""`auxcli analyze`: compare the representations of finished runs on the same test images.

For the runs given (folders or MLflow ids, see `features.py`), all trained on the same data:
- `cka.csv`, `cka.json`, `cka.png`: linear CKA (Kornblith et al. 2019) between every pair of runs'
  test-set features;
- `embedding-<run>.png`: each run's test features in 2-D (PCA, or t-SNE with scikit-learn), coloured
  by ground-truth superclass (by class when the data set has no superclasses), at most `max_points`;
- `probe.csv`, `probe.json`: closed-form ridge-probe accuracy per run and label set (gt, and superclass
  where the data has it), labelled as the fast companion it is (`probe.METHOD`), not Table 2's probe.
The files are also logged (under `analysis/`) to a new MLflow run `auxcli-analysis` tagged
`auxcli.analysis=true` with its inputs' run ids in `auxcli.analysis.input_run_ids`, in the experiment
`<experiment>-analysis` (`ANALYSIS_SUFFIX`), out of the training runs' table; `auxcli report` would leave
such runs out anyway.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from auxcli.analysis.embedding import embed_2d
from auxcli.analysis.features import (
    PENULTIMATE,
    AnalyzedRun,
    extract_features,
    load_feature_extractor,
    resolve_run,
    unique_labels,
)
from auxcli.analysis.probe import METHOD, ridge_probe
from auxcli.analysis.similarity import cka_matrix
from auxcli.errors import AnalysisError

ANALYSIS_RUN_NAME = "auxcli-analysis"
ANALYSIS_SUFFIX = "-analysis"  # analysis runs live in <experiment>-analysis, like reports in <experiment>-reports
DEFAULT_OUT = "analysis"
_EMBEDDING_NAMES = {"pca": "PCA", "tsne": "t-SNE"}


@dataclass
class AnalysisOutput:
    labels: list[str]
    cka: list[list[float]]
    probes: list[dict[str, Any]]
    written: list[Path] = field(default_factory=list)
    mlflow_run_id: str | None = None


def analyze_runs(refs: Sequence[str], *, layer: str = PENULTIMATE, out: Path = Path(DEFAULT_OUT),
                 embedding: str = "pca", tracking_uri: str | None = None, log_to_mlflow: bool = True,
                 device: str = "auto", max_points: int = 2000) -> AnalysisOutput:
    """Analyse the runs `refs`; write the files into `out` and (unless told not to) log them to MLflow."""
    from auxcli.data.load import load_data
    from auxcli.data.stats import channel_stats
    from auxcli.report.plots import save_png
    from auxcli.spec import RuntimeSpec
    from auxcli.train.runtime import resolve_runtime
    from auxcli.analysis.plots import cka_heatmap, embedding_scatter

    if not refs:
        raise AnalysisError("auxcli analyze needs at least one run (a run folder or an MLflow run id).")
    if embedding not in _EMBEDDING_NAMES:
        raise AnalysisError(f"unknown --embedding {embedding!r}; allowed: {', '.join(_EMBEDDING_NAMES)}.")
    try:
        target = resolve_runtime(RuntimeSpec(device=device)).device
    except ValueError:  # pydantic's ValidationError for a malformed name
        raise AnalysisError(f"--device {device!r} is not a device; allowed: auto, cpu, cuda, cuda:N, mps.") from None
    out = Path(out)
    runs = unique_labels([resolve_run(ref, tracking_uri=tracking_uri, download_dir=out / "sources")
                          for ref in refs])
    _check_same_data(runs)
    data = load_data(runs[0].spec.data)
    mean, std = channel_stats(data.train.images)
    batch = runs[0].spec.train.eval_batch_size
    label_sets = {"gt": (data.train.fine, data.test.fine, len(data.classes))}
    if data.superclasses is not None:
        label_sets["superclass"] = (data.train.coarse, data.test.coarse, len(data.superclasses))
    groups, group_names, colour_label = ((data.test.coarse, data.superclasses, "superclass")
                                         if data.superclasses is not None else (data.test.fine, data.classes, "class"))
    shown = _sample(len(data.test), max_points)

    result = AnalysisOutput(labels=[r.label for r in runs], cka=[], probes=[])
    out.mkdir(parents=True, exist_ok=True)
    test_features = []
    for run in runs:
        backbone = load_feature_extractor(run)
        train_x, test_x = (extract_features(backbone, split, mean=mean, std=std, layer=layer, batch_size=batch,
                                            device=target) for split in (data.train, data.test))
        test_features.append(test_x)
        result.probes += [_probe_row(run, layer, label_set, train_x, train_y, test_x, test_y, classes)
                          for label_set, (train_y, test_y, classes) in label_sets.items()]
        coords = embed_2d(test_x[shown], embedding)
        title = f"{run.label}: {_EMBEDDING_NAMES[embedding]} of {layer} features"
        fig = embedding_scatter(coords, groups[shown], group_names, title=title, colour_label=colour_label)
        result.written.append(save_png(fig, out / f"embedding-{run.label}.png"))

    result.cka = cka_matrix(test_features)
    result.written += _write_tables(out, runs, result, layer)
    result.written.append(save_png(cka_heatmap(result.labels, result.cka, layer=layer), out / "cka.png"))
    if log_to_mlflow:
        result.mlflow_run_id = _log_to_mlflow(runs, result, tracking_uri=tracking_uri, layer=layer,
                                              embedding=embedding)
    return result


def _probe_row(run: AnalyzedRun, layer: str, label_set: str, train_x: torch.Tensor, train_y: torch.Tensor,
               test_x: torch.Tensor, test_y: torch.Tensor, classes: int) -> dict[str, Any]:
    """One row of probe.csv: the ridge probe of one run's features on one label set."""
    probe = ridge_probe(train_x, train_y, test_x, test_y, classes)
    return {"probe": "ridge-closed-form", "run": run.label, "run_id": run.run_id, "spec_name": run.spec.name,
            "seed": run.seed, "layer": layer, "feature_dim": test_x.shape[1], "label_set": label_set,
            "ridge_alpha": probe.alpha, "ridge_probe_train_acc": probe.train_acc,
            "ridge_probe_test_acc": probe.test_acc}


def format_summary(result: AnalysisOutput) -> str:
    """The CKA matrix and the probe accuracies as plain-text tables."""
    from tabulate import tabulate

    cka = tabulate([[label, *row] for label, row in zip(result.labels, result.cka)],
                   headers=["linear CKA", *result.labels], floatfmt=".3f")
    probe = tabulate([(p["run"], p["label_set"], p["feature_dim"], 100 * p["ridge_probe_test_acc"])
                      for p in result.probes], headers=["run", "label set", "features", "ridge probe test %"],
                     floatfmt=".2f")
    return f"{cka}\n\n{probe}\n({METHOD})\n"


def _check_same_data(runs: list[AnalyzedRun]) -> None:
    """CKA compares features of the same images, so every run must have seen the same data set."""
    def key(run: AnalyzedRun) -> dict:
        return run.spec.data.model_dump(exclude={"download", "random_label_seed"})

    first = key(runs[0])
    for run in runs[1:]:
        theirs = key(run)
        if theirs != first:
            differ = ", ".join(f"data.{k}" for k in first if first[k] != theirs.get(k))
            raise AnalysisError(f"{run.label} was trained on other data than {runs[0].label} ({differ} differ); "
                                "analyze compares features of the same images, so give it runs of one data set.")


def _sample(n: int, max_points: int) -> torch.Tensor:
    """Up to `max_points` test indices, a fixed random choice in ascending order (all when n is smaller)."""
    if n <= max_points:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_points].sort().values


def _write_tables(out: Path, runs: list[AnalyzedRun], result: AnalysisOutput, layer: str) -> list[Path]:
    labels = result.labels
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["run", *labels])
    writer.writerows([label, *(f"{v:.6f}" for v in row)] for label, row in zip(labels, result.cka))
    (out / "cka.csv").write_text(text.getvalue())
    inputs = [{"run": r.label, "ref": r.ref, "run_id": r.run_id, "spec_name": r.spec.name, "seed": r.seed}
              for r in runs]
    (out / "cka.json").write_text(json.dumps({
        "method": "linear CKA (Kornblith et al. 2019) of test-set features", "layer": layer, "runs": inputs,
        "labels": labels, "matrix": [[None if v != v else v for v in row] for row in result.cka]}, indent=2) + "\n")
    text = io.StringIO()
    columns = list(result.probes[0])
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.probes)
    (out / "probe.csv").write_text(text.getvalue())
    (out / "probe.json").write_text(json.dumps({"method": METHOD, "rows": result.probes}, indent=2) + "\n")
    return [out / "cka.csv", out / "cka.json", out / "probe.csv", out / "probe.json"]


def _log_to_mlflow(runs: list[AnalyzedRun], result: AnalysisOutput, *, tracking_uri: str | None, layer: str,
                   embedding: str) -> str:
    from auxcli.signals import end_orphans, process_tags
    from auxcli.testhooks import pause_point
    from auxcli.tracking import ANALYSIS_TAG, RunTracker

    tracker = RunTracker(tracking_uri or runs[0].spec.tracking.uri, runs[0].spec.tracking.experiment + ANALYSIS_SUFFIX)
    tags = {ANALYSIS_TAG: "true", f"{ANALYSIS_TAG}.layer": layer, f"{ANALYSIS_TAG}.embedding": embedding,
            f"{ANALYSIS_TAG}.inputs": ",".join(r.label for r in runs),
            f"{ANALYSIS_TAG}.input_run_ids": ",".join(r.run_id or "unknown" for r in runs),
            "mlflow.note.content": "Representation analysis of: " + ", ".join(
                f"{r.label} ({r.run_id or r.ref})" for r in runs)}
    end_orphans(tracker.client, tracker.experiment_id, ANALYSIS_TAG)
    run_id = tracker.start(ANALYSIS_RUN_NAME, {**tags, **process_tags()},
                           {"layer": layer, "embedding": embedding, "runs": len(runs)})
    status = "FAILED"
    try:
        pause_point("analysis-run-open")
        tracker.log_metrics({f"ridge_probe_test_acc.{p['run']}.{p['label_set']}": p["ridge_probe_test_acc"]
                             for p in result.probes}, step=0)
        tracker.log_artifacts(result.written, subdir="analysis")
        status = "FINISHED"
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C (auxcli.signals): the run ends KILLED, as `auxcli run`'s do
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
    return run_id
