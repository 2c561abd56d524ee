"""The spec's MLflow parent run: one per (spec name, result identity), holding its seeds' runs and their
aggregates. Found, or created with the spec's tags, params and description. Torch-free, so that a launcher
can open it before it starts several seeds at once (`auxcli.launch`), instead of the seeds racing to
create it (`RunTracker.spec_parent` settles such races, this avoids them).
"""

from __future__ import annotations

from collections.abc import Sequence

from auxcli.gitinfo import GitState, git_state
from auxcli.identity import result_id
from auxcli.lineage import command_line, parent_description, source_tags
from auxcli.spec import Spec
from auxcli.specfile import dump_spec
from auxcli.staleness import spec_sha256
from auxcli.tracking import RunTracker, flatten


def open_spec_parent(tracker: RunTracker, spec: Spec, *, git: GitState | None = None,
                     command: str | None = None) -> str:
    """The id of `spec`'s parent run in `tracker`'s store, created on first use."""
    git, command = git or git_state(), command or command_line()
    tags = {**source_tags(git, command), **git.as_tags(), "auxcli.spec_sha256": spec_sha256(spec)}
    return tracker.spec_parent(spec.name, result_id(spec), tags, flatten(spec.to_plain()),
                               description=parent_description(spec, command=command, spec_text=dump_spec(spec)))


def open_spec_parents(specs: Sequence[Spec]) -> None:
    """Each spec's parent run, opened once before its seeds start in other processes or on other nodes."""
    git, command = git_state(), command_line()
    for spec in {spec.name: spec for spec in specs}.values():
        tracker = RunTracker(spec.tracking.uri, spec.tracking.experiment)
        open_spec_parent(tracker, spec, git=git, command=command)
