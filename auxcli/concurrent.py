"""`auxcli run --concurrent K`: K independent runs at once on one device, each in its own process.

Small models leave a big GPU idle; K processes share it (each its own CUDA context, MLflow run and run
folder, exactly as `auxcli run SPEC --seed S` would make them). The runs are the plan's jobs
(`auxcli.launch.jobs.plan_jobs`); a run waits for every seed of the spec it transfers from, and is skipped
if one of them failed. Shared set-up that processes would otherwise race on (the MLflow store's schema and
experiment, a generated or downloaded data set: `prepare_shared`) is done once, before any process starts,
by `auxcli.launch.executors.LocalProcesses`. Each process's output comes line by line, prefixed with its
run name.

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

from auxcli.launch.jobs import RunJob
from auxcli.spec import Spec


@dataclass
class _Child:
    """One job's process while `run_concurrently` runs it (the job itself is the plan's `RunJob`)."""

    job: RunJob
    threads: int | None = None  # OMP_NUM_THREADS for its process; None: inherited
    process: subprocess.Popen | None = None
    exit_code: int | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.job.label


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


def run_concurrently(jobs: Sequence[RunJob], *, concurrent: int, child_options: list[str],
                     exit_codes: dict[str, int] | None = None) -> int:
    """Run `jobs` (in plan order), at most `concurrent` at a time, each as `auxcli run FILE --seed S` with
    its overrides and `child_options` (--resume, --force); a job starts once the jobs it waits for
    (`RunJob.after`) have ended, and is skipped (exit code 1) if one of them failed. The first failing exit
    code, else 0; `exit_codes` receives each ended or skipped job's code by label. The caller prepares
    what the processes share first (`LocalProcesses.prepare`)."""
    import torch

    processes = min(concurrent, len(jobs))
    # torch's default in this process: the cores, or OMP_NUM_THREADS if the user set it
    children = [_Child(job, cpu_threads_each(job.spec, processes=processes, cores=torch.get_num_threads(),
                                             cuda_available=torch.cuda.is_available())) for job in jobs]
    by_label = {child.label: child for child in children}
    lock = threading.Lock()
    waiting, running = list(children), []
    exit_code = 0

    def waits_for(child: _Child) -> list[_Child]:
        return [by_label[label] for label in child.job.after if label in by_label]

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        while waiting or running:
            for child in [c for c in waiting if any(source.exit_code for source in waits_for(c))]:
                waiting.remove(child)
                child.exit_code = 1
                _say(lock, child.label, f"skipped: {child.job.spec.transfer.from_} failed")
            while len(running) < concurrent and (ready := next(
                    (c for c in waiting if all(s.exit_code is not None for s in waits_for(c))), None)):
                waiting.remove(ready)
                _start(ready, child_options, lock)
                running.append(ready)
            if not running:
                continue
            done = _wait_any(running)
            running.remove(done)
            if done.exit_code:
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
        if exit_codes is not None:
            exit_codes.update({c.label: c.exit_code for c in children if c.exit_code is not None})
    return exit_code


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated()


def _stop(running: list[_Child], signum: int, grace_seconds: float = 10.0) -> None:
    """Let each run stop as `auxcli run` does on Ctrl-C or SIGTERM (MLflow run KILLED, last.pt kept): a
    Ctrl-C at the terminal reached the processes already, so wait a little before passing `signum` on."""
    for child in running:
        if grace_seconds:
            try:
                child.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                pass
        if child.process.poll() is None:
            child.process.send_signal(signum)
    for child in running:
        child.process.wait()
        child.reader.join()


def child_command(job: RunJob, child_options: list[str]) -> list[str]:
    """`auxcli run FILE --seed S` with the job's overrides (`RunJob.run_arguments`) and `child_options`,
    saying as much as this process (-q/-v: a child's own command line would otherwise reset the inherited
    AUXCLI_VERBOSITY to normal)."""
    from auxcli.console import verbosity_flags

    return [sys.executable, "-m", "auxcli", *verbosity_flags(), "run", *job.run_arguments(), *child_options]


def _start(child: _Child, child_options: list[str], lock: threading.Lock) -> None:
    command = child_command(child.job, child_options)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(child.threads)} if child.threads else {})}
    child.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     bufsize=1, env=env)

    def forward() -> None:
        for line in child.process.stdout:
            _say(lock, child.label, line.rstrip("\n"))

    child.reader = threading.Thread(target=forward, daemon=True)
    child.reader.start()


def _wait_any(running: list[_Child]) -> _Child:
    """The first of `running` to exit (polled: Popen has no wait-for-any)."""
    import time

    while True:
        for child in running:
            code = child.process.poll()
            if code is not None:
                child.reader.join()
                child.exit_code = code
                return child
        time.sleep(0.1)


def _say(lock: threading.Lock, label: str, line: str) -> None:
    with lock:
        print(f"[{label}] {line}", flush=True)
