"""SIGTERM and Ctrl-C for commands that open a short MLflow run (`analyze`, `report --plots`), as `run` does.

`stop_on_signals` turns the first SIGTERM or SIGINT into `SignalStop`, a `KeyboardInterrupt`: MLflow's and
SQLAlchemy's `except Exception` blocks let it through, so the code that opened a run sees it, marks the
run KILLED (later signals are ignored, so closing is not cut short) and lets it go on; at the command's
edge it becomes `Stopped`, exit 128 + the signal number (143, 130), as `auxcli run` exits. A run whose
process died outright (SIGKILL) carries its host and pid (`process_tags`); `end_orphans` marks such runs
KILLED from a later command (the same idea as `train/record.py`'s orphans of a run folder).
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from auxcli.errors import AuxcliError

HOST_TAG = "auxcli.host"
PID_TAG = "auxcli.pid"


class SignalStop(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Stopped(AuxcliError):
    """A command stopped by SIGTERM or Ctrl-C; exit 128 + the signal number."""

    def __init__(self, signum: int, what: str):
        self.exit_code = 128 + signum
        super().__init__(f"Interrupted by {signal.Signals(signum).name}; {what}")


@contextmanager
def stop_on_signals(what: str) -> Iterator[None]:
    """Raise `SignalStop` on the first SIGTERM or SIGINT inside the block, ignore later ones, and leave the
    block with `Stopped(signum, what)`."""
    state = {"raised": False}

    def handler(signum: int, frame: object) -> None:
        if state["raised"]:
            return
        state["raised"] = True
        raise SignalStop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except SignalStop as exc:
        raise Stopped(exc.signum, what) from None
    except KeyboardInterrupt:  # Ctrl-C before the handler was in place, or re-raised as a plain one
        raise Stopped(signal.SIGINT, what) from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def process_tags() -> dict[str, str]:
    """Tags that let a later command find this process's runs if it dies without closing them."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def end_orphans(client: Any, experiment_id: str, kind_tag: str) -> list[str]:
    """Mark KILLED the RUNNING runs tagged `kind_tag=true` that a process on this host opened and that
    process is gone; returns their ids. Store errors are left to the command's own calls."""
    host = socket.gethostname()
    ended = []
    try:
        found = client.search_runs([experiment_id], filter_string=f"tags.`{kind_tag}` = 'true' and "
                                   "attributes.status = 'RUNNING'", max_results=200)
    except Exception:  # an old or odd store: orphans stay, the command itself still works
        return []
    for run in found:
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or not str(tags.get(PID_TAG, "")).isdigit():
            continue
        if _alive(int(tags[PID_TAG])):
            continue
        try:
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
        except Exception:
            pass
    return ended


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True
