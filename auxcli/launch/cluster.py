"""The Slurm path of `auxcli run`, `auxcli plan` and `auxcli cancel`: checks, then one submission per
(spec, seed) from the plan every executor shares (`auxcli.launch.jobs.plan_jobs`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from auxcli.launch.jobs import RunJob, plan_jobs
from auxcli.launch.settings import SlurmSettings


def log_folder(settings: SlurmSettings, jobs: Sequence[RunJob]) -> Path:
    """Job scripts and logs: the launcher's submitit_folder, else `<runs_dir>/.slurm` of the first spec."""
    from auxcli.project import anchored

    if settings.submitit_folder:
        return Path(settings.submitit_folder).absolute()
    runs = anchored(jobs[0].spec.runtime.runs_dir) if jobs else Path("runs")
    return (runs / ".slurm").absolute()


def submit_suite(files: Sequence[Path], overrides: Sequence[str], *, seed: int | None, settings: SlurmSettings,
                 nproc: int | None, resume: bool, force: bool) -> tuple[list, list[RunJob]]:
    """Check, then submit every job that is neither done nor queued; the handles (see `SlurmExecutor`) and
    the jobs not submitted (done, or stale: `auxcli run` would refuse them without --force)."""
    from auxcli.launch.checks import check_partition, check_sbatch, check_shared_folders, check_tracking
    from auxcli.launch.slurm import SlurmExecutor

    check_sbatch()
    jobs = plan_jobs(files, overrides, seed)
    specs = list({job.spec.name: job.spec for job in jobs}.values())
    check_tracking(specs)
    folder = log_folder(settings, jobs)
    check_shared_folders(specs, folder, shared=settings.runs_dir_shared)
    check_partition(settings.partition)
    executor = SlurmExecutor(settings, folder, nproc=nproc or 1)
    return executor.submit(jobs, resume=resume, force=force), executor.skipped


def describe(handles: Sequence, skipped: Sequence[RunJob] = ()) -> str:
    lines = [f"{job.label}: {job.state}, not submitted" + (" (--force replaces it)" if job.state == "stale" else "")
             for job in skipped]
    lines += [f"{h.job.label}: {'submitted' if h.submitted else 'already queued'} as Slurm job {h.job_id}"
              + (f" (after {', '.join(h.job.after)})" if h.submitted and h.job.after else "") for h in handles]
    new = sum(h.submitted for h in handles)
    lines.append(f"{new} job{'s' * (new != 1)} submitted, {len(handles) - new} already queued; "
                 "`auxcli plan` shows their state, `auxcli cancel` cancels them")
    return "\n".join(lines)


def cancel_suite(files: Sequence[Path], overrides: Sequence[str], seed: int | None) -> list[tuple[RunJob, str]]:
    from auxcli.launch.checks import check_sbatch
    from auxcli.launch.slurm import cancel

    check_sbatch()
    return cancel(plan_jobs(files, overrides, seed))


def plan_slurm_column(specs: Sequence, by_run: dict[tuple[str, int], str]) -> tuple[dict[tuple[str, int], str],
                                                                                    list[str]]:
    """`by_run` with each submitted seed's Slurm state beside its own (`todo/pending`), and the last log
    lines of every failed job; unchanged when no seed was ever submitted to Slurm."""
    from auxcli.launch.slurm import log_tail, queue, read_record, slurm_state

    jobs = [RunJob(Path(), spec, seed, state=by_run[spec.name, seed]) for spec in specs for seed in spec.seeds]
    if not any(read_record(job) for job in jobs):
        return by_run, []
    queued = queue()
    shown, failures = dict(by_run), []
    for job in jobs:
        state = slurm_state(job, queued)
        if state is None:
            continue
        record = read_record(job)
        shown[job.spec.name, job.seed] = f"{job.state}/{state}"
        if state == "failed":
            failures.append(f"{job.label}: Slurm job {record['job_id']} failed; log {record.get('stderr')}:")
            failures += [f"  {line}" for line in log_tail(record)]
    return shown, failures
