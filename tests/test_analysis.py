"""`auxcli analyze`: linear CKA, the ridge probe, embeddings, and the command end to end with MLflow."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from auxcli.analysis.embedding import pca_2d
from auxcli.analysis.probe import ridge_probe
from auxcli.analysis.similarity import cka_matrix, linear_cka
from auxcli.cli import app
from auxcli.report.collect import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _features(n: int = 200, d: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_of_features_with_themselves_is_one():
    x = _features()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_symmetric_and_in_the_unit_interval():
    x, y = _features(seed=0), _features(d=7, seed=1) + 0.5 * _features(d=7, seed=2)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    assert 0.0 <= linear_cka(x, y) <= 1.0
    matrix = cka_matrix([x, y, x[:, :5]])
    assert all(matrix[i][j] == matrix[j][i] for i in range(3) for j in range(3))


def test_cka_is_invariant_to_orthogonal_rotation_and_isotropic_scaling():
    x = _features()
    rotation, _ = torch.linalg.qr(_features(n=12, d=12, seed=3))  # a random orthogonal 12 x 12 matrix
    y = 3.7 * x @ rotation + 5.0  # rotated, scaled and shifted (centring removes the shift)
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-10)


def test_cka_is_not_invariant_to_a_general_linear_map_and_low_for_unrelated_features():
    x = _features()
    stretch = torch.diag(torch.tensor([10.0] + [0.1] * 11, dtype=torch.float64))
    assert linear_cka(x, x @ stretch) < 0.5  # non-isotropic scaling changes CKA (Kornblith et al., sec. 3)
    assert linear_cka(x, _features(seed=9)) < 0.2


def test_cka_needs_the_same_examples():
    with pytest.raises(ValueError, match="same n"):
        linear_cka(_features(n=10), _features(n=11))


def _clusters(n_per_class: int, classes: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(42)) * 2
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + torch.randn(len(labels), d, generator=g), labels


def test_ridge_probe_beats_chance_on_separable_data_and_not_on_random_labels():
    train_x, train_y = _clusters(40, 5, 16, seed=0)
    test_x, test_y = _clusters(20, 5, 16, seed=1)
    result = ridge_probe(train_x, train_y, test_x, test_y, 5)
    assert result.test_acc > 0.8  # chance is 0.2
    shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))]
    assert ridge_probe(train_x, shuffled, test_x, test_y, 5).test_acc < 0.5


def test_pca_2d_orders_axes_by_variance():
    x = _features(d=3) * torch.tensor([1.0, 5.0, 0.1], dtype=torch.float64)
    coords = pca_2d(x)
    assert coords.shape == (200, 2)
    assert coords[:, 0].var() > coords[:, 1].var()
    assert torch.allclose(coords[:, 0].abs(), (x[:, 1] - x[:, 1].mean()).abs(), rtol=0.1, atol=0.3)


@pytest.mark.slow
def test_analyze_writes_files_and_an_mlflow_run_that_reports_ignore(tiny_spec, workdir):
    runner = CliRunner()
    specs = [tiny_spec("gt"), tiny_spec("rnd", "task: {labels: random}\n")]
    result = runner.invoke(app, ["run", *map(str, specs), "-S", "train.epochs=1", "-S", "train.milestones=[]"])
    assert result.exit_code == 0, result.output
    rnd_id = json.loads((workdir / "runs/rnd/seed-0/metrics.json").read_text())["mlflow_run_id"]
    gt_id = json.loads((workdir / "runs/gt/seed-0/metrics.json").read_text())["mlflow_run_id"]

    # one run by folder, one by MLflow run id
    result = runner.invoke(app, ["analyze", "runs/gt/seed-0", rnd_id, "--out", "ana"])
    assert result.exit_code == 0, result.output
    with open(workdir / "ana/cka.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["run", "gt-s0", "rnd-s0"]
    matrix = [[float(v) for v in row[1:]] for row in rows[1:]]
    assert matrix[0][0] == pytest.approx(1.0) and matrix[1][1] == pytest.approx(1.0)
    assert matrix[0][1] == matrix[1][0] and 0.0 <= matrix[0][1] < 1.0
    cka = json.loads((workdir / "ana/cka.json").read_text())
    assert [r["run_id"] for r in cka["runs"]] == [gt_id, rnd_id]
    probes = json.loads((workdir / "ana/probe.json").read_text())
    assert "ridge" in probes["method"] and "not the study's" in probes["method"]
    assert {(p["run"], p["label_set"]) for p in probes["rows"]} == {
        (run, ls) for run in ("gt-s0", "rnd-s0") for ls in ("gt", "superclass")}
    for name in ("cka.png", "embedding-gt-s0.png", "embedding-rnd-s0.png"):
        assert (workdir / "ana" / name).read_bytes()[:8] == PNG_MAGIC

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    training = client.get_experiment_by_name("auxcli").experiment_id
    assert not client.search_runs([training], "tags.`auxcli.analysis` = 'true'")  # out of the training runs' table
    experiment = client.get_experiment_by_name("auxcli-analysis")
    analysis = client.search_runs([experiment.experiment_id], "tags.`auxcli.analysis` = 'true'")
    assert len(analysis) == 1
    run = analysis[0]
    assert run.info.run_name == "auxcli-analysis" and run.info.status == "FINISHED"
    assert run.data.tags["auxcli.analysis.input_run_ids"] == f"{gt_id},{rnd_id}"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "analysis")}
    assert {"analysis/cka.csv", "analysis/cka.png", "analysis/probe.json"} <= artifacts
    assert any(k.startswith("ridge_probe_test_acc.gt-s0") for k in run.data.metrics)

    # the report neither counts nor lists the analysis run, which it would skip even in the training experiment
    records = Store(f"sqlite:///{workdir / 'mlflow.db'}", "auxcli-analysis").runs()
    assert [r.is_report for r in records if r.run_id == run.info.run_id] == [True]
    report = runner.invoke(app, ["report", "--format", "json"])
    assert report.exit_code == 0, report.output
    assert "auxcli-analysis" not in report.output and run.info.run_id not in report.output


def test_analyze_refuses_unfinished_runs_and_non_runs(tiny_spec, workdir):
    (workdir / "runs/x/seed-0").mkdir(parents=True)
    result = CliRunner().invoke(app, ["analyze", "runs/x/seed-0", "--no-mlflow"])
    assert result.exit_code == 2 and "final.pt" in result.output
    result = CliRunner().invoke(app, ["analyze", "not-a-run", "--no-mlflow"])
    assert result.exit_code == 2 and "neither a run folder" in result.output


def test_features_of_the_penultimate_or_a_named_layer():
    from auxcli.analysis.features import extract_features
    from auxcli.data.types import Split
    from auxcli.errors import AnalysisError
    from auxcli.models.registry import create_backbone
    from auxcli.spec import ModelSpec

    backbone = create_backbone(ModelSpec(backbone="resnet", depth=8, base_width=4))
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    split = Split(images, torch.zeros(5, dtype=torch.int64), None, torch.arange(5), 5)
    stats = {"mean": torch.full((3,), 0.5), "std": torch.full((3,), 0.25)}
    assert extract_features(backbone, split, batch_size=2, **stats).shape == (5, 16)  # 4 * base_width
    assert extract_features(backbone, split, layer="layer2", batch_size=2, **stats).shape == (5, 8)
    with pytest.raises(AnalysisError, match="allowed: penultimate, conv1"):
        extract_features(backbone, split, layer="layer9", **stats)


def _fake_run(folder, spec_data: dict, seed: int = 0, init_seed: int = 0):
    """A finished-looking run folder: final.pt with a freshly initialised backbone and its spec."""
    from auxcli.models.registry import create_backbone
    from auxcli.spec import Spec
    from auxcli.specfile import dump_spec
    from auxcli.train.checkpoint import FINAL_FORMAT, save_checkpoint

    torch.manual_seed(init_seed)
    spec = Spec.model_validate(spec_data)
    backbone = create_backbone(spec.model, image_size=spec.data.image_size)
    folder.mkdir(parents=True)
    save_checkpoint(folder / "final.pt", {"format": FINAL_FORMAT, "spec": spec.to_plain(), "seed": seed,
                                          "backbone": backbone.state_dict(), "heads": {}, "mlflow_run_id": None})
    (folder / "spec.resolved.yaml").write_text(dump_spec(spec))
    return folder


def _folder_spec(name: str, root, **data) -> dict:
    return {"name": name, "data": {"dataset": "folder", "root": str(root), "image_size": 16, **data},
            "model": {"backbone": "resnet", "depth": 8, "base_width": 4}, "runtime": {"threads": 1}}


def test_analyze_a_folder_data_set_without_mlflow(workdir, image_folder):
    images = image_folder()
    for name in ("p", "q"):
        _fake_run(workdir / "runs" / name / "seed-0", _folder_spec(name, images), init_seed=ord(name))
    result = CliRunner().invoke(app, ["analyze", "runs/p/seed-0", "runs/q/seed-0", "--no-mlflow", "--layer",
                                      "layer1", "--out", "ana"])
    assert result.exit_code == 0, result.output
    probes = json.loads((workdir / "ana/probe.json").read_text())["rows"]
    assert [(p["run"], p["label_set"], p["feature_dim"]) for p in probes] == [("p-s0", "gt", 4), ("q-s0", "gt", 4)]
    assert (workdir / "ana/embedding-q-s0.png").read_bytes()[:8] == PNG_MAGIC
    assert not (workdir / "mlflow.db").exists()


def test_analyze_refuses_runs_on_different_data(workdir, image_folder):
    images = image_folder()
    _fake_run(workdir / "runs/p/seed-0", _folder_spec("p", images))
    _fake_run(workdir / "runs/q/seed-0", {**_folder_spec("q", images), "data": {
        "dataset": "folder", "root": str(images), "image_size": 20}})
    result = CliRunner().invoke(app, ["analyze", "runs/p/seed-0", "runs/q/seed-0", "--no-mlflow"])
    assert result.exit_code == 2 and "data.image_size" in result.output


def test_tsne_embedding_and_its_missing_dependency(monkeypatch):
    import sys

    from auxcli.analysis.embedding import embed_2d
    from auxcli.errors import AnalysisError

    pytest.importorskip("sklearn")
    coords = embed_2d(_features(n=30, d=5).float(), "tsne")
    assert coords.shape == (30, 2) and torch.isfinite(coords).all()
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # as if scikit-learn were not installed
    with pytest.raises(AnalysisError, match="scikit-learn"):
        embed_2d(_features(n=30, d=5), "tsne")
