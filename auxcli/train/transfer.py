"""Transfer (the study's Tables 2 and 3): start from a pretrained feature extractor, train a fresh head.

`transfer.from` is resolved in this order: `init` (an untrained extractor: Table 2's 3.55% row); an
existing checkpoint path (or anything that looks like a path); an MLflow run id (`runs:/<id>` or a bare
32-hex id, its `model/final.pt` artifact fetched through the tracking store); else a spec name, whose
`<runs_dir>/<name>/seed-<k>/final.pt` of the same seed is used (or the only seed, if the source has one).

Only the extractor is loaded; the source's heads are dropped and the spec's fresh heads stay.
`linear` freezes the extractor (no gradients, so no weight decay or optimizer state) and, with
`bn: frozen`, keeps its BatchNorm layers in eval mode so even their running statistics stay exactly the
source's; `bn: train` lets the statistics adapt. `finetune` trains every parameter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from auxcli.tracking import names_a_run
from auxcli.errors import TransferError
from auxcli.models.network import Network
from auxcli.project import anchored
from auxcli.runfolder import RunFolder
from auxcli.spec import Spec
from auxcli.train.checkpoint import FINAL_FORMAT, load_checkpoint



@dataclass(frozen=True)
class TransferSetup:
    tags: dict[str, str]
    set_train_mode: Callable[[Network], None] = field(default=lambda model: model.train())


@dataclass(frozen=True)
class Source:
    checkpoint: Path
    spec_name: str | None
    run_id: str | None


def apply_transfer(spec: Spec, model: Network, source: Source | None) -> TransferSetup | None:
    """Load the source extractor into `model` and freeze what the protocol freezes. `source`: the
    already resolved source (`resolve_source`; a torchrun job resolves it once, on rank 0), None for
    `from: init` or no transfer."""
    transfer = spec.transfer
    if transfer is None:
        return None
    tags = {"auxcli.transfer.mode": transfer.mode, "auxcli.transfer.from": transfer.from_}
    if transfer.mode == "linear":
        tags["auxcli.transfer.bn"] = transfer.bn
    if transfer.from_ == "init":
        tags.update({"auxcli.transfer.source_spec": "init", "auxcli.transfer.source_run_id": "none"})
    else:
        assert source is not None, "resolve_source(spec, seed) first"
        state = load_checkpoint(source.checkpoint, FINAL_FORMAT)
        _check_compatible(spec, state, source)
        try:
            model.backbone.load_state_dict(state["backbone"])
        except RuntimeError as exc:
            raise TransferError(f"{source.checkpoint}: its feature extractor does not fit spec '{spec.name}': "
                                f"{str(exc).splitlines()[0][:300]}") from None
        tags.update({
            "auxcli.transfer.source_spec": source.spec_name or state["spec"]["name"],
            "auxcli.transfer.source_run_id": source.run_id or state.get("mlflow_run_id") or "unknown",
            "auxcli.transfer.checkpoint": str(source.checkpoint.resolve()),
            "auxcli.transfer.checkpoint_sha256": _sha256(source.checkpoint),
        })
    if transfer.mode == "finetune":
        return TransferSetup(tags)
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(False)
    if transfer.bn == "frozen":
        return TransferSetup(tags, _train_heads_only)
    return TransferSetup(tags)


def _train_heads_only(model: Network) -> None:
    model.train()
    model.backbone.eval()  # BatchNorm running statistics stay the source's


def resolve_source(spec: Spec, seed: int) -> Source:
    ref = spec.transfer.from_
    path = Path(ref)
    if path.is_file() or "/" in ref and not ref.startswith("runs:/") or ref.endswith(".pt"):
        if not path.is_file():
            raise TransferError(f"transfer.from: checkpoint {ref} does not exist.")
        return Source(path, None, None)
    if names_a_run(ref):
        return _from_mlflow(spec, ref, seed)
    return _from_spec_name(spec, ref, seed)


def _from_spec_name(spec: Spec, name: str, seed: int) -> Source:
    runs = anchored(spec.runtime.runs_dir) / name
    same_seed = runs / f"seed-{seed}"
    seeds = sorted(p for p in runs.glob("seed-*") if p.is_dir())
    folder = same_seed if same_seed.is_dir() else seeds[0] if len(seeds) == 1 else None
    if folder is None:
        found = ", ".join(p.name for p in seeds) or "no runs"
        raise TransferError(f"transfer.from: source spec '{name}' has no run for seed {seed} in {runs} "
                            f"(found: {found}). Run the source first: auxcli run <its spec file>.")
    if not (folder / "metrics.json").exists() or not (folder / "final.pt").exists():
        raise TransferError(f"transfer.from: source run {folder} has not finished (no final.pt/metrics.json); "
                            "finish it first (re-running its spec resumes it).")
    return Source(folder / "final.pt", name, None)


def _from_mlflow(spec: Spec, ref: str, seed: int) -> Source:
    from auxcli.tracking import download_final_checkpoint, find_run_id

    run_id = find_run_id(spec.tracking.uri, ref)
    if run_id is None:
        raise TransferError(f"transfer.from: no MLflow run {ref!r} in the tracking store "
                            "(tracking.uri, MLFLOW_TRACKING_URI or ./mlflow.db).")
    target = RunFolder.of(spec, seed).root / "transfer-source"  # kept beside the run it started
    path = download_final_checkpoint(spec.tracking.uri, run_id, target)
    if path is None:
        raise TransferError(f"transfer.from: MLflow run {run_id} has no model/final.pt artifact "
                            "(only finished auxcli runs do).")
    return Source(path, None, run_id)


def _check_compatible(spec: Spec, state: dict, source: Source) -> None:
    theirs = state["spec"]["model"]
    ours = spec.to_plain()["model"]
    if theirs != ours:
        raise TransferError(f"{source.checkpoint}: backbone mismatch: the checkpoint has {_describe(theirs)}, "
                            f"spec '{spec.name}' asks for {_describe(ours)}.")


def _describe(model: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in model.items())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

