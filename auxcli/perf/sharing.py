"""Several independent trainings on one device at once (`auxcli run --concurrent K`): aggregate images/s.

K processes of `python -m auxcli.perf bench --no-reference` start together; each measures its own
end-to-end images/s while the others run, and the sum is what K concurrent runs train per second (each
process's warm-up overlaps the others', so run enough steps that the timed passes dominate).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass


class SharingFailed(RuntimeError):
    """A bench process failed; `exit_code` is the first failure's (2: bad bench options)."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class SharingResult:
    processes: int
    images_per_second: float  # the sum of the processes' end-to-end rates
    per_process: list[float]
    wall_seconds: float


def measure_sharing(processes: int, bench_args: list[str]) -> SharingResult:
    """Start `processes` copies of `python -m auxcli.perf bench --no-reference --format json <bench_args>`."""
    command = [sys.executable, "-m", "auxcli.perf", "bench", "--no-reference", "--format", "json", *bench_args]
    started = time.perf_counter()
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    outputs = [child.communicate()[0] for child in children]
    wall = time.perf_counter() - started
    failed = [child.returncode for child in children if child.returncode]
    if failed:
        raise SharingFailed(failed[0], f"{len(failed)} of {processes} bench processes failed (exit codes {failed}); "
                                       "their messages are above")
    rates = [json.loads(out)["end_to_end_images_per_second"] for out in outputs]
    return SharingResult(processes, sum(rates), rates, wall)
