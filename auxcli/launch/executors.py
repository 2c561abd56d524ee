"""The one interface every backend of `auxcli run` offers (submitit's model): `submit(jobs)` takes the
plan's jobs (`auxcli.launch.jobs.plan_jobs`: order, states, dependencies, command lines, built once by
`cli.run`) and returns one handle per job with `state()` and `result()`; then `report(handles)` is what
the command prints and `exit_code` what it exits with.

- `InProcess` (the default): each job in this process, in plan order. Under torchrun every worker does
  this as one rank of the job, inside the process group `cli.run` joins (`auxcli.train.distributed`).
- `LocalProcesses` (`--concurrent K`): K `auxcli run FILE --seed S` processes at once on this machine
  (`auxcli.concurrent`); `submit` returns when they have all ended.
- `Torchrun` (`--nproc N`): each job as N torchrun processes on this machine (`auxcli.train.launch`), one
  job after another; the workers run the job's own command line, so they take the in-process path.
- `SlurmExecutor` (`--executor slurm`, `auxcli.launch.slurm`): one Slurm job each (torchrun inside it
  with `--nproc`); `submit` returns when they are queued.

`pick` chooses one from the command's flags. Torch-free: the backends import what they run when they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from auxcli.launch.jobs import RunJob
from auxcli.launch.settings import SlurmSettings


class Handle(Protocol):
    job: RunJob
    job_id: str

    def state(self) -> str: ...

    def result(self) -> object: ...


class Executor(Protocol):
    name: str
    exit_code: int  # what `auxcli run` exits with once `submit` has returned

    def submit(self, jobs: Sequence[RunJob], *, resume: bool = False, force: bool = False) -> list[Handle]: ...

    def report(self, handles: Sequence[Handle]) -> str: ...


def pick(*, concurrent: int = 1, nproc: int | None = None, slurm: SlurmSettings | None = None) -> Executor:
    """The executor of `auxcli run`'s flags (their bad combinations are refused by `cli.run` first)."""
    if slurm is not None:
        from auxcli.launch.slurm import SlurmExecutor

        return SlurmExecutor(slurm, nproc=nproc or 1)
    if concurrent > 1:
        return LocalProcesses(concurrent)
    if nproc is not None:
        return Torchrun(nproc)
    return InProcess()


@dataclass
class EndedHandle:
    """A job a local executor has run: its exit code (None: never started, the command was interrupted)."""

    job: RunJob
    job_id: str
    exit_code: int | None

    def state(self) -> str:
        from auxcli.catalogue import folder_state

        return folder_state(self.job.spec, self.job.seed)

    def result(self) -> int | None:
        return self.exit_code


def first_job_of_each_spec(jobs: Sequence[RunJob]) -> list[RunJob]:
    first: dict[str, RunJob] = {}
    for job in jobs:
        first.setdefault(job.spec.name, job)
    return list(first.values())


class InProcess:
    """The default: every job trained in this process, in plan order (under torchrun: as this rank)."""

    name = "in-process"
    exit_code = 0  # a failure raises instead: the CLI turns the `AuxcliError` into its exit code

    def submit(self, jobs: Sequence[RunJob], *, resume: bool = False, force: bool = False) -> list[EndedHandle]:
        """Check every spec before any data is generated, then train each job; the first failure raises and
        the jobs after it do not run."""
        from auxcli.runrecord import Provenance
        from auxcli.tracking import check_tracking_uri, resolve_tracking_uri
        from auxcli.train.distributed import current
        from auxcli.train.runner import run_seed
        from auxcli.train.runtime import check_devices

        specs = first_job_of_each_spec(jobs)
        with current().agree():  # under torchrun: a problem on any rank is the same error on every rank
            check_devices([(job.file, job.spec) for job in specs])
            for job in specs:  # a bad store URI is an error before any data is generated or any epoch runs
                check_tracking_uri(resolve_tracking_uri(job.spec.tracking.uri))
            # Each spec's provenance holds the overrides that make it, a sweep point's own values included.
            provenance = {job.spec.name: Provenance.capture(job.file, job.overrides) for job in specs}
        handles = []
        for job in jobs:
            run_seed(job.spec, job.seed, resume=resume, force=force, provenance=provenance[job.spec.name])
            handles.append(EndedHandle(job, job.label, 0))
        return handles

    def report(self, handles: Sequence[EndedHandle]) -> str:
        return ""  # each run has said how it went


class LocalProcesses:
    """`--concurrent K`: the jobs as local processes, at most K at once, transfers after their sources."""

    name = "local"

    def __init__(self, concurrent: int):
        self.concurrent = concurrent
        self.exit_code = 0

    def prepare(self, jobs: Sequence[RunJob]) -> None:
        """Before launching: what the processes would otherwise race to create (the MLflow store and
        experiment, each data set, each spec's parent run), made once here."""
        from auxcli.concurrent import prepare_shared
        from auxcli.parentrun import open_spec_parents

        prepare_shared([job.spec for job in first_job_of_each_spec(jobs)])
        open_spec_parents([job.spec for job in jobs if job.state not in ("done", "stale")])

    def submit(self, jobs: Sequence[RunJob], *, resume: bool = False, force: bool = False) -> list[EndedHandle]:
        from auxcli import concurrent

        self.prepare(jobs)
        exit_codes: dict[str, int] = {}
        self.exit_code = concurrent.run_concurrently(list(jobs), concurrent=self.concurrent,
                                                     child_options=["--resume"] * resume + ["--force"] * force,
                                                     exit_codes=exit_codes)
        return [EndedHandle(job, job.label, exit_codes.get(job.label)) for job in jobs]

    def report(self, handles: Sequence[EndedHandle]) -> str:
        return ""  # each failure was said as it happened, with its run's label


class Torchrun:
    """`--nproc N` on this machine: each job as N torchrun processes, one job after another."""

    name = "torchrun"

    def __init__(self, nproc: int):
        self.nproc = nproc
        self.exit_code = 0

    def submit(self, jobs: Sequence[RunJob], *, resume: bool = False, force: bool = False) -> list[EndedHandle]:
        """Check there is a GPU per process where a spec trains on CUDA (exit 2 before anything starts), then
        run each job's command line under torchrun; the first failure ends the command, as in-process."""
        from auxcli.train.launch import check_gpus, launch

        check_gpus(self.nproc, [job.spec.runtime.device for job in first_job_of_each_spec(jobs)])
        handles = []
        for job in jobs:
            code = launch(self.nproc, job.run_arguments(resume=resume, force=force))
            handles.append(EndedHandle(job, job.label, code))
            if code:
                self.exit_code = code
                break
        return handles

    def report(self, handles: Sequence[EndedHandle]) -> str:
        return ""  # rank 0 of each job has said how it went
