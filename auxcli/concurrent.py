"""`auxcli run --concurrent K`: K independent runs at once on one device, each in its own process.

Small models leave a big GPU idle; K processes share it (each its own CUDA context, MLflow run and run
folder, exactly as `auxcli run SPEC --seed S` would make them). A run waits for every seed of the spec
it transfers from, and is skipped if one of them failed. Shared set-up that processes would otherwise race
on (the MLflow store's schema and experiment, a generated or downloaded data set) is done once, before
any process starts. Each process's output comes line by line, prefixed with its run name.

On the CPU, K processes that each take every core (torch's default) fight over them: two ResNet-20 runs
on 2 cores trained 313 images/s together against 615 for one. So a CPU run whose spec leaves
`runtime.threads` unset gets an equal share of the cores (`OMP_NUM_THREADS`, which sets torch's default
without changing the resolved spec): 593 images/s together, and each run its own core.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auxcli.spec import Spec


@dataclass
class Job:
    file: Path
    spec: Spec
    seed: int
    overrides: list[str] = field(default_factory=list)  # all that makes the spec from the file (a sweep point's too)
    threads: int | None = None  # OMP_NUM_THREADS for its process; None: inherited
    process: subprocess.Popen | None = None
    exit_code: int | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.spec.name}-s{self.seed}"


def jobs_for(files: Sequence[Path], overrides: Sequence[str], seed: int | None) -> list[Job]:
    """One job per (spec, seed) of the spec files, each point of a `--set key=a,b` sweep a spec of its own,
    in plan order (transfers after their sources)."""
    from auxcli.plan import plan_order
    from auxcli.sweep import load_grid

    _, loaded = load_grid(files, overrides)
    item_of = {item.spec.name: item for item in loaded}
    ordered = plan_order([item.spec for item in loaded], sources=[str(item.file) for item in loaded])
    return [Job(item_of[spec.name].file, spec, s, overrides=item_of[spec.name].overrides)
            for spec in ordered for s in ([seed] if seed is not None else spec.seeds)]


def prepare_shared(specs: Sequence[Spec]) -> None:
    """Create each MLflow store and experiment, and each data set, once, so that processes do not race."""
    from auxcli.data.prepare import prepare_data
    from auxcli.tracking import RunTracker

    for uri, experiment in {(s.tracking.uri, s.tracking.experiment) for s in specs}:
        RunTracker(uri, experiment)
    for data in {s.data.model_dump_json(): s.data for s in specs}.values():  # each image size's folder cache too
        prepare_data([data])  # generate, download and verify, or cache, without decoding into this process


def cpu_threads_each(spec: Spec, *, processes: int, cores: int, cuda_available: bool) -> int | None:
    """The CPU threads one of `processes` concurrent runs of `spec` gets (`threads_per_process`)."""
    from auxcli.train.runtime import threads_per_process

    return threads_per_process(spec.runtime.device, spec.runtime.threads, processes=processes, cores=cores,
                               cuda_available=cuda_available)


def run_concurrently(jobs: list[Job], *, concurrent: int, child_options: list[str]) -> int:
    """Run `jobs` (in plan order), at most `concurrent` at a time, each as `auxcli run FILE --seed S` with
    its overrides and `child_options` (--resume, --force); the first failing exit code, else 0."""
    import torch

    prepare_shared([job.spec for job in jobs])
    processes = min(concurrent, len(jobs))
    for job in jobs:  # torch's default in this process: the cores, or OMP_NUM_THREADS if the user set it
        job.threads = cpu_threads_each(job.spec, processes=processes, cores=torch.get_num_threads(),
                                       cuda_available=torch.cuda.is_available())
    lock = threading.Lock()
    waiting, running, failed_specs = list(jobs), [], set()
    names = {job.spec.name for job in jobs}
    exit_code = 0

    def blocked(job: Job) -> bool:
        source = job.spec.transfer.from_ if job.spec.transfer else None
        return source in names and any(j.spec.name == source and j.exit_code is None for j in jobs)

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        while waiting or running:
            for job in [j for j in waiting if j.spec.transfer and j.spec.transfer.from_ in failed_specs]:
                waiting.remove(job)
                job.exit_code = 1
                failed_specs.add(job.spec.name)
                _say(lock, job.label, f"skipped: {job.spec.transfer.from_} failed")
            while len(running) < concurrent and (ready := next((j for j in waiting if not blocked(j)), None)):
                waiting.remove(ready)
                _start(ready, child_options, lock)
                running.append(ready)
            if not running:
                continue
            done = _wait_any(running)
            running.remove(done)
            if done.exit_code:
                failed_specs.add(done.spec.name)
                exit_code = exit_code or done.exit_code
                _say(lock, done.label, f"failed (exit code {done.exit_code})")
    except KeyboardInterrupt:
        _stop(running, signal.SIGINT)
        return 128 + signal.SIGINT
    except _Terminated:  # sent to this process only (kill, DVC): pass it on at once
        _stop(running, signal.SIGTERM, grace_seconds=0.0)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    return exit_code


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated()


def _stop(running: list[Job], signum: int, grace_seconds: float = 10.0) -> None:
    """Let each run stop as `auxcli run` does on Ctrl-C or SIGTERM (MLflow run KILLED, last.pt kept): a
    Ctrl-C at the terminal reached the processes already, so wait a little before passing `signum` on."""
    for job in running:
        if grace_seconds:
            try:
                job.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                pass
        if job.process.poll() is None:
            job.process.send_signal(signum)
    for job in running:
        job.process.wait()
        job.reader.join()


def child_command(job: Job, child_options: list[str]) -> list[str]:
    """`auxcli run FILE --seed S` with the job's overrides and `child_options`, saying as much as this process
    (-q/-v: a child's own command line would otherwise reset the inherited AUXCLI_VERBOSITY to normal)."""
    from auxcli.console import verbosity_flags

    return [sys.executable, "-m", "auxcli", *verbosity_flags(), "run", str(job.file), "--seed", str(job.seed),
            *[arg for override in job.overrides for arg in ("--set", override)], *child_options]


def _start(job: Job, child_options: list[str], lock: threading.Lock) -> None:
    command = child_command(job, child_options)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(job.threads)} if job.threads else {})}
    job.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                   env=env)

    def forward() -> None:
        for line in job.process.stdout:
            _say(lock, job.label, line.rstrip("\n"))

    job.reader = threading.Thread(target=forward, daemon=True)
    job.reader.start()


def _wait_any(running: list[Job]) -> Job:
    """The first of `running` to exit (polled: Popen has no wait-for-any)."""
    import time

    while True:
        for job in running:
            code = job.process.poll()
            if code is not None:
                job.reader.join()
                job.exit_code = code
                return job
        time.sleep(0.1)


def _say(lock: threading.Lock, label: str, line: str) -> None:
    with lock:
        print(f"[{label}] {line}", flush=True)
