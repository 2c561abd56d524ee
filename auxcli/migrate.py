"""`auxcli migrate --to URI`: move a project's runs from one MLflow store (the embedded SQLite one by
default) to another (a lab's tracking server), and point the run folders at the copies.

MLflow gives every copied run a new id. What named the old ids keeps working:
- in the target store, references between runs (`mlflow.parentRunId`, `auxcli.transfer.source_run_id`,
  analysis inputs, description links) are rewritten by the copy (`auxcli.storecopy`), and each copy is
  tagged `auxcli.migrated_from` = its old id and `auxcli.migrated_from_store` = the old store;
- the run folders' `metrics.json` and `complete.json` (`mlflow_run_id`) are rewritten atomically, only
  after every run is copied (a failed copy leaves every folder as it was);
- checkpoints (`last.pt`, `final.pt`) are not rewritten (large, and torch's to write): a resumed
  partial run finds its copy by the tag (`auxcli.tracking.RunTracker.current_id`) and continues it.
The source store is only read. Running the command again copies nothing twice (see `auxcli.storecopy`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auxcli.errors import TrackingError


@dataclass
class Migration:
    source: str  # display form (no password)
    target: str
    run_ids: dict[str, str]  # every source run id -> its copy
    copied: int
    already: int
    leftovers_removed: int
    folders_rewritten: list[Path]


def migrate(*, target_uri: str, source_uri: str | None = None, runs_dirs: list[Path],
            progress: Callable[[str], object] = lambda _: None) -> Migration:
    """Copy every run of the source store (default: this project's store) into `target_uri`, then
    rewrite the run folders under `runs_dirs` that name a copied run."""
    from auxcli.credentials import refuse_password
    from auxcli.report.collect import store_is_missing
    from auxcli.storecopy import copy_store, open_store
    from auxcli.tracking import display_uri, resolve_tracking_uri

    refuse_password(target_uri, f"--to {display_uri(target_uri)}")
    source = resolve_tracking_uri(source_uri)
    if _same_store(source, target_uri):
        raise TrackingError(f"--to {display_uri(target_uri)} is the store the runs are in already; allowed: "
                            "another store (a tracking server http://host:5000, postgresql://..., another "
                            "sqlite:/// file), with --from naming the source when it is not this project's store.")
    if store_is_missing(source):
        raise TrackingError(f"no MLflow store at {display_uri(source)}: nothing to migrate. Give the store the runs "
                            "were recorded in with --from (default: tracking.uri's default, ./mlflow.db).")
    # Fail fast on an unreachable server instead of retrying for minutes (as `auxcli run` does).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run and model: noise
    source_client = open_store(source, "source (--from)")
    target_client = open_store(target_uri, "target (--to)")
    try:
        copied = copy_store(source_client, target_client, source_uri=source, target_uri=target_uri,
                            source_label=display_uri(source), progress=progress)
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(
            f"the copy to {display_uri(target_uri)} stopped ({type(exc).__name__}: {_first_line(exc)}). The source "
            f"store {display_uri(source)} and the run folders are unchanged; runs copied so far are kept. Re-run "
            "the same command when the target is back: it skips finished copies, replaces the half-made one and "
            "goes on.") from None
    return Migration(display_uri(source), display_uri(target_uri), copied.run_ids, len(copied.copied),
                     len(copied.already), copied.leftovers_removed, rewrite_run_folders(runs_dirs, copied.run_ids))


def rewrite_run_folders(runs_dirs: list[Path], run_ids: dict[str, str]) -> list[Path]:
    """Replace old MLflow run ids by their copies in every `<runs_dir>/<name>/seed-<k>/` record that names
    one (`metrics.json`, `complete.json`), each file atomically, under the folder's lock (a run training
    there refuses with `RunInUse`: re-run the migration once it ends)."""
    from auxcli.runfolder import RunFolder

    rewritten = []
    for runs in runs_dirs:
        for root in sorted(p for p in Path(runs).glob("*/seed-*") if p.is_dir()):
            folder = RunFolder(root)
            writers = {folder.metrics: folder.write_metrics, folder.complete: folder.write_completion}
            records = [path for path in writers if _names(path, run_ids)]
            if not records:
                continue
            with folder.lock():
                for path in records:
                    record = json.loads(path.read_text(encoding="utf-8"))
                    record["mlflow_run_id"] = run_ids[record["mlflow_run_id"]]
                    writers[path](record)
            rewritten.append(root)
    return rewritten


def _names(path: Path, run_ids: dict[str, str]) -> bool:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, or damaged: `auxcli run` reports a damaged file itself
        return False
    return isinstance(record, dict) and record.get("mlflow_run_id") in run_ids


def _same_store(a: str, b: str) -> bool:
    from auxcli.tracking import sqlite_path

    path_a, path_b = sqlite_path(a), sqlite_path(b)
    if path_a is not None and path_b is not None:
        return path_a.resolve() == path_b.resolve()
    return a.rstrip("/") == b.rstrip("/")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""
