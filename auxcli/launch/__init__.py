"""Launching a plan of (spec, seed) runs: one `Executor` interface, several backends (issue 22).

Modelled on submitit: the caller builds the jobs and their dependencies once (`jobs.plan_jobs`: plan
order, each seed's catalogue state, each job's `auxcli run` arguments), then hands them to an executor
(`executors.pick`): in-process, `--concurrent K` local processes, torchrun (`--nproc`) or Slurm
(`slurm.SlurmExecutor`, through submitit). Every executor returns handles with a state and a result.
"""
