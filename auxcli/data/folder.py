"""Image-folder data sets (`data.dataset: folder`): `train/<class>/*`, `test/<class>/*`, cached as tensors.

Layout, as torchvision's `ImageFolder`: `root/train/<class>/...` and `root/test/<class>/...` hold
PNG, JPEG or WebP files (any depth below the class folder; names starting with "." are skipped).
Classes are the training folder's class folders in sorted order, so label k is the k-th name;
the test split may lack a class but not add one. Images inside a class are taken in sorted path order.

Every image is decoded with `torchvision.io.decode_image` (RGB; grey and alpha images converted),
its shorter side resized to `data.image_size` (antialiased bilinear, `torchvision.transforms.v2`) and
centre-cropped to a square, as torchvision's classification references' evaluation preset does.

The result is cached in `root/.auxcli-cache/folder-<size>px.pt` (plain tensors: `torch.save`, read
back with `weights_only=True`, so the cache cannot run code) beside a JSON manifest holding the sha256
of every source file and of the cache. A later load hashes the sources again and re-uses the cache
only when every hash (and the file list) is unchanged; otherwise it decodes again and rewrites both.
A read-only data folder just goes uncached.

The cache is checked against the folder, not against itself (issue 21): anyone who can edit the cache
can also rewrite its manifest to match, so a cache is used only when this account decoded those images
into exactly that cache before (a marker named by the sha256 of the manifest, cache hash included, in
`$XDG_CACHE_HOME/auxcli/folder-cache/` or `~/.cache/auxcli/folder-cache/`, where the data's provider
cannot write), and its labels must equal the labels the folder's listing gives. A cache written
elsewhere (pulled by DVC, edited by hand) is decoded again once; the files in the data folder keep their
format, so a DVC-tracked data folder does not change when the same images give the same tensors. Only
regular files are read: a FIFO or a device as a cache file is ignored (and not written through).

Hostile images (issue 21): a file over `MAX_IMAGE_BYTES`, or whose header declares more than
`MAX_IMAGE_PIXELS` pixels (PIL's decompression-bomb limit, `PIL.Image.MAX_IMAGE_PIXELS`: 89.5 million),
is refused before it is decoded, naming it; so is a file or folder name that is not valid UTF-8 (names
become JSON keys, MLflow inputs and DVC paths), so that `run` and `data prepare` agree.

`data.superclasses` names a YAML mapping `class: superclass`, which must cover every class; the
superclasses are numbered in sorted order, like the classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import torch

from auxcli.data.types import ImageData, Split
from auxcli.errors import AuxcliError, DataError
from auxcli.runfolder import atomic_write_bytes, atomic_write_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CACHE_FOLDER = ".auxcli-cache"
CACHE_FORMAT = "auxcli-folder-cache/1"
SPLITS = ("train", "test")
_RESIZE_CHUNK = 1024  # images resized per call: bounds the float intermediate of a big split
MAX_IMAGE_BYTES = 256 << 20  # one image file; a 1024 px PNG is a few MB
MAX_MANIFEST_BYTES = 256 << 20  # the cache manifest: ~100 bytes per image


def load_folder(root: Path, *, image_size: int, superclasses: Path | None = None) -> ImageData:
    """Both splits of the image folder `root` at `image_size` pixels, from the cache when it is current."""
    root = Path(root)
    files = list_images(root)
    classes = sorted({cls for cls, _ in files["train"]})
    coarse_names, fine_to_coarse = (None, None)
    if superclasses is not None:  # before decoding: a bad mapping should not cost a decoding pass
        coarse_names, fine_to_coarse = read_superclasses(Path(superclasses), classes)
    hashes = _hashes(root, files)
    tensors = _read_cache(root, image_size, classes, hashes, folder_labels(files, classes))
    if tensors is None:
        tensors = _decode_all(root, files, classes, image_size)
        _write_cache(root, image_size, classes, hashes, tensors)
    splits = {}
    for split in SPLITS:
        fine = tensors[f"{split}_fine"]
        splits[split] = Split(images=tensors[f"{split}_images"], fine=fine,
                              coarse=None if fine_to_coarse is None else fine_to_coarse[fine],
                              index=torch.arange(len(fine)), full_size=len(fine))
    return ImageData(name="folder", train=splits["train"], test=splits["test"], classes=classes,
                     superclasses=coarse_names)


def list_images(root: Path) -> dict[str, list[tuple[str, str]]]:
    """split -> [(class, path relative to root)] in class order then path order; DataError for a bad layout."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root {root.resolve()}/ does not exist; an image-folder data set needs "
                        "train/<class>/ and test/<class>/ folders of images there.")
    listed: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"{folder.resolve()}/ is missing: an image-folder data set needs "
                            f"{root.resolve()}/train/<class>/ and {root.resolve()}/test/<class>/ folders of images.")
        stray = [p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if stray:
            raise DataError(f"{folder.resolve()}/ holds images outside any class folder ({', '.join(sorted(stray)[:3])}"
                            f"{', ...' if len(stray) > 3 else ''}); move each into {folder.resolve()}/<class>/.")
        entries = []
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            images = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts))
            if not images:
                raise DataError(f"class folder {class_dir.resolve()}/ holds no images "
                                f"({', '.join(IMAGE_SUFFIXES)}); add some or remove the folder.")
            entries += [(class_dir.name, _utf8_name(p, root)) for p in images]
        if not entries:
            raise DataError(f"{folder.resolve()}/ has no class folders; put each class's images in "
                            f"{folder.resolve()}/<class>/.")
        listed[split] = entries
    unknown = sorted({cls for cls, _ in listed["test"]} - {cls for cls, _ in listed["train"]})
    if unknown:
        raise DataError(f"{(root / 'test').resolve()}/ has classes that {(root / 'train').resolve()}/ lacks: "
                        f"{', '.join(unknown)}. A class needs training images; rename or remove those folders.")
    return listed


def _utf8_name(path: Path, root: Path) -> str:
    key = path.relative_to(root).as_posix()
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{os.fsdecode(root.resolve())}/{key.encode('utf-8', 'surrogateescape')!r}: the file or "
                        "folder name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8 --notest).") from None
    return key


def source_hashes(root: Path) -> dict[str, str]:
    """Path relative to `root` -> sha256 of every image file the data set reads (DataError for a bad layout)."""
    return _hashes(Path(root), list_images(root))


def _hashes(root: Path, files: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    return {key: _sha256(root / key) for split in SPLITS for _, key in files[split]}


def read_superclasses(path: Path, classes: list[str]) -> tuple[list[str], torch.Tensor]:
    """Superclass names (sorted) and int64 (num classes,) class -> superclass index, from a YAML mapping."""
    from auxcli.errors import SpecError
    from auxcli.safeyaml import read_yaml_file

    try:  # a regular file of at most 1 MiB, plain YAML: a FIFO, /dev/zero or an alias bomb is refused
        mapping = read_yaml_file(Path(path), "superclass mapping", "a YAML mapping of class name to superclass name")
    except SpecError as exc:
        raise DataError(f"data.superclasses: {exc}") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                for k, v in mapping.items()):
        raise DataError(f"data.superclasses: {Path(path).resolve()} must be a YAML mapping of class name to "
                        "superclass name, e.g. `cat: animal`, one line per class.")
    missing = [cls for cls in classes if cls not in mapping]
    extra = sorted(set(mapping) - set(classes))
    if missing or extra:
        parts = ([f"no superclass for {', '.join(missing)}"] if missing else []) + (
            [f"names classes the data set does not have: {', '.join(extra)}"] if extra else [])
        raise DataError(f"data.superclasses: {Path(path).resolve()} {'; '.join(parts)}. It must map every "
                        f"class (the folder names: {', '.join(classes)}) and nothing else.")
    names = sorted(set(mapping[cls] for cls in classes))
    index = {name: k for k, name in enumerate(names)}
    return names, torch.tensor([index[mapping[cls]] for cls in classes], dtype=torch.int64)


def resize_square(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, S, S): shorter side resized to S (antialiased bilinear), then the
    centre S x S crop; returned unchanged when already S x S."""
    from torchvision.transforms.v2 import functional as F

    if images.shape[-2:] == (image_size, image_size):
        return images
    chunks = [F.center_crop(F.resize(images[start:start + _RESIZE_CHUNK], [image_size], antialias=True),
                            [image_size, image_size])
              for start in range(0, images.shape[0], _RESIZE_CHUNK)]
    return torch.cat(chunks) if chunks else images.new_zeros((0, images.shape[1], image_size, image_size))


def decode_file(path: Path, image_size: int) -> torch.Tensor:
    """One image file as uint8 (3, S, S); DataError naming the file when it cannot be decoded."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as F

    raw = _read_image_bytes(Path(path))
    check_pixels(raw, Path(path))
    try:
        if not raw:
            raise ValueError("the file is empty")
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        image = decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"{Path(path).resolve()} cannot be decoded as an image "
                        f"({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}); "
                        "replace or remove it.") from None
    if image.dtype != torch.uint8:  # 16-bit PNGs decode to uint16
        image = F.to_dtype(image, torch.uint8, scale=True)
    return resize_square(image[None], image_size)[0]


def _read_image_bytes(path: Path) -> bytes:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path.resolve()} is not a regular file (a FIFO, socket or device); remove it.")
    if info.st_size > MAX_IMAGE_BYTES:
        raise DataError(f"{path.resolve()} is {info.st_size:,} bytes; an image file is at most {MAX_IMAGE_BYTES:,} "
                        "here. Shrink or remove it.")
    with open(path, "rb") as f:
        return f.read(MAX_IMAGE_BYTES + 1)


def max_image_pixels() -> int:
    """PIL's decompression-bomb limit, read when used (a user may raise `PIL.Image.MAX_IMAGE_PIXELS`)."""
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 0) or 1 << 62


def check_pixels(raw: bytes, path: Path) -> None:
    """Refuse an image whose header declares more than `max_image_pixels()` pixels, before decoding it."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        width = height = None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return  # not an image PIL knows: the decoder names the problem
    if width is None or width * height > limit:
        size = "" if width is None else f" ({width} x {height} = {width * height:,} pixels)"
        raise DataError(f"{path.resolve()} declares more pixels than the limit of {limit:,}{size}, a decompression "
                        "bomb or an image far larger than any training size; shrink or remove it.")


def _decode_all(root: Path, files: dict[str, list[tuple[str, str]]], classes: list[str],
                image_size: int) -> dict[str, torch.Tensor]:
    label = {cls: k for k, cls in enumerate(classes)}
    tensors = {}
    for split in SPLITS:
        entries = files[split]
        images = torch.empty((len(entries), 3, image_size, image_size), dtype=torch.uint8)
        for i, (_, key) in enumerate(entries):  # per file: decoding is per file anyway, and runs once
            images[i] = decode_file(root / key, image_size)
        tensors[f"{split}_images"] = images
        tensors[f"{split}_fine"] = torch.tensor([label[cls] for cls, _ in entries], dtype=torch.int64)
    return tensors


def _cache_paths(root: Path, image_size: int) -> tuple[Path, Path]:
    folder = root / CACHE_FOLDER
    return folder / f"folder-{image_size}px.pt", folder / f"folder-{image_size}px.json"


def _read_cache(root: Path, image_size: int, classes: list[str], hashes: dict[str, str],
                labels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    cache, manifest_path = _cache_paths(root, image_size)
    if not (_regular(manifest_path, MAX_MANIFEST_BYTES) and _regular(cache)):
        return None
    try:
        with open(manifest_path, "rb") as f:
            manifest = json.loads(f.read(MAX_MANIFEST_BYTES))
    except (OSError, ValueError):
        return None
    expected = {"format": CACHE_FORMAT, "image_size": image_size, "classes": classes, "files": hashes}
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expected.items()):
        return None
    if not _trusted(manifest):
        return None  # not decoded by this account: rebuilt from the images
    if _sha256(cache) != manifest.get("cache_sha256"):
        return None
    try:
        tensors = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception:  # truncated or foreign: rebuild
        return None
    return tensors if _well_formed(tensors, image_size, manifest, labels) else None


def _regular(path: Path, limit: int | None = None) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and (limit is None or info.st_size <= limit)


def _well_formed(tensors: Any, image_size: int, manifest: dict, labels: dict[str, torch.Tensor]) -> bool:
    if not isinstance(tensors, dict):
        return False
    for split in SPLITS:
        images, fine = tensors.get(f"{split}_images"), tensors.get(f"{split}_fine")
        if not (isinstance(images, torch.Tensor) and isinstance(fine, torch.Tensor)):
            return False
        n = len(labels[split])
        if (images.dtype != torch.uint8 or tuple(images.shape) != (n, 3, image_size, image_size)
                or fine.dtype != torch.int64 or not torch.equal(fine, labels[split])):
            return False  # the labels are the folder's listing, exactly
    return True


def folder_labels(files: dict[str, list[tuple[str, str]]], classes: list[str]) -> dict[str, torch.Tensor]:
    """Each split's labels as the listing gives them (label k: the k-th class name)."""
    label = {cls: k for k, cls in enumerate(classes)}
    return {split: torch.tensor([label[cls] for cls, _ in files[split]], dtype=torch.int64) for split in SPLITS}


def trust_folder() -> Path:
    """Where this account keeps the markers of caches it decoded itself."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "auxcli" / "folder-cache"


def _marker(manifest: dict) -> Path:
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return trust_folder() / hashlib.sha256(body.encode("utf-8")).hexdigest()


def _trusted(manifest: dict) -> bool:
    return _regular(_marker(manifest))


def _trust(manifest: dict) -> None:
    try:
        marker = _marker(manifest)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # a read-only home: the cache is decoded again next time, never trusted blindly


def _write_cache(root: Path, image_size: int, classes: list[str], hashes: dict[str, str],
                 tensors: dict[str, torch.Tensor]) -> None:
    cache, manifest_path = _cache_paths(root, image_size)
    for path in (cache, manifest_path):  # a FIFO or device there would be written through, or block
        if (path.exists() or path.is_symlink()) and not _regular(path):
            return
    try:
        atomic_write_bytes(cache, lambda f: torch.save(tensors, f))
        manifest = {"format": CACHE_FORMAT, "image_size": image_size, "classes": classes,
                    "counts": {split: int(tensors[f"{split}_fine"].numel()) for split in SPLITS},
                    "cache_sha256": _sha256(cache), "files": hashes}
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    except (OSError, AuxcliError):
        return  # a read-only data folder: the data is correct, only the next load decodes again
    _trust(manifest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
