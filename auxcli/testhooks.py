"""Test-only pause points, so kill tests can SIGKILL a real `auxcli run` at its most dangerous moments.

With `AUXCLI_TEST_PAUSE_AT=<point>` in the environment, the process prints `auxcli-test-paused-at <point>`
and sleeps (`AUXCLI_TEST_PAUSE_SECONDS`, default 60) when it reaches that point; the test kills it there.
Unset (always, outside tests), a pause point is one dictionary lookup. Points:

- `after-lock`: the run folder's lock is held, nothing else done;
- `before-epoch`: the MLflow run is open (RUNNING), an epoch is about to start;
- `after-checkpoint`: an epoch's `last.pt` is saved, its MLflow metrics not yet logged;
- `after-metrics`: `metrics.json` is written, no MLflow artifact logged yet;
- `during-artifacts`: the first MLflow artifact is logged, the others not;
- `before-marker`: the MLflow run is closed FINISHED, `complete.json` not yet written;
- `analysis-run-open`, `report-run-open`: `auxcli analyze`'s or `auxcli report --plots`' MLflow run is
  open (RUNNING), nothing logged to it yet.
"""

from __future__ import annotations

import os
import time

PAUSE_ENV = "AUXCLI_TEST_PAUSE_AT"


def pause_point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) != name:
        return
    print(f"auxcli-test-paused-at {name}", flush=True)
    time.sleep(float(os.environ.get("AUXCLI_TEST_PAUSE_SECONDS", "60")))
