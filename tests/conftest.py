"""Shared test set-up: no telemetry, no network, each test in its own working directory."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run the test from an empty folder: run folders and the embedded MLflow store land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
