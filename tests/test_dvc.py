"""`dvc repro` over generated pipelines: real DVC commands in a real git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from auxcli.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc not installed")]


def sh(*args: str, cwd) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_dvc_repro_runs_sources_before_transfers_and_reruns_on_params(workdir, tiny_spec):
    (workdir / "specs").mkdir()
    for name, extra in (("probe", "transfer: {from: pretrain, mode: linear}\n"), ("pretrain", "")):
        tiny_spec(name, extra).rename(workdir / "specs" / f"{name}.yaml")
    (workdir / "params.yaml").write_text("runtime:\n  threads: 1\n")
    sh("git", "init", "-q", cwd=workdir)
    sh("dvc", "init", "-q", cwd=workdir)
    result = CliRunner().invoke(app, ["pipeline", "specs"])
    assert result.exit_code == 0, result.output
    stages = (workdir / "dvc.yaml").read_text()
    assert stages.index("pretrain:") < stages.index("probe:")
    assert "runs/pretrain/seed-0/final.pt" in stages.split("probe:")[1]  # the probe depends on its source

    sh("dvc", "repro", cwd=workdir)
    metrics = {name: workdir / f"runs/{name}/seed-0/metrics.json" for name in ("pretrain", "probe")}
    assert all(path.exists() for path in metrics.values())
    before = {name: path.stat().st_mtime_ns for name, path in metrics.items()}

    output = sh("dvc", "repro", cwd=workdir)
    assert "didn't change" in output or "up to date" in output.lower()
    assert {name: path.stat().st_mtime_ns for name, path in metrics.items()} == before

    sh("git", "add", "-A", cwd=workdir)
    sh("git", "commit", "-qm", "pipeline", cwd=workdir)
    sh("dvc", "exp", "run", "-S", "+train.lr=0.05", cwd=workdir)  # + adds a key (Hydra syntax)
    assert "lr: 0.05" in (workdir / "params.yaml").read_text()
    for name, path in metrics.items():
        assert path.stat().st_mtime_ns != before[name], name
        assert "lr: 0.05" in (path.parent / "spec.resolved.yaml").read_text()

    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=workdir))
    assert "final_test_acc" in json.dumps(shown)
