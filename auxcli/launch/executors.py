"""The one interface every backend of `auxcli run` offers (submitit's model): `submit(jobs)` takes the
plan's jobs (`auxcli.launch.jobs.plan_jobs`: order, states, dependencies, command lines) and returns one
handle per job with `state()` and `result()`.

- `LocalProcesses` (`--concurrent K`): K `auxcli run FILE --seed S` processes at once on this machine
  (`auxcli.concurrent`); `submit` returns when they have all ended.
- `SlurmExecutor` (`--executor slurm`, `auxcli.launch.slurm`): one Slurm job each; `submit` returns when
  they are queued.
In-process training (the default) and `--nproc` (torchrun on this machine) run the whole command line
as one unit, in `cli.run` and `auxcli.train.launch`, since torchrun's workers run that same command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from auxcli.launch.jobs import RunJob


class Handle(Protocol):
    job: RunJob
    job_id: str

    def state(self) -> str: ...

    def result(self) -> object: ...


class Executor(Protocol):
    name: str

    def submit(self, jobs: Sequence[RunJob], *, resume: bool = False, force: bool = False) -> list[Handle]: ...


@dataclass
class EndedHandle:
    """A job a local executor has run: its exit code (None: skipped, its source failed)."""

    job: RunJob
    job_id: str
    exit_code: int | None

    def state(self) -> str:
        from auxcli.catalogue import folder_state

        return folder_state(self.job.spec, self.job.seed)

    def result(self) -> int | None:
        return self.exit_code


class LocalProcesses:
    """`--concurrent K`: the jobs as local processes, at most K at once, transfers after their sources."""

    name = "local"

    def __init__(self, concurrent: int):
        self.concurrent = concurrent
        self.exit_code = 0

    def submit(self, jobs: Sequence[RunJob], *, resume: bool = False, force: bool = False) -> list[EndedHandle]:
        from auxcli.concurrent import Job, run_concurrently

        local = [Job(job.file, job.spec, job.seed, overrides=list(job.overrides)) for job in jobs]
        child = ["--resume"] * resume + ["--force"] * force
        self.exit_code = run_concurrently(local, concurrent=self.concurrent, child_options=child)
        return [EndedHandle(job, str(process.process.pid) if process.process else "", process.exit_code)
                for job, process in zip(jobs, local)]
