"""Shared test set-up: no telemetry, no network, each test in its own working directory."""

from __future__ import annotations

import os
import select
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.pop("MLFLOW_TRACKING_URI", None)


@contextmanager
def project_folder(root: Path):
    """`workdir` for a module-scoped fixture: `root` as the working folder, with the embedded MLflow store
    (no MLFLOW_TRACKING_URI), until the block ends; yields the MonkeyPatch for more."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield mp


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run the test from an empty folder: run folders and the embedded MLflow store land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield tmp_path
    # mlflow.set_tracking_uri() in a test also exports MLFLOW_TRACKING_URI: undo it for the next test.
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)


TINY_SPEC = """\
name: {name}
seeds: [0]
data:
  dataset: synthetic
  root: {data_root}
  synthetic: {{train_per_class: 4, test_per_class: 2}}
model: {{backbone: resnet, depth: 8, base_width: 4}}
train: {{epochs: 2, batch_size: 64, milestones: [1], eval_batch_size: 200}}
runtime: {{threads: 1}}
"""


@pytest.fixture
def tiny_spec(workdir):
    """Write a tiny spec (depth-8 ResNet, 4 channels, 400 generated images, 2 epochs) and return its path.

    Extra YAML text is appended as-is, so it may only add top-level keys the template lacks
    (tiny_spec("x", "task: {labels: random}")); to change one it has, edit the written text."""
    data_root = (workdir / "data").as_posix()

    def make(name: str = "tiny", extra: str = "") -> os.PathLike[str]:
        path = workdir / f"{name}.yaml"
        path.write_text(TINY_SPEC.format(name=name, data_root=data_root) + extra)
        return path

    return make


# Image-folder data sets (`data.dataset: folder`): four classes, each one colour with noise.
FOLDER_COLOURS = {"car": (200, 40, 40), "cat": (40, 200, 40), "dog": (40, 40, 200), "ship": (200, 200, 40)}


@pytest.fixture
def image_folder(workdir):
    """Write train/<class>/ and test/<class>/ images under workdir/<name> and return that folder.

    PNGs plus one JPEG per class, of non-square sizes other than 32, each class one colour with noise,
    so a linear probe can tell the classes apart: image_folder(train=6, test=3)."""
    import numpy as np
    import torch
    from torchvision.io import encode_jpeg, write_png

    def make(name: str = "images", *, train: int = 6, test: int = 3, seed: int = 0):
        root = workdir / name
        rng = np.random.default_rng(seed)
        for split, count in (("train", train), ("test", test)):
            for cls, colour in FOLDER_COLOURS.items():
                folder = root / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    height, width = 20 + 4 * (i % 3), 28 + 2 * (i % 2)  # not square, not 32
                    noise = rng.integers(-30, 31, (3, height, width))
                    image = torch.from_numpy(np.clip(np.array(colour)[:, None, None] + noise, 0, 255).astype(np.uint8))
                    if i == 0:
                        (folder / f"{i:03d}.jpg").write_bytes(encode_jpeg(image, quality=95).numpy().tobytes())
                    else:
                        write_png(image, str(folder / f"{i:03d}.png"))
        return root

    return make


@pytest.fixture
def time_limit():
    """Fail a test that blocks (a FIFO opened by mistake waits for a writer forever) after 60 s: SIGALRM
    interrupts the blocking call and the handler's exception ends it."""
    import signal

    def expire(signum, frame):
        raise TimeoutError("the test blocked for 60 s (a FIFO or device read?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session", autouse=True)
def _own_cache_home(tmp_path_factory):
    """The image-folder cache markers (auxcli.data.folder.trust_folder) go to a per-session folder, not ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _migrated_store_template(tmp_path_factory):
    """A new SQLite store gets its schema as a copy of one migrated once per session.

    MLflow builds a new store's schema by running every Alembic migration, 1-3 s per store and a third of
    the time of the tests that train in process; the result is the same file each time. So the migrations
    run once, here, and every later new store in this process receives a byte copy (SQLite's backup API)
    of their result; MLflow then adds its Default experiment as usual. Tests of the migrations themselves
    (a full disk halfway) are marked `real_store_migrations`. Processes a test starts migrate as always."""
    import sqlite3

    import sqlalchemy
    from mlflow.store.db import utils

    real = utils._initialize_tables
    template = tmp_path_factory.mktemp("store-template") / "migrated.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{template}")
    real(engine)
    engine.dispose()

    def copy_of_the_migrated_schema(engine):
        if not _COPY_MIGRATED_SCHEMA["on"] or engine.dialect.name != "sqlite" or engine.url.database in (None, "",
                                                                                                        ":memory:"):
            return real(engine)
        raw, source = engine.raw_connection(), sqlite3.connect(template)
        try:
            source.backup(raw.driver_connection)
        finally:
            source.close()
            raw.close()

    utils._initialize_tables = copy_of_the_migrated_schema
    yield
    utils._initialize_tables = real


_COPY_MIGRATED_SCHEMA = {"on": True}


@pytest.fixture(autouse=True)
def _real_store_migrations_when_marked(request):
    """`@pytest.mark.real_store_migrations`: this test's new stores run MLflow's migrations."""
    _COPY_MIGRATED_SCHEMA["on"] = request.node.get_closest_marker("real_store_migrations") is None
    yield
    _COPY_MIGRATED_SCHEMA["on"] = True


@pytest.fixture(autouse=True)
def _cli_environment_per_test():
    """The CLI exports its verbosity (-q/-v) and command line for the processes it starts; in one pytest
    process that would leak from one test's `invoke` into the next test."""
    yield
    for name in ("AUXCLI_VERBOSITY", "AUXCLI_COMMAND"):
        os.environ.pop(name, None)


SPECIAL_FILE_KINDS = ("fifo", "device", "folder")


def make_special_file(path, kind: str) -> None:
    """Put a FIFO, a link to /dev/zero or a folder at `path`: what a reader of regular files must refuse
    without blocking or reading forever."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


def wait_for_line(proc, marker: str, timeout_s: float = 180) -> str:
    """Read `proc`'s text stdout until a whole line contains `marker`; return everything read so far.

    Reads the pipe's file descriptor itself: `select` on it and then `proc.stdout.readline()` would leave
    later lines in the reader's buffer, where `select` cannot see them, and the wait would last until the
    process printed something else (a paused process: its whole pause). Kills `proc` and fails if the line
    never comes. Whatever follows the marker's line in the same read is not handed back."""
    fd, seen = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 1.0)[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break  # the process closed its output: it has ended
        seen += chunk
        text = seen.decode(errors="replace")
        if any(marker in line for line in text.split("\n")[:-1]):
            return text
    proc.kill()
    raise AssertionError(f"never printed a line with {marker!r}:\n{seen.decode(errors='replace')}")
