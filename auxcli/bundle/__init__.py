"""Reproducibility bundles: a run's record (`record.py`), the verifiable archive (`archive.py`), building
one from run folders or the MLflow store (`build.py`) and re-running it (`reproduce.py`)."""
