"""The few exception types that cross module boundaries.

Every error a user can cause is one of these; `cli.py` turns them into a one-paragraph message and an
exit code. Nothing else in the package prints errors or calls `sys.exit`.
"""

from __future__ import annotations

from dataclasses import dataclass


class AuxcliError(Exception):
    """A user-facing failure with a message that needs no traceback."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One invalid field: where it was written and what is allowed instead."""

    source: str  # file name, or "--set" for command-line overrides
    line: int | None  # 1-based
    column: int | None  # 1-based
    path: str  # dotted field path, e.g. "task.aux.kind"
    message: str
    allowed: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        text = f"{where} {self.path or '<spec>'}: {self.message}"
        if self.allowed:
            text += f"; allowed: {self.allowed}"
        from auxcli.credentials import mask_passwords

        return mask_passwords(text)  # a --set or a line may quote a URI with a password


class SpecError(AuxcliError):
    """One or more problems with a spec file or its overrides."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DataError(AuxcliError):
    """Missing, corrupt or mismatching data files."""

    exit_code = 2


class CheckpointError(AuxcliError):
    """A checkpoint that cannot be read or does not fit the spec."""

    exit_code = 2


class TransferError(AuxcliError):
    """A `transfer.from` that cannot be resolved or does not fit the spec."""

    exit_code = 2


class TrackingError(AuxcliError):
    """The MLflow tracking store cannot be reached or queried."""

    exit_code = 2


class OutputError(AuxcliError):
    """The run folder cannot be written."""

    exit_code = 2


class RunInUse(AuxcliError):
    """Another process holds the run folder's lock (the same spec and seed started twice)."""

    exit_code = 2


class DamagedRunFile(AuxcliError):
    """A run folder's file (`history.csv`, `metrics.json`) that cannot be read: merge-conflict markers, a
    truncated copy, foreign content."""

    exit_code = 2


class StaleResult(AuxcliError):
    """The run folder holds a result of a different resolved spec than the one asked for."""

    exit_code = 2


class TrainingDiverged(AuxcliError):
    """The loss became NaN or infinite."""

    exit_code = 1


class AnalysisError(AuxcliError):
    """`auxcli analyze` inputs that cannot be compared (unknown run, unfinished run, different data)."""

    exit_code = 2


class BundleError(AuxcliError):
    """A bundle that cannot be built, or one that fails verification (changed, extra or unsafe members)."""

    exit_code = 2


class ReproductionMismatch(AuxcliError):
    """`auxcli reproduce` re-ran the bundle and some metric is outside its tolerance."""

    exit_code = 1
# errno values that mean "the path you gave cannot be used" (bad input, exit 2) rather than "the machine
# failed" (full disk, I/O error: exit 1).
_BAD_PATH_ERRNOS = frozenset({"EACCES", "EPERM", "EROFS", "ENAMETOOLONG", "ENOENT", "ENOTDIR", "EISDIR",
                              "EEXIST", "ELOOP", "EINVAL"})


def describe_unexpected(exc: BaseException) -> tuple[str, int]:
    """A one-paragraph message and exit code for an error no module turned into an `AuxcliError`.

    OSErrors name the path and say what to do; anything else names its type and points at `--debug`.
    """
    import errno

    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "")
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        where = f"{paths}: " if paths else ""
        what = exc.strerror or str(exc) or type(exc).__name__
        hint = {"ENOSPC": "free some space (or point runtime.runs_dir / --out elsewhere) and re-run; an "
                          "interrupted run resumes from its last.pt",
                "EDQUOT": "free some space within your quota and re-run",
                "EROFS": "the file system is read-only: choose a writable folder",
                "EACCES": "check the permissions of that path, or choose another one",
                "ENAMETOOLONG": "choose a shorter name or path"}.get(name, "check that path and re-run")
        code = 2 if name in _BAD_PATH_ERRNOS else 1
        return f"{where}{what} ({name or 'OSError'}); {hint}.", code
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return (f"unexpected {type(exc).__name__}: {first}. This is a failure auxcli did not anticipate; re-run with "
            "--debug for the traceback and report it.", 1)


def output_error(path: object, exc: OSError, what: str = "") -> OutputError:
    """An `OutputError` for a failed write of `path`, with the exit code `describe_unexpected` gives."""
    message, code = describe_unexpected(OSError(exc.errno, exc.strerror or str(exc), str(path)))
    error = OutputError(f"cannot write {what + ' ' if what else ''}{message}")
    error.exit_code = code
    return error


class DeviceError(AuxcliError):
    """`runtime.device` (or `--device`) names a device this machine does not have."""

    exit_code = 2


class LaunchError(AuxcliError):
    """A multi-process launch that cannot work (e.g. more processes per machine than GPUs)."""

    exit_code = 2


class DistributedError(AuxcliError):
    """An error raised on one rank of a torchrun job, raised again on every other rank with the same
    message and exit code (see `auxcli.train.distributed`). `quiet`: rank 0 prints it, the others do not."""

    def __init__(self, message: str, exit_code: int = 1, quiet: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.quiet = quiet
