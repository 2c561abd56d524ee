"""Transfer protocols (the study's Tables 2 and 3) on generated data with tiny backbones."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from typer.testing import CliRunner

from auxcli.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def final_state(workdir, name: str, seed: int = 0) -> dict:
    return torch.load(workdir / "runs" / name / f"seed-{seed}" / "final.pt", weights_only=True)


def store_runs(workdir):
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["auxcli"])
    return runs[runs["tags.auxcli.seed"].notna()].reset_index(drop=True)  # seeds, not spec parents


@pytest.mark.slow
@pytest.mark.parametrize("label_set", ["gt", "superclass", "random"])
def test_pretrain_then_linear_probe_and_finetune(workdir, tiny_spec, label_set):
    source = tiny_spec(f"pre-{label_set}", f"task: {{labels: {label_set}}}\n")
    probe = tiny_spec("probe", f"transfer: {{from: pre-{label_set}, mode: linear}}\n")
    finetune = tiny_spec("finetune", f"transfer: {{from: pre-{label_set}, mode: finetune}}\n")
    result = invoke("run", probe, finetune, source)  # given out of order: run waits for the source
    assert result.exit_code == 0, result.output

    pre, probed, tuned = (final_state(workdir, n) for n in (f"pre-{label_set}", "probe", "finetune"))
    # Linear probe, BN frozen: every extractor tensor, BN buffers included, is exactly the source's.
    assert pre["backbone"].keys() == probed["backbone"].keys()
    for key, tensor in pre["backbone"].items():
        assert torch.equal(tensor, probed["backbone"][key]), key
    assert any("running_mean" in key for key in pre["backbone"])
    # Fine-tuning moves the extractor.
    assert any(not torch.equal(t, tuned["backbone"][k]) for k, t in pre["backbone"].items())
    # A fresh head on gt (100 classes), whatever the source was trained on.
    assert probed["heads"]["main"]["fc.weight"].shape[0] == 100

    runs = store_runs(workdir).set_index("tags.mlflow.runName")
    source_id = runs.loc[f"pre-{label_set}-s0", "run_id"]
    for name, mode in (("probe", "linear"), ("finetune", "finetune")):
        run = runs.loc[f"{name}-s0"]
        assert run["tags.auxcli.transfer.source_run_id"] == source_id
        assert run["tags.auxcli.transfer.source_spec"] == f"pre-{label_set}"
        assert run["tags.auxcli.transfer.mode"] == mode
        assert len(run["tags.auxcli.transfer.checkpoint_sha256"]) == 64
    assert runs.loc["probe-s0", "tags.auxcli.transfer.bn"] == "frozen"
    # A finished chain is done, finetune included (its resolved spec gives its own identity back).
    again = invoke("run", probe, finetune, source)
    assert again.exit_code == 0 and "epoch" not in again.output, again.output
    assert "3 done" in invoke("plan", probe, finetune, source).output


def test_linear_probe_with_training_bn_updates_only_bn_statistics(workdir, tiny_spec):
    tiny_spec("source")
    probe = tiny_spec("probe-bn", "transfer: {from: source, mode: linear, bn: train}\n")
    assert invoke("run", workdir / "source.yaml", probe).exit_code == 0
    pre, probed = final_state(workdir, "source"), final_state(workdir, "probe-bn")
    for key, tensor in pre["backbone"].items():
        same = torch.equal(tensor, probed["backbone"][key])
        if "running_" in key:
            assert not same, key  # statistics adapt to the new task's batches
        elif "num_batches_tracked" not in key:
            assert same, key  # weights stay frozen


def test_probe_from_an_untrained_network_and_the_raw_pixel_baseline(workdir, tiny_spec):
    init = tiny_spec("probe-init", "transfer: {from: init, mode: linear}\n")
    pixels = tiny_spec("pixels", "")
    # a mapping merges into the section; delete it first to replace it (issue 9)
    result = invoke("run", init, pixels, "--set", "~model", "--set", "model={backbone: linear}")
    assert result.exit_code == 2  # the override hits both specs; linear cannot transfer
    assert "transfer" in result.output

    assert invoke("run", init).exit_code == 0, "probe from init"
    assert invoke("run", pixels, "--set", "~model", "--set", "model={backbone: linear}").exit_code == 0
    pixel_model = final_state(workdir, "pixels")
    assert pixel_model["backbone"] == {}  # one FC on raw pixels: only the head has weights
    assert pixel_model["heads"]["main"]["fc.weight"].shape == (100, 3072)
    metrics = json.loads((workdir / "runs/probe-init/seed-0/metrics.json").read_text())
    assert 0.0 <= metrics["final_test_acc"] <= 1.0
    assert store_runs(workdir).set_index("tags.mlflow.runName").loc["probe-init-s0", "tags.auxcli.transfer.from"] \
        == "init"


def test_transfer_from_a_checkpoint_path_and_an_mlflow_run_id(workdir, tiny_spec):
    assert invoke("run", tiny_spec("origin")).exit_code == 0
    run_id = json.loads((workdir / "runs/origin/seed-0/metrics.json").read_text())["mlflow_run_id"]
    checkpoint = workdir / "runs/origin/seed-0/final.pt"
    for name, ref in (("by-path", checkpoint), ("by-uri", f"runs:/{run_id}"), ("by-id", run_id)):
        spec = tiny_spec(name, f"transfer: {{from: '{ref}', mode: linear}}\n")
        result = invoke("run", spec)
        assert result.exit_code == 0, (name, result.output)
        probed = final_state(workdir, name)
        for key, tensor in torch.load(checkpoint, weights_only=True)["backbone"].items():
            assert torch.equal(tensor, probed["backbone"][key]), (name, key)
    runs = store_runs(workdir).set_index("tags.mlflow.runName")
    assert runs.loc["by-uri-s0", "tags.auxcli.transfer.source_run_id"] == run_id


@pytest.mark.parametrize("case", ["missing", "unfinished", "mismatch", "unknown-run"])
def test_transfer_source_errors_are_clear(workdir, tiny_spec, case):
    source_ref = {"missing": "nowhere", "unfinished": "half", "mismatch": "deeper",
                  "unknown-run": "runs:/0123456789abcdef0123456789abcdef"}[case]
    if case == "unfinished":
        folder = workdir / "runs/half/seed-0"
        folder.mkdir(parents=True)
        (folder / "last.pt").write_bytes(b"")
    if case == "mismatch":
        assert invoke("run", tiny_spec("deeper"), "--set", "model.depth=14").exit_code == 0
    spec = tiny_spec("probe", f"transfer: {{from: '{source_ref}', mode: linear}}\n")
    result = invoke("run", spec)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    expected = {"missing": "has no run for seed 0", "unfinished": "has not finished",
                "mismatch": "backbone mismatch", "unknown-run": "no MLflow run"}[case]
    assert expected in result.output
    if case == "mismatch":
        assert "depth=14" in result.output and "depth=8" in result.output
    assert not (workdir / "runs/probe/seed-0/last.pt").exists()


def test_every_seed_probes_the_only_seed_of_a_single_seed_source(workdir, tiny_spec):
    source = tiny_spec("single")
    probe = tiny_spec("multi", "transfer: {from: single, mode: linear}\n")
    result = invoke("run", source, probe, "--set", "seeds=[0]")
    assert result.exit_code == 0, result.output
    result = invoke("run", probe, "--set", "seeds=[1]")
    assert result.exit_code == 0, result.output
    source_state = final_state(workdir, "single", 0)
    for key, tensor in source_state["backbone"].items():
        assert torch.equal(tensor, final_state(workdir, "multi", 1)["backbone"][key]), key
