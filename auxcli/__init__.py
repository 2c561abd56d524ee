"""auxcli: declarative image-classification experiments with auxiliary (pretext) tasks."""

__version__ = "0.1.0"
