"""How much the CLI says: `-q` (errors and results only), default, `-v` (details), `-vv` (debug logs).

The level lives in the environment variable AUXCLI_VERBOSITY, so processes the CLI starts (torchrun
workers, DVC stages) say as much as their parent. Messages go through `info` and `result`; libraries'
`logging` output follows the same level (WARNING by default, INFO with -v, DEBUG with -vv).
"""

from __future__ import annotations

import logging
import os
import sys

ENV = "AUXCLI_VERBOSITY"


def set_verbosity(level: int) -> None:
    """-1 quiet, 0 normal, 1 verbose, 2+ debug; also sets the `logging` level of the root logger."""
    os.environ[ENV] = str(level)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.ERROR if level < 0 else logging.WARNING if level == 0
                                 else logging.INFO if level == 1 else logging.DEBUG)
    # MLflow sets its own logger to INFO; -q silences its notes, -vv opens its debug output.
    if level < 0 or level >= 2:
        logging.getLogger("mlflow").setLevel(logging.ERROR if level < 0 else logging.DEBUG)


def verbosity() -> int:
    try:
        return int(os.environ.get(ENV, "0"))
    except ValueError:
        return 0


def verbosity_flags() -> list[str]:
    """The command-line flags of the current level (`-q`, `-v`, `-vv`), for an `auxcli` child process."""
    level = verbosity()
    return ["-q"] if level < 0 else ["-v"] * level


def info(message: str) -> None:
    """A progress message (start, resume, skip); silent with -q."""
    if verbosity() >= 0:
        print(message, flush=True)


def result(message: str) -> None:
    """What a command produced (where a run is, its link): printed even with -q."""
    print(message, file=sys.stdout, flush=True)
