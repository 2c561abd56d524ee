"""Credentials never travel (issue 21): a password in a tracking URI is refused wherever it comes from,
with a message that says where it belongs, and is never echoed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.credentials import has_password
from auxcli.tracking import display_uri

SECRET = "hunter2-secret"
URIS = [f"http://alice:{SECRET}@127.0.0.1:9/", f"postgresql://alice:{SECRET}@localhost/mlflow",
        f"https://alice:{SECRET}@[::1]:9/x"]


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _refused(result) -> None:
    assert result.exit_code == 2, result.output
    assert SECRET not in result.output and "Traceback" not in result.output and "unexpected" not in result.output
    assert "MLFLOW_TRACKING_PASSWORD" in result.output


@pytest.mark.parametrize("uri", URIS)
def test_a_password_in_the_specs_tracking_uri_is_a_validation_error(tiny_spec, uri):
    spec = tiny_spec("secret", f"tracking: {{uri: '{uri}'}}\n")
    for command in (["validate", spec], ["run", spec], ["show", spec]):
        result = invoke(*command)
        _refused(result)
        assert "tracking.uri" in result.output


@pytest.mark.parametrize("uri", URIS)
def test_a_password_from_the_environment_or_the_option_is_refused(tiny_spec, workdir, uri):
    spec = tiny_spec()
    _refused(invoke("run", spec, env={"MLFLOW_TRACKING_URI": uri}))
    _refused(invoke("report", "--tracking-uri", uri))
    _refused(invoke("run", spec, "--set", f"tracking.uri='{uri}'"))
    assert not (workdir / "runs").exists() and not (workdir / "mlflow.db").exists()


@pytest.mark.parametrize("uri, secret", [
    ("http://alice@host:5000", False), ("http://alice:@host", True), ("sqlite:///mlflow.db", False),
    ("http://host/path@x", False), (f"http://a:{SECRET}@[::1", True), ("file:///tmp/a:b@c", False),
])
def test_has_password_and_display_uri(uri, secret):
    assert has_password(uri) is secret
    assert SECRET not in display_uri(uri)
