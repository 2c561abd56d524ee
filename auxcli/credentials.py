"""Credentials never travel: a tracking URI with a password is refused wherever it comes from.

A run writes its store URI into `spec.resolved.yaml`, the MLflow params, the provenance record, printed
links and bundles; masking each of those is a list that one new writer would break (issue 21). So a
password is not accepted in `tracking.uri`, `--tracking-uri` or `MLFLOW_TRACKING_URI` at all, and the
message says where it goes instead: MLflow's own variables for a tracking server
(`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` or `MLFLOW_TRACKING_TOKEN`, read by MLflow's REST
client, mlflow/utils/rest_utils.py) and the database driver's own for a database store (`PGPASSWORD` or
`~/.pgpass` for PostgreSQL, an option file for MySQL). A user name alone is kept.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_USERINFO_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s'\"]*:)[^/@\s'\"]*@")

ALLOWED = ("the URI without a password; for a tracking server set MLFLOW_TRACKING_USERNAME and "
           "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), for a database store its driver's own password "
           "file or variable (PGPASSWORD, ~/.pgpass)")


def has_password(uri: str | None) -> bool:
    """True when `uri` carries a password (`scheme://user:password@host`)."""
    if not uri or "@" not in uri:
        return False
    try:
        return urlsplit(uri).password is not None
    except ValueError:  # an unparsable netloc: look at it as text
        netloc = uri.split("://", 1)[-1].split("/", 1)[0]
        return ":" in netloc.rpartition("@")[0]


def mask_passwords(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` in it replaced by `***` (error messages
    quote the URI or the `--set` that held it)."""
    return _USERINFO_PASSWORD.sub(r"\1***@", text)


def password_message(where: str) -> str:
    return (f"{where} holds a password, which auxcli would write into run records, MLflow params and bundles; "
            f"use {ALLOWED}.")


def refuse_password(uri: str | None, where: str) -> None:
    """`TrackingError` (exit 2) when `uri` carries a password; `where` names the setting it came from."""
    from auxcli.errors import TrackingError

    if has_password(uri):
        raise TrackingError(password_message(where))
