"""The run folder `runs/<name>/seed-<k>/`: fixed paths, each file rewritten whole, so DVC can track them.

`spec.resolved.yaml` (what ran), `history.csv` (one row per epoch), `last.pt` (resume state, after every
epoch), `final.pt` (weights for transfer) and `metrics.json` (final and best numbers). `metrics.json`
is written last: its presence means the run finished. A relative `runtime.runs_dir` is anchored at the
repository root (`auxcli.project.anchored`), so every subfolder sees the same runs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auxcli.errors import OutputError
from auxcli.project import anchored
from auxcli.spec import Spec


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))



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
    repro = property(lambda self: self.root / "repro")  # the reproducibility record (auxcli.bundle.record)

    def is_finished(self) -> bool:
        return self.metrics.exists()

    def prepare(self) -> None:
        """Create the folder and prove it is writable before any training starts."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise OutputError(f"{self.root}: the run folder cannot be written ({exc.strerror}). "
                              "Choose another runtime.runs_dir or fix the folder's permissions.") from None

    def clear(self) -> None:
        """Forget an earlier run (for --force): every output goes, the folder stays."""
        for path in (self.metrics, self.final, self.last, self.history, self.spec):
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
        writer.writerows(history)
        atomic_write_text(self.history, out.getvalue())

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_text(self.metrics, json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    def read_metrics(self) -> dict:
        return json.loads(self.metrics.read_text())
