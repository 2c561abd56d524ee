"""What a run records about where it came from: source and git tags, the data set's identity, and the
run's description. Pure functions over the spec, the git state and the command line; no MLflow here.

Tag names are MLflow's own (mlflow.org/docs/latest/ml/tracking/tracking-api, "System Tags"):
`mlflow.source.name`, `mlflow.source.type`, `mlflow.source.git.commit`, `mlflow.source.git.branch`,
`mlflow.source.git.repoURL`, `mlflow.user`, and `mlflow.note.content` for the description.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from auxcli.gitinfo import GitState, _git
from auxcli.spec import DataSpec, Spec


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


@dataclass(frozen=True)
class DataIdentity:
    """A data set as MLflow records it: a name, a digest of the exact files, where they are."""

    name: str  # e.g. cifar100, synthetic-20x5-seed0, cifar100-subset50
    digest: str  # 16 hex digits of sha256 over the files' md5s and the subset
    source: str  # the archive folder, absolute
    profile: dict = field(default_factory=dict)  # the files' md5s and the subset


def data_identity(data: DataSpec) -> DataIdentity:
    """The identity of the archive `data` names, from the md5s its files are checked against on loading
    (torchvision's list for CIFAR, the manifest for generated archives), so nothing is hashed again."""
    from torchvision.datasets import CIFAR10, CIFAR100

    from auxcli.data.cifar import expected_md5s
    from auxcli.data.synthetic import ARCHIVE_FOLDER, manifest_md5s, read_manifest, synthetic_folder

    root = Path(data.root)
    if data.dataset == "synthetic":
        synth = data.synthetic
        folder = synthetic_folder(root, train_per_class=synth.train_per_class,
                                  test_per_class=synth.test_per_class, seed=synth.seed) / ARCHIVE_FOLDER
        md5s = manifest_md5s(read_manifest(folder))
        name = f"synthetic-{synth.train_per_class}x{synth.test_per_class}-seed{synth.seed}"
    else:
        dataset_cls = CIFAR100 if data.dataset == "cifar100" else CIFAR10
        folder = root / dataset_cls.base_folder
        md5s = expected_md5s(dataset_cls)
        name = data.dataset
    if data.subset is not None:
        name += f"-subset{data.subset}"
    profile = {"files_md5": dict(sorted(md5s.items())), "subset_per_class": data.subset}
    digest = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()[:16]
    return DataIdentity(name, digest, str(folder.resolve()), profile)


def run_description(spec: Spec, seed: int, *, command: str, git: GitState, data: DataIdentity | None,
                    spec_text: str, source_link: str | None = None) -> str:
    """The run's description (markdown, shown on the run's page): what ran, from where, on what."""
    lines = [f"**{spec.name}**, seed {seed}: `{command}`", ""]
    if git.dirty is not None:
        lines.append(f"- git: `{git.commit[:12]}` on `{git.branch}`" + (" (uncommitted changes)" if git.dirty else ""))
    if data is not None:
        lines.append(f"- data: `{data.name}` (digest `{data.digest}`)")
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
