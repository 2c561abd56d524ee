"""Image-folder data sets, other image sizes and CIFAR-10, end to end on generated files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import write_png
from typer.testing import CliRunner

from auxcli.augment.crop import crop_block
from auxcli.cli import app
from auxcli.data.folder import CACHE_FOLDER, load_folder, resize_square
from auxcli.data.labelsets import label_set_sizes
from auxcli.data.load import load_data
from auxcli.errors import DataError
from auxcli.models.registry import create_backbone
from auxcli.spec import CrossFieldErrors, DataSpec, ModelSpec, Spec
from auxcli.tasks import AUX_TASKS, build_tasks

CLASSES = {"cat": "animal", "dog": "animal", "car": "vehicle", "ship": "vehicle"}


def write_mapping(path: Path, mapping: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}: {v}\n" for k, v in mapping.items()))
    return path


@pytest.fixture
def image_root(image_folder) -> Path:
    return image_folder()


def test_folder_loads_classes_in_sorted_order_at_the_image_size(image_root):
    data = load_folder(image_root, image_size=16)
    assert data.classes == ["car", "cat", "dog", "ship"]
    assert data.train.images.shape == (24, 3, 16, 16) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (12, 3, 16, 16)
    assert data.train.fine.tolist() == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6
    assert data.superclasses is None and data.train.coarse is None
    # each image keeps its class colour through decoding (PNG and JPEG) and resizing
    mean_colour = data.train.images[data.train.fine == 0].float().mean(dim=(0, 2, 3))
    assert torch.allclose(mean_colour, torch.tensor([200.0, 40.0, 40.0]), atol=8)


def test_folder_cache_is_reused_and_rebuilt_when_a_file_changes(image_root):
    first = load_folder(image_root, image_size=16)
    cache = image_root / CACHE_FOLDER / "folder-16px.pt"
    manifest = json.loads((image_root / CACHE_FOLDER / "folder-16px.json").read_text())
    assert cache.is_file() and len(manifest["files"]) == 36
    stamp = cache.stat().st_mtime_ns
    again = load_folder(image_root, image_size=16)
    assert cache.stat().st_mtime_ns == stamp  # re-used, not rewritten
    assert torch.equal(again.train.images, first.train.images)

    write_png(torch.zeros((3, 20, 28), dtype=torch.uint8), str(image_root / "test" / "dog" / "new.png"))
    assert len(load_folder(image_root, image_size=16).test) == 13  # a new file is no cache hit
    (image_root / "test" / "dog" / "new.png").unlink()
    stamp = cache.stat().st_mtime_ns
    changed = image_root / "train" / "cat" / "001.png"
    write_png(torch.full((3, 20, 28), 255, dtype=torch.uint8), str(changed))  # a white cat
    rebuilt = load_folder(image_root, image_size=16)
    assert cache.stat().st_mtime_ns != stamp
    position = 6 + 1  # second image of the second class
    assert rebuilt.train.images[position].min() == 255
    assert not torch.equal(rebuilt.train.images[position], first.train.images[position])
    assert torch.equal(rebuilt.test.images, first.test.images)


def test_folder_cache_is_rebuilt_when_the_cache_file_is_damaged(image_root):
    first = load_folder(image_root, image_size=16)
    cache = image_root / CACHE_FOLDER / "folder-16px.pt"
    cache.write_bytes(b"not a tensor file")
    assert torch.equal(load_folder(image_root, image_size=16).train.images, first.train.images)
    assert cache.read_bytes() != b"not a tensor file"


def test_superclass_mapping_gives_coarse_labels(image_root, workdir):
    mapping = write_mapping(workdir / "mapping.yaml", CLASSES)
    data = load_folder(image_root, image_size=16, superclasses=mapping)
    assert data.superclasses == ["animal", "vehicle"]
    expected = [1, 0, 0, 1]  # car, cat, dog, ship
    assert data.train.coarse.tolist() == [expected[k] for k in data.train.fine.tolist()]
    assert label_set_sizes(data) == {"gt": 4, "superclass": 2, "random": 4}
    tasks = build_tasks(Spec.model_validate({"name": "x", "task": {"labels": "superclass"}}), label_set_sizes(data))
    assert tasks[0].num_classes == 2


@pytest.mark.parametrize("case, mutate, expected", [
    ("no_test", lambda root: __import__("shutil").rmtree(root / "test"), "test/ is missing"),
    ("empty_class", lambda root: (root / "train" / "empty").mkdir(), "empty/ holds no images"),
    ("undecodable", lambda root: (root / "train" / "cat" / "bad.png").write_bytes(b"not an image"),
     "bad.png cannot be decoded"),
    ("empty_file", lambda root: (root / "test" / "dog" / "empty.jpg").write_bytes(b""), "empty.jpg cannot be decoded"),
    ("unknown_test_class", lambda root: __import__("shutil").copytree(root / "test" / "cat", root / "test" / "cow"),
     "classes that"),
    ("stray_image", lambda root: (root / "train" / "x.png").write_bytes(b""), "outside any class folder"),
])
def test_folder_layout_errors_name_the_folder_or_file(image_root, case, mutate, expected):
    mutate(image_root)
    with pytest.raises(DataError, match=expected):
        load_folder(image_root, image_size=16)


@pytest.mark.parametrize("mapping, expected", [
    ({"cat": "animal", "dog": "animal", "car": "vehicle"}, "no superclass for ship"),
    ({**CLASSES, "cow": "animal"}, "does not have: cow"),
])
def test_superclass_mapping_must_cover_exactly_the_classes(image_root, workdir, mapping, expected):
    path = write_mapping(workdir / "mapping.yaml", mapping)
    with pytest.raises(DataError, match=expected):
        load_folder(image_root, image_size=16, superclasses=path)


def test_superclass_without_a_mapping_is_a_validation_error(workdir):
    (workdir / "s.yaml").write_text("name: s\ndata: {dataset: folder, root: images}\ntask: {labels: superclass}\n")
    result = CliRunner().invoke(app, ["validate", str(workdir / "s.yaml")])
    assert result.exit_code == 2
    assert "task.labels" in result.output and "data.superclasses" in result.output


def test_superclasses_on_a_cifar_dataset_is_a_validation_error():
    with pytest.raises(CrossFieldErrors, match="data.superclasses"):
        Spec.model_validate({"name": "x", "data": {"dataset": "cifar100", "superclasses": "m.yaml"}})


def test_augment_sizes_scale_with_the_image_size_unless_written():
    spec = Spec.model_validate({"name": "x", "data": {"image_size": 64}, "augment": {"cutout": {}}})
    assert spec.augment.crop.padding == 8 and spec.augment.cutout.size == 32
    written = Spec.model_validate({"name": "x", "data": {"image_size": 64}, "augment": {"crop": {"padding": 2}}})
    assert written.augment.crop.padding == 2
    assert Spec.model_validate({"name": "x"}).augment.crop.padding == 4
    with pytest.raises(CrossFieldErrors, match="augment.cutout.size"):
        Spec.model_validate({"name": "x", "data": {"image_size": 16}, "augment": {"cutout": {"size": 20}}})


def test_crop_blocks_cover_the_grid_evenly_at_the_scaled_padding():
    # image 64 -> padding 8 -> 17 offsets per axis in blocks of 5, 6 and 6 positions
    offsets = torch.arange(17)
    blocks = crop_block(torch.stack([offsets, torch.zeros_like(offsets)], 1), None, padding=8, mode="sampled")
    assert torch.bincount(blocks // 3).tolist() == [6, 6, 5]
    assert blocks.min() == 0 and blocks.max() == 6


SMALL_BACKBONES = {"resnet": {"depth": 8}, "pyramidnet": {"depth": 8, "alpha": 4}, "linear": {"depth": None},
                   "wrn": {"depth": 10, "widen_factor": 1}}


def test_every_registered_backbone_has_a_small_configuration_here():
    from auxcli.models.registry import BACKBONES

    assert set(BACKBONES) <= set(SMALL_BACKBONES), "add the new backbone to SMALL_BACKBONES"


@pytest.mark.parametrize("backbone", sorted(SMALL_BACKBONES))
@pytest.mark.parametrize("size", [30, 48])  # 30: odd stage-3 maps, and a segmentation map cropped to size
def test_every_backbone_and_head_takes_other_image_sizes(backbone, size):
    model = ModelSpec(backbone=backbone, base_width=4, **SMALL_BACKBONES[backbone])
    spec_data = {"name": "x", "model": model.model_dump(), "data": {"image_size": size}}
    segmentation = {"cutout", "ricap"}
    kinds = [k for k in sorted(AUX_TASKS) if backbone != "linear" or k not in segmentation]
    backbone_module = create_backbone(model, image_size=size)
    images = torch.randn(2, 3, size, size)
    features = backbone_module.forward_features(images)
    for kind in kinds:  # every registered auxiliary task
        aux = {"kind": kind, **({"labels": "random"} if kind == "labelset" else {})}
        augment = {kind: {}} if kind in {"cutout", "ricap", "rotation"} else {}
        spec = Spec.model_validate({**spec_data, "task": {"aux": aux}, "augment": augment})
        aux_task = build_tasks(spec, 10)[-1]
        out = aux_task.build_head(backbone_module.feature_width)(features)
        if kind in segmentation:
            assert tuple(out.shape) == (2, aux_task.num_classes, size, size), kind  # one logit vector per pixel
        else:
            assert out.dim() == 2 and out.shape[0] == 2, kind


def test_resize_square_keeps_the_centre(workdir):
    images = torch.zeros(1, 3, 10, 20, dtype=torch.uint8)
    images[..., 2:18] = 255  # white but for black 2-pixel side strips, which the centre crop cuts off
    out = resize_square(images, 5)
    assert out.shape == (1, 3, 5, 5) and out.min() == 255
    square = images[..., :10]
    assert resize_square(square, 10) is square  # already that size: untouched


@pytest.mark.slow
def test_folder_spec_trains_with_superclass_aux_and_cutout_at_another_size(image_root, workdir):
    write_mapping(workdir / "mapping.yaml", CLASSES)
    (workdir / "f.yaml").write_text(
        "name: folder-run\nseeds: [0]\n"
        f"data: {{dataset: folder, root: {image_root.as_posix()}, image_size: 24, superclasses: mapping.yaml}}\n"
        "model: {backbone: resnet, depth: 8, base_width: 4}\n"
        "task: {labels: gt, aux: {kind: labelset, labels: superclass}}\n"
        "train: {epochs: 1, batch_size: 16, milestones: [], eval_batch_size: 64}\nruntime: {threads: 1}\n")
    result = CliRunner().invoke(app, ["run", str(workdir / "f.yaml")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((workdir / "runs/folder-run/seed-0/metrics.json").read_text())
    assert 0.0 <= metrics["final_test_aux_acc"] <= 1.0 and "final_test_acc" in metrics
    # the same folder at 26 px (not a multiple of the stride 4) with a segmentation task (Cutout scaled to 13 px)
    result = CliRunner().invoke(app, ["run", str(workdir / "f.yaml"), "-S", "name=folder-cutout", "-S",
                                      "data.image_size=26", "-S", "~task.aux", "-S", "task.aux={kind: cutout}",
                                      "-S", "augment.cutout={}"])
    assert result.exit_code == 0, result.output
    spec = (workdir / "runs/folder-cutout/seed-0/spec.resolved.yaml").read_text()
    assert "size: 13" in spec and "padding: 3" in spec
    metrics = json.loads((workdir / "runs/folder-cutout/seed-0/metrics.json").read_text())
    assert 0.0 < metrics["final_test_aux_miou"] <= 1.0


# ---------------------------------------------------------------------------------------------- cifar10

def write_cifar10_archive(root: Path, per_class: int = 4) -> dict[str, str]:
    """A CIFAR-10-format python archive (data_batch_1..5, test_batch, batches.meta); returns file -> md5."""
    import hashlib

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def batch(labels: list[int]) -> dict:
        data = np.stack([np.full((3, 32, 32), 20 * k, dtype=np.uint8) for k in labels])
        data = (data + rng.integers(0, 10, data.shape)).astype(np.uint8).reshape(len(labels), -1)
        return {"data": data, "labels": labels, "batch_label": "generated", "filenames": [""] * len(labels)}

    files = {f"data_batch_{i}": batch(list(range(10)) * (per_class // 5 or 1)) for i in range(1, 6)}
    files["test_batch"] = batch(list(range(10)))
    files["batches.meta"] = {"label_names": names, "num_cases_per_batch": 10, "num_vis": 3072}
    md5s = {}
    for name, content in files.items():
        payload = pickle.dumps(content, protocol=4)
        (folder / name).write_bytes(payload)
        md5s[name] = hashlib.md5(payload).hexdigest()
    return md5s


@pytest.fixture
def cifar10_root(workdir, monkeypatch) -> Path:
    """A generated CIFAR-10 archive whose md5s torchvision's CIFAR10 class is told (the md5 table only)."""
    from torchvision.datasets import CIFAR10

    root = workdir / "c10"
    md5s = write_cifar10_archive(root)
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5s[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5s["batches.meta"]})
    return root


def test_cifar10_loads_without_superclasses_and_resizes(cifar10_root):
    data = load_data(DataSpec(dataset="cifar10", root=str(cifar10_root), download=False))
    assert data.name == "cifar10" and data.superclasses is None and len(data.classes) == 10
    assert data.train.images.shape == (50, 3, 32, 32) and data.test.images.shape == (10, 3, 32, 32)
    assert label_set_sizes(data) == {"gt": 10, "random": 10}
    bigger = load_data(DataSpec(dataset="cifar10", root=str(cifar10_root), download=False, image_size=40))
    assert bigger.train.images.shape == (50, 3, 40, 40)


@pytest.mark.slow
def test_cifar10_trains_end_to_end(cifar10_root, workdir):
    (workdir / "c.yaml").write_text(
        f"name: c10\ndata: {{dataset: cifar10, root: {cifar10_root.as_posix()}, download: false}}\n"
        "model: {backbone: linear}\ntask: {labels: gt, aux: {kind: labelset, labels: random}}\n"
        "train: {epochs: 1, batch_size: 25, milestones: []}\nruntime: {threads: 1}\n")
    result = CliRunner().invoke(app, ["run", str(workdir / "c.yaml")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((workdir / "runs/c10/seed-0/metrics.json").read_text())
    assert "final_test_acc" in metrics and "final_test_aux_acc" in metrics


@pytest.mark.parametrize("size", [20, 48])
def test_training_augmentations_and_their_targets_at_other_image_sizes(size):
    from auxcli.augment.pipeline import build_train_augment
    from auxcli.augment.targets import Targets

    spec = Spec.model_validate({"name": "x", "data": {"image_size": size},
                                "augment": {"cutout": {}, "ricap": {"beta": 0.3}}})
    augment = build_train_augment(spec.augment, torch.full((3,), 0.5), torch.full((3,), 0.25))
    images = torch.randint(0, 256, (6, 3, size, size), dtype=torch.uint8)
    out, targets = augment(images, Targets({"main": torch.arange(6)}), torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, size, size)
    assert targets.maps["cutout_mask"].shape == targets.maps["ricap_sources"].shape == (6, size, size)
    # the scaled Cutout square (size // 2 a side, clipped at the border), before RICAP re-patches it
    from auxcli.augment.cutout import cutout

    _, alone = cutout(out, Targets({}), torch.Generator().manual_seed(1), size=spec.augment.cutout.size)
    cut = alone.maps["cutout_mask"].sum(dim=(1, 2))
    assert spec.augment.cutout.size == size // 2 and 0 < cut.min() and cut.max() <= (size // 2) ** 2
    blocks = crop_block(targets.maps["crop_offset"], targets.maps["flipped"], padding=spec.augment.crop.padding,
                        mode="visible")
    assert blocks.shape == (6, 4) and 0 <= blocks.min() and blocks.max() <= 8


def test_dvc_stage_of_a_folder_spec_depends_on_its_images_and_mapping(workdir):
    from auxcli.pipeline import pipeline_stages

    spec = Spec.model_validate({"name": "f", "data": {"dataset": "folder", "root": "pets",
                                                      "superclasses": "pets.yaml"}})
    (workdir / "f.yaml").write_text("name: f\n")
    stages = pipeline_stages([(Path("f.yaml"), spec)], package="no-package-here")
    assert stages["f"]["deps"] == ["f.yaml", "pets", "pets.yaml"]
    assert stages["data"]["outs"] == [{"pets": {"persist": True}}]


def test_data_prepare_checks_a_folder_and_builds_its_cache_without_downloading(image_root, workdir):
    from auxcli.data.prepare import prepare_data

    mapping = write_mapping(workdir / "mapping.yaml", CLASSES)
    spec = DataSpec(dataset="folder", root=str(image_root), image_size=16, superclasses=str(mapping))
    [prepared] = prepare_data([spec])
    assert prepared.action == "present" and prepared.identity.folder == image_root
    assert (image_root / CACHE_FOLDER / "folder-16px.pt").is_file()
    assert len(prepared.identity.files) == 36 + 1  # every image and the mapping
    (image_root / "train" / "cat" / "001.png").write_bytes(b"changed")
    with pytest.raises(DataError, match="001.png cannot be decoded"):
        prepare_data([spec])


def test_bundle_data_record_of_a_folder_holds_images_and_mapping_not_the_cache(image_root, workdir):
    from auxcli.runrecord import data_record

    mapping = write_mapping(workdir / "mapping.yaml", CLASSES)
    spec = DataSpec(dataset="folder", root=str(image_root), image_size=16, superclasses=str(mapping))
    load_data(spec)  # writes the cache
    files = data_record(spec)["files"]
    assert (image_root / CACHE_FOLDER).is_dir() and not any(k.startswith(CACHE_FOLDER) for k in files)
    assert len([k for k in files if k.startswith(("train/", "test/"))]) == 36
    assert f"superclasses:{mapping}" in files
