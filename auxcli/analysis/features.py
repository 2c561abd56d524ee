"""Runs to analyse, and their feature extractors' features of the same images.

A run is given as its folder (`runs/<name>/seed-<k>`: `final.pt` and `spec.resolved.yaml`) or as an
MLflow run id (`runs:/<id>` or the bare 32-hex id: its `model/final.pt` artifact, which embeds the
resolved spec). Features are the backbone's output in eval mode on clean images, normalised with the
training split's statistics as in training; `penultimate` is the globally average-pooled final
feature map (what the classifier head reads), any other `layer` a named module of the backbone
(e.g. `layer2`), average-pooled the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from auxcli.augment.normalize import normalize
from auxcli.data.types import Split
from auxcli.tracking import names_a_run
from auxcli.errors import AnalysisError
from auxcli.models.registry import create_backbone
from auxcli.spec import Spec

PENULTIMATE = "penultimate"


@dataclass(frozen=True)
class AnalyzedRun:
    label: str  # <spec name>-s<seed>, made unique among the inputs
    ref: str  # what the user passed
    spec: Spec
    seed: int
    checkpoint: Path
    run_id: str | None  # the training run in MLflow, when known


def resolve_run(ref: str, *, tracking_uri: str | None, download_dir: Path) -> AnalyzedRun:
    """The run folder or MLflow run `ref` names, with its checkpoint and spec."""
    from auxcli.train.checkpoint import FINAL_FORMAT, load_checkpoint

    path = Path(ref)
    if path.is_file() and path.name == "final.pt":
        path = path.parent
    if path.is_dir():
        checkpoint = path / "final.pt"
        if not checkpoint.is_file():
            raise AnalysisError(f"{path}/ has no final.pt: the run has not finished (re-running its spec "
                                "resumes it), or this is not a run folder (runs/<name>/seed-<k>).")
        state = load_checkpoint(checkpoint, FINAL_FORMAT)
        spec = _spec_of(path / "spec.resolved.yaml", state)
        return AnalyzedRun(f"{spec.name}-s{state['seed']}", ref, spec, int(state["seed"]), checkpoint,
                           state.get("mlflow_run_id"))
    if names_a_run(ref):
        from auxcli.tracking import download_final_checkpoint, find_run_id

        run_id = find_run_id(tracking_uri, ref)
        if run_id is None:
            raise AnalysisError(f"no MLflow run {ref!r} in the tracking store (--tracking-uri, MLFLOW_TRACKING_URI "
                                "or ./mlflow.db).")
        checkpoint = download_final_checkpoint(tracking_uri, run_id, download_dir / run_id)
        if checkpoint is None:
            raise AnalysisError(f"MLflow run {run_id} has no model/final.pt artifact (only finished auxcli runs do).")
        state = load_checkpoint(checkpoint, FINAL_FORMAT)
        spec = _spec_of(None, state)
        return AnalyzedRun(f"{spec.name}-s{state['seed']}", ref, spec, int(state["seed"]), checkpoint, run_id)
    raise AnalysisError(f"{ref!r} is neither a run folder (runs/<name>/seed-<k> with final.pt) nor an MLflow run id "
                        "(32 hex digits or runs:/<id>).")


def _spec_of(resolved: Path | None, state: dict) -> Spec:
    from auxcli.specfile import load_spec

    if resolved is not None and resolved.is_file():
        return load_spec(resolved)
    try:
        return Spec.model_validate(state["spec"])
    except Exception as exc:  # pydantic errors and our cross-field errors alike
        raise AnalysisError(f"the checkpoint's embedded spec is not valid for this auxcli version "
                            f"({str(exc).splitlines()[0]}).") from None


def unique_labels(runs: list[AnalyzedRun]) -> list[AnalyzedRun]:
    """The runs with labels made unique (a repeated label gets -2, -3, ... in input order)."""
    seen: dict[str, int] = {}
    out = []
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        label = run.label if seen[run.label] == 1 else f"{run.label}-{seen[run.label]}"
        out.append(AnalyzedRun(label, run.ref, run.spec, run.seed, run.checkpoint, run.run_id))
    return out


def load_feature_extractor(run: AnalyzedRun) -> torch.nn.Module:
    """The run's backbone with its trained weights, in eval mode, on the CPU."""
    from auxcli.train.checkpoint import FINAL_FORMAT, load_checkpoint

    state = load_checkpoint(run.checkpoint, FINAL_FORMAT)
    backbone = create_backbone(run.spec.model, image_size=run.spec.data.image_size)
    try:
        backbone.load_state_dict(state["backbone"])
    except RuntimeError as exc:
        raise AnalysisError(f"{run.checkpoint}: its weights do not fit the backbone its spec describes "
                            f"({str(exc).splitlines()[0][:300]}).") from None
    return backbone.eval()


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, split: Split, *, mean: torch.Tensor, std: torch.Tensor,
                     layer: str = PENULTIMATE, batch_size: int = 500,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 (N, D) features of every image of `split`, in split order (see the module docstring)."""
    backbone = backbone.to(device).eval()
    captured: list[torch.Tensor] = []
    hook = None
    if layer != PENULTIMATE:
        modules = dict(backbone.named_modules())
        if layer not in modules or not layer:
            names = [name for name, _ in backbone.named_children()]
            raise AnalysisError(f"--layer {layer!r} is not a module of the {type(backbone).__name__} backbone; "
                                f"allowed: {', '.join([PENULTIMATE, *names])}.")
        hook = modules[layer].register_forward_hook(lambda module, inputs, output: captured.append(output))
    out = []
    mean, std = mean.to(device), std.to(device)
    try:
        for start in range(0, len(split), batch_size):
            images = normalize(split.images[start:start + batch_size].to(device), mean, std)
            features = backbone.forward_features(images)
            if hook is not None:
                features = captured.pop()
            out.append(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1).float().cpu())
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(out) if out else torch.zeros(0, 0)
