"""The git state of the working directory (not of the installed package), for run lineage."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GitState:
    commit: str
    branch: str
    dirty: bool | None  # None: not a git repository

    def as_tags(self) -> dict[str, str]:
        return {"auxcli.git_commit": self.commit, "auxcli.git_branch": self.branch,
                "auxcli.git_dirty": "unknown" if self.dirty is None else str(self.dirty).lower()}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(cwd: Path | None = None) -> GitState:
    cwd = cwd or Path.cwd()
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return GitState("unknown", "unknown", None)
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd) or "unknown"
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return GitState(commit, branch, bool(status))


def git_diff(cwd: Path) -> bytes | None:
    """`git diff HEAD` (staged and unstaged changes to tracked files) as bytes; None outside git."""
    try:
        done = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=cwd, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def untracked_files(cwd: Path) -> list[str]:
    """Names of untracked, not ignored files (their contents are not recorded)."""
    out = _git(["ls-files", "--others", "--exclude-standard"], cwd)
    return sorted(out.splitlines()) if out else []
