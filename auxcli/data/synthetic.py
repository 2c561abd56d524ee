"""Generated CIFAR-100-format archives: the real class structure, images a small CNN learns in minutes.

`synthesize_cifar100` writes `root/cifar-100-python/{train,test,meta}` in exactly the pickle layout of
the official python release (https://www.cs.toronto.edu/~kriz/cifar.html), so torchvision's `CIFAR100`
reads it, plus `manifest.json` with each file's md5 and the generation parameters; `archive_class`
turns that manifest into a `CIFAR100` subclass whose integrity check uses those md5s.

The labels are CIFAR-100's: 100 fine classes in 20 superclasses of 5 (the website's table below).
An image is the superclass's colour (background) with the fine class's pattern drawn in a lighter or
darker shade of it; pattern phase, pattern position and brightness are jittered and every pixel gets
noise. Patterns are textures or centred shapes, so pad-4 random crop and horizontal flip keep them
recognisable. Everything is integer arithmetic on numpy's legacy `RandomState`, whose streams numpy
keeps frozen, and the pickles use a fixed protocol and a numpy-neutral array encoding, so a seed
gives the same bytes (and md5s) on every machine and numpy release.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR100

from auxcli.errors import DataError, output_error

ARCHIVE_FOLDER = CIFAR100.base_folder  # "cifar-100-python"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "auxcli-synthetic-cifar100/1"
FILES = ("train", "test", "meta")
PICKLE_PROTOCOL = 4  # fixed (not pickle.DEFAULT_PROTOCOL) so the bytes, and the md5s, never drift

# CIFAR-100's 20 superclasses and their 5 classes each, in the order of the superclass table on
# https://www.cs.toronto.edu/~kriz/cifar.html; names spelt as in the archive's `meta` pickle
# (singular, underscores; the website writes e.g. "orchids", "medium-sized mammals").
SUPERCLASS_TABLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aquatic_mammals", ("beaver", "dolphin", "otter", "seal", "whale")),
    ("fish", ("aquarium_fish", "flatfish", "ray", "shark", "trout")),
    ("flowers", ("orchid", "poppy", "rose", "sunflower", "tulip")),
    ("food_containers", ("bottle", "bowl", "can", "cup", "plate")),
    ("fruit_and_vegetables", ("apple", "mushroom", "orange", "pear", "sweet_pepper")),
    ("household_electrical_devices", ("clock", "keyboard", "lamp", "telephone", "television")),
    ("household_furniture", ("bed", "chair", "couch", "table", "wardrobe")),
    ("insects", ("bee", "beetle", "butterfly", "caterpillar", "cockroach")),
    ("large_carnivores", ("bear", "leopard", "lion", "tiger", "wolf")),
    ("large_man-made_outdoor_things", ("bridge", "castle", "house", "road", "skyscraper")),
    ("large_natural_outdoor_scenes", ("cloud", "forest", "mountain", "plain", "sea")),
    ("large_omnivores_and_herbivores", ("camel", "cattle", "chimpanzee", "elephant", "kangaroo")),
    ("medium_mammals", ("fox", "porcupine", "possum", "raccoon", "skunk")),
    ("non-insect_invertebrates", ("crab", "lobster", "snail", "spider", "worm")),
    ("people", ("baby", "boy", "girl", "man", "woman")),
    ("reptiles", ("crocodile", "dinosaur", "lizard", "snake", "turtle")),
    ("small_mammals", ("hamster", "mouse", "rabbit", "shrew", "squirrel")),
    ("trees", ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree")),
    ("vehicles_1", ("bicycle", "bus", "motorcycle", "pickup_truck", "train")),
    ("vehicles_2", ("lawn_mower", "rocket", "streetcar", "tank", "tractor")),
)
# The archive numbers both label sets alphabetically; the table above is already in that order.
SUPERCLASS_NAMES: list[str] = [name for name, _ in SUPERCLASS_TABLE]
CLASS_NAMES: list[str] = sorted(fine for _, members in SUPERCLASS_TABLE for fine in members)
_SUPERCLASS_OF = {fine: s for s, (_, members) in enumerate(SUPERCLASS_TABLE) for fine in members}
_RANK_IN_SUPERCLASS = {fine: k for _, members in SUPERCLASS_TABLE for k, fine in enumerate(members)}
FINE_TO_COARSE = np.array([_SUPERCLASS_OF[name] for name in CLASS_NAMES], dtype=np.int64)
_PATTERN_OF_CLASS = np.array([_RANK_IN_SUPERCLASS[name] for name in CLASS_NAMES], dtype=np.int64)

# One background colour per superclass: Kelly's 22 colours of maximum contrast without white and black
# (K. L. Kelly, "Twenty-two colors for maximum contrast", Color Engineering 3(6), 1965).
_PALETTE = np.array([
    [0xF3, 0xC3, 0x00], [0x87, 0x56, 0x92], [0xF3, 0x84, 0x00], [0xA1, 0xCA, 0xF1], [0xBE, 0x00, 0x32],
    [0xC2, 0xB2, 0x80], [0x84, 0x84, 0x82], [0x00, 0x88, 0x56], [0xE6, 0x8F, 0xAC], [0x00, 0x67, 0xA5],
    [0xF9, 0x93, 0x79], [0x60, 0x4E, 0x97], [0xF6, 0xA6, 0x00], [0xB3, 0x44, 0x6C], [0xDC, 0xD3, 0x00],
    [0x88, 0x2D, 0x17], [0x8D, 0xB6, 0x00], [0x65, 0x45, 0x22], [0xE2, 0x58, 0x22], [0x2B, 0x3D, 0x26],
], dtype=np.int64)
_LUMA = (299 * _PALETTE[:, 0] + 587 * _PALETTE[:, 1] + 114 * _PALETTE[:, 2]) // 1000  # ITU-R BT.601
# The pattern is the same hue, darker on light colours and lighter on dark ones, so it always shows.
_PATTERN_COLOUR = np.where(_LUMA[:, None] > 110, _PALETTE // 3, 255 - (255 - _PALETTE) // 3)

SIZE = 32
_POSITION_JITTER = 2  # pixels, each axis, uniform in [-2, 2]
_BRIGHTNESS_JITTER = 16  # grey levels per image, uniform in [-16, 16]
_PIXEL_NOISE = 24  # grey levels per pixel and channel, uniform in [-24, 24]


def synthetic_folder(root: Path, *, train_per_class: int, test_per_class: int, seed: int) -> Path:
    """Where `dataset: synthetic` keeps the archive for these parameters (its `root` holds `cifar-100-python/`)."""
    return Path(root) / f"synthetic-s{seed}-{train_per_class}x{test_per_class}"


def synthesize_cifar100(root: Path, *, train_per_class: int, test_per_class: int, seed: int) -> Path:
    """Write a deterministic CIFAR-100-format archive to `root/cifar-100-python/` and return that folder.

    Idempotent: an archive already there with the same parameters and intact files is kept. The files
    are written to a temporary folder beside it and renamed into place, so processes generating at
    once (torchrun ranks) never see a half-written archive; the loser of the rename keeps the winner's
    identical archive. Raises `DataError` if the folder holds anything else.
    """
    if train_per_class < 1 or test_per_class < 1 or seed < 0:
        raise DataError(f"synthetic archive: images per class must be positive and the seed non-negative "
                        f"(got train {train_per_class}, test {test_per_class}, seed {seed}).")
    params = {"train_per_class": train_per_class, "test_per_class": test_per_class, "seed": seed}
    root = Path(root)
    target = root / ARCHIVE_FOLDER
    if target.exists():
        return _existing_archive(target, params)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(root)
        staging = Path(tempfile.mkdtemp(prefix=".synthesize-", dir=root))
    except OSError as exc:
        raise output_error(root, exc, "the synthetic archive into") from None
    try:
        _write_archive(staging / ARCHIVE_FOLDER, params)
        try:
            os.rename(staging / ARCHIVE_FOLDER, target)
        except OSError:
            if not target.exists():
                raise
            return _existing_archive(target, params)  # another process renamed first
    except OSError as exc:  # a full disk or read-only folder: nothing half-written stays behind
        raise output_error(target, exc, "the synthetic archive") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remove_abandoned_staging(root: Path, age_s: float = 3600) -> None:
    """Staging folders of generations that were killed; an hour old, so no live generation loses its own."""
    import time

    for staging in root.glob(".synthesize-*"):
        try:
            if time.time() - staging.stat().st_mtime > age_s:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            pass


def read_manifest(archive: Path) -> dict:
    """The manifest of the generated archive folder `archive` (`.../cifar-100-python`); `DataError` if unreadable."""
    path = Path(archive) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path.resolve()} is missing, so {Path(archive).resolve()} is not an archive "
                        "written by `auxcli data synth`.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the synthetic archive's manifest {path.resolve()}: {exc}. Delete "
                        f"{Path(archive).resolve()} and generate it again with `auxcli data synth`.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path.resolve()} is not a manifest of format {MANIFEST_FORMAT!r}; delete "
                        f"{Path(archive).resolve()} and generate it again with `auxcli data synth`.")
    return manifest


def manifest_md5s(manifest: dict) -> dict[str, str]:
    """File name -> md5 as recorded in a manifest."""
    return {name: entry["md5"] for name, entry in manifest["files"].items()}


def archive_class(archive: Path) -> type[CIFAR100]:
    """A torchvision `CIFAR100` whose integrity check uses the md5s in `archive`'s manifest.

    torchvision checks every file against fixed md5 sums (class attributes); generated archives have
    their own, so this subclass swaps them in and reads the files with torchvision's unchanged code.
    """
    md5 = manifest_md5s(read_manifest(archive))
    return type("SyntheticCIFAR100", (CIFAR100,), {
        "train_list": [["train", md5["train"]]],
        "test_list": [["test", md5["test"]]],
        "meta": {"filename": "meta", "key": "fine_label_names", "md5": md5["meta"]},
        "url": None,  # nothing to download: generate it with `auxcli data synth`
    })


def render_images(fine: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """uint8 (N, 3, 32, 32) images of the fine classes `fine`, drawn with `rng` (see the module docstring)."""
    n = len(fine)
    shift = rng.randint(-_POSITION_JITTER, _POSITION_JITTER + 1, size=(2, n))
    brightness = rng.randint(-_BRIGHTNESS_JITTER, _BRIGHTNESS_JITTER + 1, size=n)
    noise = rng.randint(-_PIXEL_NOISE, _PIXEL_NOISE + 1, size=(n, 3, SIZE, SIZE))
    y = np.arange(SIZE)[None, :, None] + shift[0][:, None, None]  # (N, 32, 1)
    x = np.arange(SIZE)[None, None, :] + shift[1][:, None, None]  # (N, 1, 32)
    pattern = _PATTERN_OF_CLASS[fine]
    mask = np.zeros((n, SIZE, SIZE), dtype=bool)
    for k, draw in enumerate(_PATTERNS):  # five patterns, each drawn for all its images at once
        chosen = pattern == k
        mask[chosen] = draw(y[chosen], x[chosen])
    coarse = FINE_TO_COARSE[fine]
    background = _PALETTE[coarse][:, :, None, None]
    foreground = _PATTERN_COLOUR[coarse][:, :, None, None]
    images = np.where(mask[:, None], foreground, background) + brightness[:, None, None, None] + noise
    return np.clip(images, 0, 255).astype(np.uint8)


def _stripes_horizontal(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.broadcast_to((y // 4) % 2 == 1, np.broadcast_shapes(y.shape, x.shape))


def _stripes_vertical(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.broadcast_to((x // 4) % 2 == 1, np.broadcast_shapes(y.shape, x.shape))


def _checkerboard(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (y // 6 + x // 6) % 2 == 1


def _disc(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (y - 16) ** 2 + (x - 16) ** 2 <= 9 ** 2


def _ring(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    r2 = (y - 16) ** 2 + (x - 16) ** 2
    return (r2 >= 8 ** 2) & (r2 <= 13 ** 2)


_PATTERNS = (_stripes_horizontal, _stripes_vertical, _checkerboard, _disc, _ring)  # by rank in superclass


def _split(name: str, per_class: int, seed: int) -> dict:
    """One split as the official pickle holds it: images in a fixed shuffled order, not sorted by class."""
    rng = np.random.RandomState([seed, FILES.index(name)])  # one independent stream per split
    fine = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES)), per_class))
    images = render_images(fine, rng)
    return {
        "filenames": [f"{CLASS_NAMES[c]}_s_{i:06d}.png" for i, c in enumerate(fine.tolist())],
        "batch_label": f"{'training' if name == 'train' else 'testing'} batch 1 of 1",
        "fine_labels": fine.tolist(),
        "coarse_labels": FINE_TO_COARSE[fine].tolist(),
        "data": images.reshape(len(fine), 3 * SIZE * SIZE),  # rows: the R, G, B planes, row-major
    }


def _write_archive(folder: Path, params: dict) -> None:
    folder.mkdir(parents=True)
    contents = {
        "train": _split("train", params["train_per_class"], params["seed"]),
        "test": _split("test", params["test_per_class"], params["seed"]),
        "meta": {"fine_label_names": CLASS_NAMES, "coarse_label_names": SUPERCLASS_NAMES},
    }
    files = {}
    for name in FILES:
        payload = _pickle_bytes(contents[name])
        (folder / name).write_bytes(payload)
        files[name] = {"md5": hashlib.md5(payload).hexdigest(), "bytes": len(payload)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "generator": params,
        "files": files,
        "images": {"train": len(contents["train"]["fine_labels"]), "test": len(contents["test"]["fine_labels"])},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


class _ArchivePickler(pickle.Pickler):
    """Pickles arrays as `numpy.ndarray(shape, dtype, buffer)`, a global every numpy release has.

    numpy's own array pickling names `numpy._core.multiarray._reconstruct` since numpy 2, which
    numpy 1 cannot import and which changes the bytes (and md5s) with the numpy release. Unpickled
    arrays are read-only views of the pickled bytes; torchvision copies them anyway.
    """

    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, np.ndarray):
            return np.ndarray, (obj.shape, obj.dtype.str, obj.tobytes())
        return NotImplemented


def _pickle_bytes(obj: dict) -> bytes:
    buffer = io.BytesIO()
    _ArchivePickler(buffer, protocol=PICKLE_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _existing_archive(target: Path, params: dict) -> Path:
    if not (target / MANIFEST).is_file():
        raise DataError(f"{target.resolve()} already exists and was not written by `auxcli data synth` (it has "
                        f"no {MANIFEST}); it may be the real CIFAR-100. Use another --root, or move it away first.")
    manifest = read_manifest(target)
    if manifest.get("generator") != params:
        raise DataError(f"{target.resolve()} already holds a synthetic archive made with {manifest.get('generator')}, "
                        f"not {params}. Use another --root, or delete that folder first.")
    for name, md5 in manifest_md5s(manifest).items():
        path = target / name
        if not path.is_file() or hashlib.md5(path.read_bytes()).hexdigest() != md5:
            raise DataError(f"the synthetic archive {target.resolve()} is damaged ({name} is missing or does not "
                            "match its manifest). Delete that folder and generate it again.")
    return target
