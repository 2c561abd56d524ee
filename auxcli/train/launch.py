"""`auxcli run --nproc N`: each run of the plan as N torchrun processes on this machine.

The shortcut runs PyTorch's own launcher with its standalone rendezvous over one job's command line
(`auxcli.launch.executors.Torchrun`), exactly as a user would:

    python -m torch.distributed.run --standalone --nproc-per-node N -m auxcli run SPEC --seed S [--set ...]

through this module's `__main__`, which calls torchrun's `run` and, when workers fail, exits with the
first failed worker's exit code (2 for bad input, 1 for a runtime failure, 128+signal when killed)
instead of torchrun's blanket 1 and its traceback; the workers have printed the message already.
With CUDA every process needs its own GPU, so asking for more processes than GPUs fails here, exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from auxcli.errors import LaunchError


def torchrun_command(nproc: int, run_args: Sequence[str]) -> list[str]:
    """torchrun over `auxcli run RUN_ARGS`, the workers saying as much as this process (-q/-v: their own
    command line would otherwise reset the inherited AUXCLI_VERBOSITY to normal)."""
    from auxcli.console import verbosity_flags

    return [sys.executable, "-m", "auxcli.train.launch", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "auxcli", *verbosity_flags(), "run", *run_args]


def check_gpus(nproc: int, devices: Sequence[str]) -> None:
    """More processes than GPUs is an error when any spec trains on CUDA (`auto` with CUDA present)."""
    import torch

    cuda = torch.cuda.is_available()
    wants_cuda = [d for d in devices if d.startswith("cuda") or (d == "auto" and cuda)]
    if not wants_cuda:
        return
    gpus = torch.cuda.device_count()
    if nproc > gpus:
        fewer = f"Use --nproc {gpus} or fewer, or" if gpus else "Use"  # --nproc 0 is no advice: min is 1
        raise LaunchError(f"--nproc {nproc}: runtime.device {wants_cuda[0]} needs one GPU per process, and this "
                          f"machine has {gpus}. {fewer} runtime.device: cpu (gloo).")


def launch(nproc: int, run_args: Sequence[str]) -> int:
    """Run `auxcli run RUN_ARGS` as `nproc` torchrun processes (`check_gpus` first); the job's exit code."""
    process = subprocess.Popen(torchrun_command(nproc, run_args), env={**os.environ})
    try:
        return process.wait()
    except KeyboardInterrupt:  # Ctrl-C reached torchrun and the workers too: let them record KILLED
        return process.wait() or 130


def _torchrun_main(argv: Sequence[str]) -> int:
    """torchrun, exiting with the first failed worker's code (a signal as 128 + its number)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(list(argv)))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        return code if code > 0 else 128 - code if code < 0 else 1
    except SignalException as exc:  # Ctrl-C or SIGTERM reached torchrun; it has stopped the workers
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(_torchrun_main(sys.argv[1:]))
