"""Checkpoints: `last.pt` (everything needed to resume) and `final.pt` (weights for transfer).

Both hold only tensors and plain values, so they load with `torch.load(weights_only=True)`, and both
are written atomically (temporary file, then rename): an interrupted write never leaves a file that
looks valid but is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from auxcli.errors import CheckpointError
from auxcli.runfolder import atomic_write_bytes

LAST_FORMAT = "auxcli-last-1"
FINAL_FORMAT = "auxcli-final-1"
# What each format must hold, and of which type; a crafted or foreign file missing any of it is a
# `CheckpointError` naming the key, not a KeyError halfway through a resume or a transfer.
REQUIRED_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    LAST_FORMAT: {"epoch": int, "model": dict, "optimizer": dict, "scheduler": dict, "rng": dict, "history": list,
                  "spec_sha256": str, "mlflow_run_id": (str, type(None))},
    FINAL_FORMAT: {"spec": dict, "seed": int, "backbone": dict, "heads": dict},
}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, expected_format: str) -> dict[str, Any]:
    """Load with `weights_only=True`; any failure is a `CheckpointError` naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint.") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: cannot read this checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "It may be truncated or not written by auxcli; delete it or re-run with --force."
        ) from None
    if not isinstance(state, dict) or state.get("format") != expected_format:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not an auxcli checkpoint of format {expected_format} (found {found}).")
    wrong = [f"{key} (missing)" if key not in state else f"{key} (a {type(state[key]).__name__})"
             for key, kind in REQUIRED_KEYS.get(expected_format, {}).items()
             if key not in state or not isinstance(state[key], kind) or isinstance(state[key], bool)]
    if expected_format == FINAL_FORMAT and not wrong and not (
            isinstance(state["spec"].get("model"), dict) and isinstance(state["spec"].get("name"), str)):
        wrong.append("spec.model/spec.name (missing)")
    if wrong:
        raise CheckpointError(f"{path}: this {expected_format} checkpoint lacks or mistypes {', '.join(wrong)}; "
                              "it was not written by auxcli or was edited. Delete it or re-run with --force.")
    return state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
