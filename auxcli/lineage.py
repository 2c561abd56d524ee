"""What a run records about where it came from: source and git tags and the run's description (the data
set's identity is `auxcli.data.identity`). Pure functions over the spec, the git state and the command
line; no MLflow here.

Tag names are MLflow's own (mlflow.org/docs/latest/ml/tracking/tracking-api, "System Tags"):
`mlflow.source.name`, `mlflow.source.type`, `mlflow.source.git.commit`, `mlflow.source.git.branch`,
`mlflow.source.git.repoURL`, `mlflow.user`, and `mlflow.note.content` for the description.
"""

from __future__ import annotations

import getpass
import os
import shlex
import sys
from pathlib import Path

from auxcli.data.identity import DataIdentity
from auxcli.gitinfo import GitState, _git
from auxcli.spec import Spec


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it again (`auxcli run specs/x.yaml --set ...`): what the CLI put
    in AUXCLI_COMMAND (inherited by the processes it starts), else this process's arguments."""
    if argv is None and os.environ.get("AUXCLI_COMMAND"):
        return os.environ["AUXCLI_COMMAND"]
    args = list(sys.argv if argv is None else argv)
    program = "auxcli" if not args or Path(args[0]).name in ("auxcli", "__main__.py", "-m") else args[0]
    return shlex.join([program, *args[1:]])


def source_tags(git: GitState, command: str, cwd: Path | None = None) -> dict[str, str]:
    """MLflow's standard source, git and user tags."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        user = "unknown"
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": command[:500], "mlflow.user": user}
    if git.dirty is not None:  # a git repository
        tags["mlflow.source.git.commit"] = git.commit
        if git.branch not in ("HEAD", "unknown"):
            tags["mlflow.source.git.branch"] = git.branch
        remote = _git(["remote", "get-url", "origin"], cwd or Path.cwd())
        if remote:
            tags["mlflow.source.git.repoURL"] = remote
    return tags


def run_description(spec: Spec, seed: int, *, command: str, git: GitState, data: DataIdentity | None,
                    spec_text: str, source_link: str | None = None) -> str:
    """The run's description (markdown, shown on the run's page): what ran, from where, on what."""
    lines = [f"**{spec.name}**, seed {seed}: `{command}`", ""]
    if git.dirty is not None:
        lines.append(f"- git: `{git.commit[:12]}` on `{git.branch}`" + (" (uncommitted changes)" if git.dirty else ""))
    if data is not None:
        dvc = f", DVC md5 `{data.dvc_md5}`" if data.dvc_md5 else ""
        lines.append(f"- data: `{data.name}` (digest `{data.short_digest}`{dvc})")
    if spec.transfer is not None:
        mode = spec.transfer.mode + (f", bn {spec.transfer.bn}" if spec.transfer.mode == "linear" else "")
        origin = source_link or f"`{spec.transfer.from_}`"
        lines.append(f"- transfer ({mode}) from {origin}")
    lines += ["", "Resolved spec:", "", "```yaml", spec_text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def parent_description(spec: Spec, *, command: str, spec_text: str) -> str:
    """The description of a spec's parent run: what its numbers aggregate, and the spec."""
    seeds = ", ".join(map(str, spec.seeds))
    return (f"**{spec.name}**: mean and sample std (`<metric>_std`) over seeds {seeds} of their summary "
            f"metrics; each seed is a child run `{spec.name}-s<seed>`. First run by `{command}`.\n\n"
            f"Resolved spec:\n\n```yaml\n{spec_text.rstrip()}\n```\n")
