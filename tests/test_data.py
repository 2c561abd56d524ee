"""The data layer: generated CIFAR-100 archives, torchvision loading, label sets, statistics, verification."""

from __future__ import annotations

import hashlib
import pickle
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.data.labelsets import label_set_sizes, labels_for, num_classes, random_labels
from auxcli.data.load import load_data, load_synthetic, subset_per_class
from auxcli.data.stats import channel_stats
from auxcli.data.synthetic import (
    ARCHIVE_FOLDER,
    CLASS_NAMES,
    SUPERCLASS_NAMES,
    SUPERCLASS_TABLE,
    archive_class,
    synthesize_cifar100,
    synthetic_folder,
)
from auxcli.data.types import ImageData, Split
from auxcli.data.verify import verify_data
from auxcli.errors import DataError
from auxcli.spec import DataSpec, SyntheticSpec

TRAIN, TEST = 6, 3  # images per class: 600 / 300 images, generated in well under a second

# Fine label -> coarse label of the official CIFAR-100 release (its train pickle's coarse_labels by
# fine_labels), written out independently of the superclass table the generator uses.
OFFICIAL_FINE_TO_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]


def _spec(root: Path, **kw) -> DataSpec:
    return DataSpec(dataset="synthetic", root=str(root),
                    synthetic=SyntheticSpec(train_per_class=TRAIN, test_per_class=TEST, seed=0), **kw)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A spec root whose synthetic archive is generated once for the module."""
    root = tmp_path_factory.mktemp("data")
    load_data(_spec(root))
    return root


@pytest.fixture(scope="module")
def data(data_root) -> ImageData:
    return load_data(_spec(data_root))


@pytest.fixture
def archive_root(workdir) -> Path:
    """A fresh tiny archive of this test's own, safe to tamper with."""
    root = workdir / "archive"
    synthesize_cifar100(root, train_per_class=4, test_per_class=2, seed=0)
    return root


def test_synthetic_archive_is_generated_under_the_spec_root(data_root):
    folder = synthetic_folder(data_root, train_per_class=TRAIN, test_per_class=TEST, seed=0)
    assert folder == data_root / f"synthetic-s0-{TRAIN}x{TEST}"
    assert {p.name for p in (folder / ARCHIVE_FOLDER).iterdir()} == {"train", "test", "meta", "manifest.json"}


def test_archive_has_the_official_pickle_layout(data_root):
    folder = synthetic_folder(data_root, train_per_class=TRAIN, test_per_class=TEST, seed=0) / ARCHIVE_FOLDER
    with open(folder / "train", "rb") as f:
        train = pickle.load(f, encoding="latin1")
    assert set(train) == {"data", "fine_labels", "coarse_labels", "filenames", "batch_label"}
    assert train["data"].dtype.name == "uint8" and train["data"].shape == (100 * TRAIN, 3072)
    assert len(train["fine_labels"]) == len(train["coarse_labels"]) == len(train["filenames"]) == 100 * TRAIN
    with open(folder / "meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert meta == {"fine_label_names": CLASS_NAMES, "coarse_label_names": SUPERCLASS_NAMES}


def test_archive_round_trips_through_torchvision(data_root, data):
    folder = synthetic_folder(data_root, train_per_class=TRAIN, test_per_class=TEST, seed=0)
    dataset_cls = archive_class(folder / ARCHIVE_FOLDER)
    for train, split in ((True, data.train), (False, data.test)):
        reference = dataset_cls(str(folder), train=train, download=False)
        assert torch.equal(torch.from_numpy(reference.data).permute(0, 3, 1, 2), split.images)
        assert split.fine.tolist() == reference.targets
        assert reference.classes == data.classes == CLASS_NAMES
    assert data.name == "synthetic" and data.superclasses == SUPERCLASS_NAMES
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (100 * TRAIN, 3, 32, 32)
    assert data.train.fine.dtype == data.train.coarse.dtype == torch.int64
    assert len(data.test) == 100 * TEST and data.test.full_size == 100 * TEST
    assert torch.equal(data.train.index, torch.arange(100 * TRAIN))


def test_every_class_has_the_requested_number_of_images(data):
    assert torch.bincount(data.train.fine, minlength=100).tolist() == [TRAIN] * 100
    assert torch.bincount(data.test.fine, minlength=100).tolist() == [TEST] * 100


def test_coarse_labels_follow_the_cifar100_superclass_table(data):
    members = dict(SUPERCLASS_TABLE)
    for split in (data.train, data.test):
        for fine, coarse in set(zip(split.fine.tolist(), split.coarse.tolist())):
            assert data.classes[fine] in members[data.superclasses[coarse]]
        assert torch.equal(split.coarse, torch.tensor(OFFICIAL_FINE_TO_COARSE)[split.fine])
    assert all(len(classes) == 5 for classes in members.values()) and len(members) == 20


def test_random_labels_are_stable_across_calls(data):
    first = labels_for(data.train, "random", random_label_seed=3, split_name="train", num_classes=100)
    again = labels_for(data.train, "random", random_label_seed=3, split_name="train", num_classes=100)
    assert torch.equal(first, again)
    assert first.dtype == torch.int64 and 0 <= int(first.min()) and int(first.max()) < 100
    assert len(first.unique()) > 50  # spread over the classes, not one constant


def test_random_labels_depend_on_seed_and_split():
    base = random_labels(1000, num_classes=100, random_label_seed=0, split_name="train")
    assert not torch.equal(base, random_labels(1000, num_classes=100, random_label_seed=1, split_name="train"))
    assert not torch.equal(base, random_labels(1000, num_classes=100, random_label_seed=0, split_name="test"))


def test_random_labels_are_the_same_under_subset(data_root, data):
    subset = load_data(_spec(data_root, subset=2)).train
    full = labels_for(data.train, "random", random_label_seed=7, split_name="train", num_classes=100)
    part = labels_for(subset, "random", random_label_seed=7, split_name="train", num_classes=100)
    assert torch.equal(part, full[subset.index])


def test_subset_keeps_the_first_n_images_of_each_class_in_file_order(data_root, data):
    subset = load_data(_spec(data_root, subset=2)).train
    assert torch.bincount(subset.fine, minlength=100).tolist() == [2] * 100
    assert subset.full_size == len(data.train) and bool((subset.index[1:] > subset.index[:-1]).all())
    for c in (0, 41, 99):
        assert subset.index[subset.fine == c].tolist() == torch.nonzero(data.train.fine == c).flatten()[:2].tolist()
    assert torch.equal(subset.images, data.train.images[subset.index])
    assert torch.equal(subset.coarse, data.train.coarse[subset.index])
    assert load_data(_spec(data_root)).test.full_size == len(data.test)  # subset leaves the test split whole


def test_subset_larger_than_a_class_keeps_all_of_it(data):
    assert torch.equal(subset_per_class(data.train, TRAIN + 5).index, data.train.index)


def test_label_set_sizes(data):
    assert label_set_sizes(data) == {"gt": 100, "superclass": 20, "random": 100}
    assert labels_for(data.test, "superclass", random_label_seed=0, split_name="test",
                      num_classes=num_classes(data, "superclass")) is data.test.coarse


def test_superclass_needs_coarse_labels(data):
    no_coarse = Split(data.test.images, data.test.fine, None, data.test.index, data.test.full_size)
    cifar10_like = ImageData("cifar10", no_coarse, no_coarse, data.classes[:10], None)
    with pytest.raises(DataError, match="superclass"):
        num_classes(cifar10_like, "superclass")
    with pytest.raises(DataError, match="superclass"):
        labels_for(no_coarse, "superclass", random_label_seed=0, split_name="test", num_classes=20)
    assert label_set_sizes(cifar10_like) == {"gt": 10, "random": 10}


def test_channel_stats_equal_a_direct_float64_computation():
    images = torch.randint(0, 256, (37, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk_images=5)
    pixels = images.double().div(255).permute(1, 0, 2, 3).flatten(1)
    torch.testing.assert_close(mean, pixels.mean(1), rtol=0, atol=1e-14)
    torch.testing.assert_close(std, pixels.std(1, unbiased=False), rtol=0, atol=1e-14)
    assert mean.dtype == std.dtype == torch.float64
    same = channel_stats(images, chunk_images=1000)
    assert torch.equal(mean, same[0]) and torch.equal(std, same[1])


def test_generator_is_deterministic(workdir):
    params = {"train_per_class": 3, "test_per_class": 1, "seed": 5}
    first = synthesize_cifar100(workdir / "a", **params)
    second = synthesize_cifar100(workdir / "b", **params)
    other = synthesize_cifar100(workdir / "c", **{**params, "seed": 6})
    for name in ("train", "test", "meta", "manifest.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "train").read_bytes() != (other / "train").read_bytes()


def test_generator_is_idempotent_and_refuses_other_parameters(archive_root):
    folder = archive_root / ARCHIVE_FOLDER
    before = (folder / "train").stat().st_mtime_ns
    assert synthesize_cifar100(archive_root, train_per_class=4, test_per_class=2, seed=0) == folder
    assert (folder / "train").stat().st_mtime_ns == before
    with pytest.raises(DataError, match="already holds"):
        synthesize_cifar100(archive_root, train_per_class=4, test_per_class=2, seed=1)


def test_concurrent_generation_leaves_one_whole_archive(workdir):
    results, errors = [], []

    def generate():
        try:
            results.append(synthesize_cifar100(workdir, train_per_class=3, test_per_class=1, seed=0))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=generate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert verify_data(workdir).ok
    assert [p.name for p in workdir.iterdir()] == [ARCHIVE_FOLDER]  # no staging folders left behind


def test_synthetic_classes_are_separable(data):
    """Nearest class mean on raw pixels: far above the 1% chance level, so a small CNN has signal to learn."""
    train_x, test_x = data.train.images.flatten(1).double(), data.test.images.flatten(1).double()
    means = torch.zeros(100, train_x.shape[1], dtype=torch.float64).index_add_(0, data.train.fine, train_x) / TRAIN
    accuracy = (torch.cdist(test_x, means).argmin(1) == data.test.fine).double().mean().item()
    assert accuracy > 0.3


def test_missing_cifar100_without_download_names_the_path(workdir):
    with pytest.raises(DataError) as info:
        load_data(DataSpec(dataset="cifar100", root="nowhere", download=False))
    message = str(info.value)
    assert str((workdir / "nowhere" / "cifar-100-python").resolve()) in message
    assert "cifar-100-python.tar.gz" in message and "download" in message


def test_non_official_files_as_cifar100_are_reported_damaged(archive_root):
    with pytest.raises(DataError, match="md5 mismatch"):
        load_data(DataSpec(dataset="cifar100", root=str(archive_root), download=False))


def test_damaged_synthetic_archive_is_a_data_error(archive_root):
    train = archive_root / ARCHIVE_FOLDER / "train"
    train.write_bytes(train.read_bytes()[:-10])
    with pytest.raises(DataError, match="Delete"):
        load_synthetic(archive_root)


def test_verify_passes_on_a_fresh_archive(archive_root):
    report = verify_data(archive_root)
    assert report.ok and report.dataset == "synthetic"
    assert report.images == {"train": 400, "test": 200}
    assert report.label_sets == {"gt": 100, "superclass": 20, "random": 100}
    result = CliRunner().invoke(app, ["data", "verify", "--root", str(archive_root)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "superclass" in result.output


def test_verify_flags_a_tampered_file_with_exit_code_2(archive_root):
    train = archive_root / ARCHIVE_FOLDER / "train"
    payload = bytearray(train.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    train.write_bytes(bytes(payload))
    report = verify_data(archive_root)
    assert [(f.name, f.status) for f in report.files] == [("train", "mismatch"), ("test", "ok"), ("meta", "ok")]
    assert report.images["train"] is None  # a file that failed its check is never unpickled
    result = CliRunner().invoke(app, ["data", "verify", "--root", str(archive_root)])
    assert result.exit_code == 2
    assert "mismatch" in result.output and "train (mismatch)" in result.output


def test_verify_as_cifar100_checks_torchvisions_official_md5s(archive_root):
    from torchvision.datasets import CIFAR100

    report = verify_data(archive_root, dataset="cifar100")
    assert not report.ok and report.dataset == "cifar100"
    official = {name: md5 for name, md5 in CIFAR100.train_list + CIFAR100.test_list}
    official["meta"] = CIFAR100.meta["md5"]
    assert {f.name: f.expected_md5 for f in report.files} == official
    assert {f.status for f in report.files} == {"mismatch"}
    for f in report.files:
        assert f.actual_md5 == hashlib.md5((archive_root / ARCHIVE_FOLDER / f.name).read_bytes()).hexdigest()
    result = CliRunner().invoke(app, ["data", "verify", "--root", str(archive_root), "--dataset", "cifar100"])
    assert result.exit_code == 2 and "official CIFAR-100" in result.output


def test_verify_reports_missing_files(workdir):
    report = verify_data(workdir / "empty")
    assert report.dataset == "cifar100" and {f.status for f in report.files} == {"missing"}
    result = CliRunner().invoke(app, ["data", "verify", "--root", str(workdir / "empty")])
    assert result.exit_code == 2 and "missing" in result.output


def test_verify_rejects_an_unknown_dataset(archive_root):
    result = CliRunner().invoke(app, ["data", "verify", "--root", str(archive_root), "--dataset", "imagenet"])
    assert result.exit_code == 2 and "imagenet" in result.output


def test_synth_command_writes_the_archive_and_prints_counts(workdir):
    args = ["data", "synth", "--root", "out", "--images-per-class", "2", "--test-images-per-class", "1",
            "--seed", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "200 train and 100 test images" in result.output
    assert str((workdir / "out" / ARCHIVE_FOLDER).resolve()) in result.output
    assert verify_data(workdir / "out").ok
    clash = CliRunner().invoke(app, [*args[:-1], "4"])
    assert clash.exit_code == 2 and "already holds" in clash.output
