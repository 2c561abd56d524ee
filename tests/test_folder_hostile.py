"""Image folders are input too (issue 21): pixel bombs, special files, a cache edited to match itself,
names that are not UTF-8. Each is refused naming the file, or ignored and rebuilt, in bounded time."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.data.folder import CACHE_FOLDER, load_folder
from auxcli.errors import DataError


def png_header(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height RGB pixels (its data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def folder_spec(workdir: Path, root: Path) -> Path:
    spec = workdir / "f.yaml"
    spec.write_text(f"name: f\ndata: {{dataset: folder, root: {root}, image_size: 16}}\n"
                    "model: {backbone: linear}\ntrain: {epochs: 1, batch_size: 8}\nruntime: {threads: 1}\n")
    return spec


@pytest.mark.parametrize("width, height", [(10_000, 10_000), (20_000, 20_000), (1 << 30, 1 << 30)],
                         ids=["over-the-limit", "over-twice-the-limit", "absurd"])
def test_a_pixel_bomb_is_refused_before_decoding_naming_it(image_folder, width, height):
    root = image_folder(train=2, test=1)
    bomb = root / "train" / "cat" / "bomb.png"
    bomb.write_bytes(png_header(width, height))
    with pytest.raises(DataError, match="decompression bomb") as err:
        load_folder(root, image_size=16)
    assert str(bomb) in str(err.value) and "89,478,485" in str(err.value)


def test_the_pixel_limit_follows_pils_setting(image_folder, monkeypatch):
    from PIL import Image

    root = image_folder(train=2, test=1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the fixture's images are 20x28 and more
    with pytest.raises(DataError, match="limit of 100"):
        load_folder(root, image_size=16)


def test_run_and_data_prepare_refuse_a_pixel_bomb_with_exit_2(image_folder, workdir):
    root = image_folder(train=2, test=1)
    (root / "test" / "dog" / "bomb.png").write_bytes(png_header(30_000, 30_000))
    spec = folder_spec(workdir, root)
    for command in (["data", "prepare", spec], ["run", spec]):
        result = CliRunner().invoke(app, [str(c) for c in command])
        assert result.exit_code == 2, result.output
        assert "bomb.png" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("where", [b"train/cat/caf\xe9.png", b"train/ca\xeft/000.png"], ids=["file", "class"])
def test_a_name_that_is_not_utf8_is_refused_alike_by_run_and_data_prepare(image_folder, workdir, where):
    root = image_folder(train=2, test=1)
    target = Path(os.fsdecode(os.fsencode(root) + b"/" + where))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((root / "train" / "cat" / "001.png").read_bytes())
    spec = folder_spec(workdir, root)
    for command in (["data", "prepare", spec], ["run", spec]):
        result = CliRunner().invoke(app, [str(c) for c in command])
        assert result.exit_code == 2, result.output
        assert "not valid UTF-8" in result.output and "Traceback" not in result.output


def _load_cache_tensors(root: Path) -> tuple[dict, dict]:
    cache = root / CACHE_FOLDER / "folder-16px.pt"
    return torch.load(cache, weights_only=True), json.loads(cache.with_suffix(".json").read_text())


def _rewrite_cache(root: Path, tensors: dict, manifest: dict) -> None:
    import hashlib

    cache = root / CACHE_FOLDER / "folder-16px.pt"
    torch.save(tensors, cache)
    manifest["cache_sha256"] = hashlib.sha256(cache.read_bytes()).hexdigest()  # a matching self-hash
    cache.with_suffix(".json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit", ["images", "labels-out-of-range", "labels-swapped"])
def test_a_cache_edited_to_match_its_own_hash_is_rebuilt_from_the_images(image_folder, edit):
    root = image_folder(train=3, test=2)
    first = load_folder(root, image_size=16)
    tensors, manifest = _load_cache_tensors(root)
    if edit == "images":
        tensors["train_images"] = torch.zeros_like(tensors["train_images"])
    elif edit == "labels-out-of-range":
        tensors["train_fine"] = torch.full_like(tensors["train_fine"], 99)
    else:
        tensors["train_fine"] = tensors["train_fine"].flip(0)
    _rewrite_cache(root, tensors, manifest)
    again = load_folder(root, image_size=16)
    assert torch.equal(again.train.images, first.train.images)
    assert torch.equal(again.train.fine, first.train.fine)


def test_a_cache_from_another_account_is_not_trusted(image_folder, monkeypatch, tmp_path):
    root = image_folder(train=2, test=1)
    load_folder(root, image_size=16)
    cache = root / CACHE_FOLDER / "folder-16px.pt"
    stamp = cache.stat().st_mtime_ns
    load_folder(root, image_size=16)
    assert cache.stat().st_mtime_ns == stamp  # this account's cache: re-used
    files = {p.name: p.read_bytes() for p in cache.parent.iterdir()}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "someone-else"))
    load_folder(root, image_size=16)
    assert cache.stat().st_mtime_ns != stamp  # not decoded by this account: decoded again and rewritten
    # ... to the same bytes: a DVC-tracked data folder does not change when another machine checks its cache
    assert {p.name: p.read_bytes() for p in cache.parent.iterdir()} == files


FIFO_SCRIPT = """
import os, sys
from pathlib import Path
from auxcli.data.folder import CACHE_FOLDER, load_folder
root = Path(sys.argv[1])
(root / CACHE_FOLDER).mkdir(exist_ok=True)
os.mkfifo(root / CACHE_FOLDER / "folder-16px.json")
os.mkfifo(root / CACHE_FOLDER / "folder-16px.pt")
os.mkfifo(root / "train" / "cat" / "pipe.png")
os.symlink("/dev/zero", root / "train" / "dog" / "zero.png")
data = load_folder(root, image_size=16)
print("loaded", len(data.train.fine))
"""


def test_fifos_and_devices_in_an_image_folder_never_block(image_folder):
    root = image_folder(train=2, test=1)
    done = subprocess.run([sys.executable, "-c", FIFO_SCRIPT, str(root)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert "loaded 8" in done.stdout  # the special files are not images; the FIFO cache is not written through
