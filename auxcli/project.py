"""Where relative paths are anchored: the project (DVC/git repository) root, not the directory of the moment.

Two roots, because `dvc exp run --temp` and `dvc queue start` run a stage in a copy of the repository
under `<repo>/.dvc/tmp/exps/<tmp>/`:
- `workspace_root()`: the repository that holds the current directory (nearest ancestor with `.dvc/`
  or `.git`). Run folders and data (`runtime.runs_dir`, `data.root`) live here, so `auxcli plan` from a
  subfolder sees the runs at the top, and DVC collects a temporary run's outputs from its copy.
- `store_root()`: the repository the user works in, which outlives any temporary copy. The embedded MLflow
  store (`mlflow.db`, `mlartifacts/`) lives here. DVC exports it to every stage as `DVC_ROOT`, set to the
  parent repository for temporary and queued experiments (dvc/repo/experiments/queue/base.py), so those
  runs land in the user's store rather than in a folder DVC deletes afterwards.
Outside any repository both are the current directory, as before.
"""

from __future__ import annotations

import os
from pathlib import Path

DVC_ROOT_ENV = "DVC_ROOT"  # set by DVC for every stage command (dvc/stage/run.py)
_MARKERS = (".dvc", ".git")
_DVC_TEMP_WORKSPACE = (".dvc", "tmp", "exps")  # dvc/repo/experiments/utils.py: EXEC_TMP_DIR


def workspace_root(start: Path | None = None) -> Path | None:
    """The nearest ancestor of `start` (default: cwd) holding `.dvc` or `.git`; None outside a repository."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in _MARKERS):
            return folder
    return None


def store_root(start: Path | None = None) -> Path:
    """The folder that holds the embedded MLflow store: `DVC_ROOT` inside a DVC stage, else the repository
    outside any DVC temporary workspace, else the current directory."""
    if os.environ.get(DVC_ROOT_ENV):
        return Path(os.environ[DVC_ROOT_ENV]).resolve()
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    n = len(_DVC_TEMP_WORKSPACE)
    for i in range(len(parts) - n + 1):
        if parts[i:i + n] == _DVC_TEMP_WORKSPACE:  # run by hand inside a temporary experiment's copy
            return Path(*parts[:i])
    return workspace_root(here) or here


def anchored(path: str | Path, start: Path | None = None) -> Path:
    """A spec's relative path (runs_dir, data.root) resolved against the workspace root; absolute paths,
    and any path outside a repository, are returned unchanged."""
    path = Path(path)
    if path.is_absolute():
        return path
    root = workspace_root(start)
    return path if root is None else root / path
