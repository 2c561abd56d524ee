"""The Slurm side of `auxcli plan` and `auxcli cancel`, on the plan every executor shares
(`auxcli.launch.jobs.plan_jobs`); `auxcli run --executor slurm` is `auxcli.launch.slurm.SlurmExecutor`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from auxcli.launch.jobs import RunJob, plan_jobs


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
