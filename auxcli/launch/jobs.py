"""The jobs of `auxcli run SPEC_OR_DIR...`, built once for every executor.

A job is one (spec, seed): the file and overrides that make its spec (a sweep point's values included),
the catalogue state of its run folder (`auxcli.catalogue.folder_state`), the labels of the jobs it must
wait for (every seed of the spec it transfers from, when that spec is in the plan) and the arguments
of the `auxcli run` that trains it alone. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auxcli.spec import Spec


@dataclass(frozen=True)
class RunJob:
    file: Path
    spec: Spec
    seed: int
    overrides: tuple[str, ...] = ()
    state: str = "todo"  # one of auxcli.catalogue.STATES
    after: tuple[str, ...] = field(default=())  # labels of the jobs this one waits for

    @property
    def label(self) -> str:
        return f"{self.spec.name}-s{self.seed}"

    def run_arguments(self, *, resume: bool = False, force: bool = False) -> list[str]:
        """`auxcli run` arguments that train this job alone, exactly as planned."""
        args = [str(self.file), "--seed", str(self.seed)]
        for override in self.overrides:
            args += ["--set", override]
        return args + ["--resume"] * resume + ["--force"] * force


def plan_jobs(files: Sequence[Path], overrides: Sequence[str], seed: int | None) -> list[RunJob]:
    """One job per (spec, seed) in plan order (transfers after their sources), each with its state."""
    from auxcli.catalogue import folder_state
    from auxcli.plan import plan_order
    from auxcli.sweep import load_grid

    _, loaded = load_grid(list(files), list(overrides))
    item_of = {item.spec.name: item for item in loaded}
    ordered = plan_order([item.spec for item in loaded], sources=[str(item.file) for item in loaded])
    seeds_of = {spec.name: [seed] if seed is not None else list(spec.seeds) for spec in ordered}
    jobs = []
    for spec in ordered:
        source = spec.transfer.from_ if spec.transfer else None
        after = tuple(f"{source}-s{s}" for s in seeds_of.get(source, []))
        item = item_of[spec.name]
        jobs += [RunJob(item.file, spec, s, tuple(item.overrides), folder_state(spec, s), after)
                 for s in seeds_of[spec.name]]
    return jobs
