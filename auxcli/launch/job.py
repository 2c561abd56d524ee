"""What a Slurm job runs: `auxcli run FILE --seed S [--set ...]` in a child process, requeued on preemption.

submitit pickles an `AuxcliRun` and calls it on the compute node. On its preemption signal (USR2 by
default, sent `signal_delay_s` before the time limit too) submitit calls `checkpoint`: the child gets
SIGTERM, records its MLflow run as KILLED and keeps `last.pt`, and submitit requeues the job (at most
`max_num_timeout` times), whose new `auxcli run` resumes from `last.pt` into the same MLflow run. A child
that fails (exit code not 0) fails the job, which is not retried; jobs that wait on it (`afterok`) are
cancelled by Slurm (`--kill-on-invalid-dep=yes`).

With `nproc` > 1 the child is torchrun (`auxcli.train.launch`) with `nproc` processes per node; over
several nodes each node's task runs torchrun with Slurm's node list for the rendezvous.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

RENDEZVOUS_PORT = 29500


def _ignore_preemption_signals() -> None:
    # The preemption signal reaches every process of the step; the child must not die of it (USR1/USR2
    # terminate by default): the parent's checkpoint() stops it with SIGTERM, which it records.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


@dataclass
class AuxcliRun:
    python: str
    run_args: list[str]
    nproc: int = 1
    env: dict[str, str] = field(default_factory=dict)

    def command(self, nodes: int = 1, node_rank: int = 0, master: str = "127.0.0.1") -> list[str]:
        if self.nproc == 1 and nodes == 1:
            return [self.python, "-m", "auxcli", "run", *self.run_args]
        if nodes == 1:
            launch = ["--standalone"]
        else:
            launch = [f"--nnodes={nodes}", f"--node-rank={node_rank}", f"--master-addr={master}",
                      f"--master-port={RENDEZVOUS_PORT}"]
        return [self.python, "-m", "auxcli.train.launch", *launch, f"--nproc-per-node={self.nproc}",
                "-m", "auxcli", "run", *self.run_args]

    def __call__(self) -> int:
        import submitit

        job = submitit.JobEnvironment()
        env = {**os.environ, **self.env, "AUXCLI_EXECUTOR": "slurm", "AUXCLI_SLURM_LOG": str(job.paths.stdout)}
        command = self.command(job.num_nodes, job.node, job.hostnames[0] if job.num_nodes > 1 else "127.0.0.1")
        self._process = subprocess.Popen(command, env=env, preexec_fn=_ignore_preemption_signals)
        # Polled, not wait(): submitit's signal handler runs checkpoint() in this thread, and a wait() here
        # would hold the Popen's wait lock, so checkpoint's own wait could never see the child end.
        while (code := self._process.poll()) is None:
            time.sleep(0.5)
        if code:
            raise RuntimeError(f"auxcli run {' '.join(self.run_args)} exited with code {code}")
        return code

    def checkpoint(self, *args, **kwargs):
        """Stop the child as a signal would (KILLED, last.pt kept); the requeued job resumes from last.pt."""
        import submitit

        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
        return submitit.helpers.DelayedSubmission(AuxcliRun(self.python, self.run_args, self.nproc, self.env))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_process"}
