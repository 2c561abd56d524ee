"""MLflow tags that say how a run was launched (issue 22): `auxcli.executor`, and under Slurm
`auxcli.slurm.job_id` and `auxcli.slurm.log`.

The launcher sets `AUXCLI_EXECUTOR` (and `AUXCLI_SLURM_LOG`) for the `auxcli run` it starts; Slurm sets
`SLURM_JOB_ID`. A run started by hand carries none of these tags.
"""

from __future__ import annotations

import os

EXECUTOR_TAG = "auxcli.executor"
SLURM_JOB_TAG = "auxcli.slurm.job_id"
SLURM_LOG_TAG = "auxcli.slurm.log"


def launch_tags() -> dict[str, str]:
    executor = os.environ.get("AUXCLI_EXECUTOR")
    if not executor:
        return {}
    tags = {EXECUTOR_TAG: executor}
    if executor == "slurm":
        if os.environ.get("SLURM_JOB_ID"):
            tags[SLURM_JOB_TAG] = os.environ["SLURM_JOB_ID"]
        if os.environ.get("AUXCLI_SLURM_LOG"):
            tags[SLURM_LOG_TAG] = os.environ["AUXCLI_SLURM_LOG"]
    return tags
