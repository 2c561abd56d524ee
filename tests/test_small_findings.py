"""Smaller findings of issue 21: `ui --host ::`, `name` in params.yaml, a partial run whose MLflow run was
deleted, the `--nproc` advice without GPUs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from auxcli.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("host, polled", [("::", "[::1]"), ("0.0.0.0", "127.0.0.1"), ("::1", "[::1]"),
                                          ("127.0.0.1", "127.0.0.1")])
def test_ui_polls_the_loopback_of_the_hosts_own_family(host, polled):
    from auxcli.ui import _url_host

    assert _url_host(host) == polled


@pytest.mark.parametrize("params", ["name: renamed\n", "runtime: {runs_dir: elsewhere}\n",
                                    "train: {epochs: 1}\nname: x\n"])
def test_params_that_would_rename_the_stages_outputs_are_refused(tiny_spec, workdir, params):
    spec = tiny_spec()
    (workdir / "params.yaml").write_text(params)
    for command in (["run", spec, "--params", "params.yaml"], ["show", spec, "--params", "params.yaml"]):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        assert "params.yaml" in result.output and "rename" in result.output and "Traceback" not in result.output
    assert not (workdir / "runs").exists()


def test_nproc_advice_without_gpus_never_suggests_nproc_0(monkeypatch):
    import torch

    from auxcli.errors import LaunchError
    from auxcli.train.launch import check_gpus

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(LaunchError) as err:
        check_gpus(2, ["cuda"])
    assert "--nproc 0" not in str(err.value) and "runtime.device: cpu" in str(err.value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(LaunchError, match="--nproc 1 or fewer"):
        check_gpus(2, ["cuda"])


def test_a_partial_run_whose_mlflow_run_was_deleted_resumes_into_a_new_run(tiny_spec, workdir):
    from mlflow.tracking import MlflowClient

    from auxcli.runfolder import RunFolder
    from auxcli.specfile import load_spec
    from auxcli.train.runner import run_seed

    spec = load_spec(tiny_spec())
    first = run_seed(spec, 0, stop_after_epoch=1)
    folder = RunFolder.of(spec, 0)
    assert folder.last.exists() and not folder.metrics.exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    old = client.search_runs([client.get_experiment_by_name("auxcli").experiment_id],
                             filter_string="tags.`auxcli.seed` = '0'")[0].info.run_id
    client.delete_run(old)
    result = invoke("run", workdir / "tiny.yaml")
    assert result.exit_code == 0, result.output
    assert first.folder.root == folder.root and len(folder.read_history()) == 2  # resumed: epoch 2 added
    import json

    new = json.loads(folder.metrics.read_text())["mlflow_run_id"]
    assert new != old and client.get_run(new).data.tags["auxcli.resumed_from"] == old
    assert [m.step for m in client.get_metric_history(new, "train_loss")] == [1, 2]


@pytest.mark.slow
def test_ui_on_the_ipv6_wildcard_becomes_ready(workdir):
    import socket

    from mlflow.tracking import MlflowClient

    from auxcli.tracking import resolve_tracking_uri
    from auxcli.ui import start_ui, stop_ui

    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::", 0))
            port = sock.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 on this machine")
    uri = resolve_tracking_uri(None)
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the embedded store the UI serves
    proc, url = start_ui(uri, "::", port, timeout_s=180)
    try:
        assert url == f"http://[::]:{port}"
        with socket.create_connection(("::1", port), timeout=10):
            pass
    finally:
        stop_ui(proc)
