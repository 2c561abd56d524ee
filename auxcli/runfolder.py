"""The run folder `runs/<name>/seed-<k>/`: fixed paths, each file rewritten whole, so DVC can track them.

`spec.resolved.yaml` (what ran), `history.csv` (one row per epoch), `last.pt` (resume state, after every
epoch), `final.pt` (weights for transfer), `metrics.json` (final and best numbers) and `complete.json`
(the completion marker). Completion has two phases: `metrics.json` says training finished; only after
the MLflow artifacts are logged and the MLflow run is closed is `complete.json` written, so its
presence means the whole result is recorded. `.lock` guards the folder while a process runs in it.
A relative `runtime.runs_dir` is anchored at the repository root (`auxcli.project.anchored`), so every
subfolder sees the same runs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auxcli.errors import DamagedRunFile, OutputError, RunInUse, output_error
from auxcli.project import anchored
from auxcli.spec import Spec


TMP_SUFFIX = ".tmp"


def _readable_like_any_file(fd: int) -> None:
    """mkstemp makes 0600; a file the user makes is 0666 less the umask (0644 under umask 022), so that
    bundles and results can be shared. Reading the umask means setting it: it is set back at once."""
    mask = os.umask(0o022)
    os.umask(mask)
    try:
        os.fchmod(fd, 0o666 & ~mask)
    except OSError:  # a file system without modes: its own default stands
        pass


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`.

    A failed write (full disk, read-only folder) removes the temporary file and raises `OutputError`
    naming `path` (exit 1 for a full disk, 2 for a path that cannot be written). A killed process can
    still leave `.<name>.*.tmp` behind: `RunFolder.remove_stale_temporaries` clears those.
    """
    if path.exists() and not path.is_file():  # /dev/stdout, a FIFO: write through, never replace the node
        try:
            with open(path, "wb") as f:
                write(f)
        except OSError as exc:
            raise output_error(path, exc) from None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        _readable_like_any_file(fd)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise output_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


class RunFolderLock:
    """An exclusive `flock` on `<run folder>/.lock`, naming its holder (pid and host) inside the file.

    The kernel drops the lock when the holder exits, however it exits (SIGKILL included), so a lock is
    never stale; the file itself stays (removing it would let two processes lock two different files).
    A second process gets `RunInUse` (exit 2) naming the holder.
    """

    def __init__(self, root: Path):
        self.path = Path(root) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl
        import socket

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            error = OutputError(f"{self.path.parent}: the run folder cannot be written ({exc.strerror}). Choose "
                                "another runtime.runs_dir or fix the folder's permissions.")
            error.exit_code = output_error(self.path, exc).exit_code
            raise error from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", errors="replace").strip() or "another process"
            os.close(fd)
            raise RunInUse(f"{self.path.parent} is in use by {holder}: the same spec and seed is already running. "
                           "Wait for it to finish (or stop it), then re-run; to run both, give this one another "
                           "name with --set name=...") from None
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()



@dataclass(frozen=True)
class RunFolder:
    root: Path

    @classmethod
    def of(cls, spec: Spec, seed: int) -> RunFolder:
        return cls(anchored(spec.runtime.runs_dir) / spec.name / f"seed-{seed}")

    spec = property(lambda self: self.root / "spec.resolved.yaml")
    history = property(lambda self: self.root / "history.csv")
    metrics = property(lambda self: self.root / "metrics.json")
    last = property(lambda self: self.root / "last.pt")
    final = property(lambda self: self.root / "final.pt")
    complete = property(lambda self: self.root / "complete.json")  # the completion marker, written last
    repro = property(lambda self: self.root / "repro")  # the reproducibility record (auxcli.runrecord)

    def is_finished(self) -> bool:
        """Finished and fully recorded: the completion marker exists (metrics.json alone is `incomplete`)."""
        return self.complete.exists()

    def prepare(self) -> None:
        """Create the folder and prove it is writable before any training starts."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise self.unusable(exc) from None

    def unusable(self, exc: OSError) -> OutputError:
        """The one-paragraph error for a run folder the file system refuses (a name too long, no permission)."""
        return OutputError(f"{self.root}: the run folder cannot be written ({exc.strerror}). "
                           "Choose another runtime.runs_dir or fix the folder's permissions.")

    def lock(self) -> RunFolderLock:
        """The folder's lock; hold it (`with folder.lock():`) for as long as the run writes here."""
        return RunFolderLock(self.root)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete `.<file>.*.tmp` left by writes a kill interrupted; call it only while holding the lock."""
        stale = [p for p in self.root.glob(f".*{TMP_SUFFIX}") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def clear(self) -> None:
        """Forget an earlier run (for --force): every output goes, the folder stays."""
        for path in (self.complete, self.metrics, self.final, self.last, self.history, self.spec):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.root / "artifacts", ignore_errors=True)
        shutil.rmtree(self.repro, ignore_errors=True)

    def write_spec(self, text: str) -> None:
        atomic_write_text(self.spec, text)

    def write_history(self, history: list[dict[str, float]]) -> None:
        columns: list[str] = []
        for row in history:
            columns += [key for key in row if key not in columns]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        # `epoch` as 1, 2, ... (never 1.0): plots and readers take it for the integer it is
        writer.writerows({**row, "epoch": int(row["epoch"])} if "epoch" in row else row for row in history)
        atomic_write_text(self.history, out.getvalue())

    def read_history(self) -> list[dict[str, float]]:
        """history.csv's rows (the epochs last.pt holds: written together after every epoch); [] without it.
        `DamagedRunFile` naming the file when it cannot be read."""
        if not self.history.exists():
            return []
        try:
            text = self.history.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise damaged(self.history, "not UTF-8 text") from None
        return read_history(text, self.history)

    def epochs_done(self) -> int:
        return len(self.read_history())

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_text(self.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    def read_metrics(self) -> dict:
        """metrics.json as a mapping; `DamagedRunFile` naming the file when it is not one."""
        try:
            metrics = json.loads(self.metrics.read_bytes())
        except ValueError as exc:
            raise damaged(self.metrics, f"not valid JSON ({str(exc)[:100]})") from None
        if not isinstance(metrics, dict):
            raise damaged(self.metrics, "not a JSON object")
        return metrics

    def write_completion(self, record: dict) -> None:
        """The last write of a run: metrics.json, the MLflow artifacts and the closed MLflow run exist."""
        atomic_write_text(self.complete, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_history(text: str, source: Path | str = "history.csv") -> list[dict[str, float]]:
    """The rows of a history.csv text (`RunFolder.write_history`), numbers as floats, empty cells left out;
    `DamagedRunFile` naming `source` and the line for anything else (merge-conflict markers, extra cells)."""
    rows = []
    reader = csv.DictReader(io.StringIO(text))
    try:
        for row in reader:
            if None in row or None in row.values():
                raise damaged(source, f"line {reader.line_num} has {'more' if None in row else 'fewer'} cells "
                                      "than the header")
            try:
                rows.append({k: float(v) for k, v in row.items() if v != ""})
            except ValueError:
                bad = next(v for v in row.values() if v != "" and not _is_number(v))
                raise damaged(source, f"line {reader.line_num} holds {bad[:40]!r}, not a number") from None
    except csv.Error as exc:
        raise damaged(source, f"line {reader.line_num}: {exc}") from None
    if rows and "epoch" not in rows[0]:
        raise damaged(source, "it has no epoch column")
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def damaged(path: Path | str, problem: str) -> DamagedRunFile:
    """The error for a run file that cannot be read, saying what to do."""
    return DamagedRunFile(f"{path}: {problem}; the run file is damaged (a merge conflict or a truncated copy?). "
                          "Restore it (git checkout / dvc checkout, or the run's MLflow artifact); re-running an "
                          "unfinished run rewrites it from last.pt, --force retrains a finished one.")
