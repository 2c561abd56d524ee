"""`auxcli bundle`: finished runs (run folders, MLflow runs or specs) into one verifiable archive.

Per run, under `runs/<name>/seed-<k>/`: `spec.resolved.yaml`, `metrics.json`, `history.csv`,
`mlflow.json` (run id, experiment, store URI without password, tags, params), the run's `repro/` record
(see `record.py`) and, with `--with-weights`, `final.pt`. A transfer run pulls in its source run the same
way (role `source`), recursively, so the chain is complete. At the top: `manifest.json` (see
`archive.py`) and `REPORT.md`, the bundled runs through `auxcli report`'s renderer.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auxcli.bundle.archive import Content, write_bundle
from auxcli.runrecord import RECORD_DIR
from auxcli.runfolder import read_history
from auxcli.tracking import RUN_ID, names_a_run
from auxcli.errors import BundleError

RUN_FILES = ("spec.resolved.yaml", "metrics.json", "history.csv")


@dataclass
class BundledRun:
    """One finished run as found locally or downloaded from MLflow."""

    name: str
    seed: int
    folder: Path  # holds RUN_FILES, repro/ and (maybe) final.pt or model/final.pt
    run_id: str | None
    mlflow: dict[str, Any]
    role: str = "target"  # target | source
    transfer_source: str | None = None  # member folder of the source run, when bundled
    store_uri: str | None = None  # the MLflow store it was found in (not written: it may hold a password)

    @property
    def member_dir(self) -> str:
        return f"runs/{self.name}/seed-{self.seed}"

    @property
    def final(self) -> Path | None:
        for candidate in (self.folder / "final.pt", self.folder / "model" / "final.pt"):
            if candidate.is_file():
                return candidate
        return None

    @property
    def transfer_tags(self) -> dict[str, str]:
        tags = {k: v for k, v in self.mlflow.get("tags", {}).items() if k.startswith("auxcli.transfer.")}
        if tags:
            return tags
        provenance = self.folder / RECORD_DIR / "provenance.json"
        if provenance.is_file():
            return _read_json(provenance).get("transfer") or {}
        return {}


@dataclass
class BundleResult:
    path: Path
    manifest: dict[str, Any]
    runs: list[BundledRun] = field(default_factory=list)


def build_bundle(targets: Sequence[str], out: Path | None = None, *, with_weights: bool = False,
                 tracking_uri: str | None = None, overrides: Sequence[str] = ()) -> BundleResult:
    """Resolve `targets`, pull in transfer sources, write the archive (default `bundle-<id12>.tar.gz`)."""
    with tempfile.TemporaryDirectory(prefix="auxcli-bundle-") as tmp:
        downloads = Path(tmp)
        runs: dict[tuple[str, int], BundledRun] = {}
        for target in targets:
            for run in resolve_target(target, tracking_uri, downloads, with_weights, overrides):
                _add_run(runs, run)
        queue = list(runs.values())
        while queue:  # transfer sources, and their sources
            run = queue.pop()
            source = find_source(run, tracking_uri, downloads, with_weights)
            if source is None:
                continue
            key = (source.name, source.seed)
            if key not in runs:
                source.role = "source"
                runs[key] = source
                queue.append(source)
            run.transfer_source = runs[key].member_dir
        ordered = sorted(runs.values(), key=lambda r: (r.name, r.seed))
        members: dict[str, Content] = {}
        entries = []
        for run in ordered:
            members.update(run_members(run, with_weights))
            entries.append(_entry(run, with_weights))
        members["REPORT.md"] = report_markdown(ordered).encode("utf-8")
        target = out or Path("bundle.tar.gz.partial")
        manifest = write_bundle(target, members, entries)
        if out is None:
            target = Path(f"bundle-{manifest['bundle_id'][:12]}.tar.gz")
            os.replace("bundle.tar.gz.partial", target)
        return BundleResult(target, manifest, ordered)


def _add_run(runs: dict[tuple[str, int], BundledRun], run: BundledRun) -> None:
    key = (run.name, run.seed)
    known = runs.get(key)
    if known is not None and known.run_id != run.run_id:
        raise BundleError(f"two different runs of {run.name} seed {run.seed} were named "
                          f"(MLflow runs {known.run_id} and {run.run_id}); bundle them separately.")
    runs.setdefault(key, run)


def _entry(run: BundledRun, with_weights: bool) -> dict[str, Any]:
    tags = run.transfer_tags
    metrics = _read_json(run.folder / "metrics.json")
    return {
        "name": run.name, "seed": run.seed, "path": run.member_dir, "role": run.role,
        "metrics": {k: v for k, v in sorted(metrics.items()) if k.startswith(("final_", "best_"))},
        "mlflow_run_id": run.run_id, "experiment": run.mlflow.get("experiment"),
        "weights": with_weights and run.final is not None,
        "record": (run.folder / RECORD_DIR / "environment.json").is_file(),
        "transfer_source": run.transfer_source,
        "transfer_checkpoint_sha256": tags.get("auxcli.transfer.checkpoint_sha256"),
    }


def run_members(run: BundledRun, with_weights: bool) -> dict[str, Content]:
    """The run's files by member name. Links and special files are refused, naming them: a bundle never
    carries the contents of a file outside the run folder (issue 21), as reading never extracts a link."""
    members: dict[str, Content] = {}
    for name in RUN_FILES:
        path = run.folder / name
        _refuse_links(path, run.folder)
        if not path.is_file():
            raise BundleError(f"{run.folder}: {name} is missing; only finished runs can be bundled.")
        members[f"{run.member_dir}/{name}"] = path.read_bytes()
    read_history(members[f"{run.member_dir}/history.csv"].decode("utf-8", "replace"), run.folder / "history.csv")
    _refuse_credentials(run)
    members[f"{run.member_dir}/mlflow.json"] = (json.dumps(run.mlflow, indent=2, sort_keys=True) + "\n").encode()
    record = run.folder / RECORD_DIR
    _refuse_links(record, run.folder)
    if record.is_dir():
        for folder, dirs, files in os.walk(record, followlinks=False):
            for name in sorted(dirs + files):
                _refuse_links(Path(folder) / name, run.folder)
        for path in sorted(p for p in record.rglob("*") if p.is_file()):
            members[f"{run.member_dir}/{RECORD_DIR}/{path.relative_to(record).as_posix()}"] = path.read_bytes()
    if with_weights:
        if run.final is None:
            raise BundleError(f"{run.folder}: no final.pt to include (--with-weights).")
        _refuse_links(run.final, run.folder)
        members[f"{run.member_dir}/final.pt"] = run.final
    return members


def _refuse_credentials(run: BundledRun) -> None:
    """A run recorded before passwords in tracking URIs were refused still has one in its spec and params:
    such a run is not bundled (credentials never travel; `auxcli.credentials`)."""
    from auxcli.credentials import has_password

    spec_uri = (_read_yaml(run.folder / "spec.resolved.yaml").get("tracking") or {}).get("uri")
    param_uri = (run.mlflow.get("params") or {}).get("tracking.uri")
    if has_password(str(spec_uri or "")) or has_password(str(param_uri or "")):
        raise BundleError(f"{run.folder}: the run's tracking.uri holds a password (recorded before auxcli refused "
                          "them); a bundle never carries credentials. Re-run the spec without the password "
                          "(MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD instead) and bundle that run.")


def _refuse_links(path: Path, run_folder: Path) -> None:
    import stat

    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise BundleError(f"{path} is a symbolic link; a bundle never follows a link out of the run folder "
                          f"{run_folder}. Replace it with the file it points to, or remove it, and bundle again.")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise BundleError(f"{path} is not a regular file (a FIFO, socket or device); remove it from the run "
                          f"folder {run_folder} and bundle again.")


# ---------------------------------------------------------------------------------------------- targets

def resolve_target(target: str, tracking_uri: str | None, downloads: Path, weights: bool = False,
                   overrides: Sequence[str] = ()) -> list[BundledRun]:
    """A run folder, a folder of seeds, `runs:/<id>` or a bare run id, a spec file (resolved with
    `overrides`: --params' leaves, then --set), or a spec name."""
    path = Path(target)
    if path.is_dir():
        if (path / "metrics.json").is_file():
            return [local_run(path, tracking_uri)]
        seeds = sorted(p for p in path.glob("seed-*") if (p / "metrics.json").is_file())
        if seeds:
            return [local_run(p, tracking_uri) for p in seeds]
        raise BundleError(f"{target}: not a finished run folder (no metrics.json); finish the run first.")
    if names_a_run(target):
        return [mlflow_run(target.removeprefix("runs:/").split("/")[0], tracking_uri, downloads, weights)]
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from auxcli.catalogue import finished_folders, folder_state
        from auxcli.specfile import load_spec

        spec = load_spec(path, overrides)
        done = [folder.root for _, folder in finished_folders(spec)]  # this spec's identity only
        if not done and any(folder_state(spec, seed) == "stale" for seed in spec.seeds):
            raise BundleError(f"{target}: the run folders of spec '{spec.name}' hold results of other settings "
                              "than the spec as resolved here; pass the --params/--set they were run with "
                              f"(`auxcli run {target} --dry-run` shows the differing fields).")
        if not done:
            raise BundleError(f"{target}: spec '{spec.name}' has no finished seed in {spec.runtime.runs_dir}/; "
                              f"run it first: auxcli run {target}")
        return [local_run(f, tracking_uri) for f in done]
    from auxcli.project import anchored

    runs = anchored("runs")  # the default runs_dir, at the repository root as `auxcli run` writes it
    seeds = sorted(p for p in (runs / target).glob("seed-*") if (p / "metrics.json").is_file()) \
        if names_a_spec(target) else []
    if seeds:
        return [local_run(p, tracking_uri) for p in seeds]
    raise BundleError(f"{target}: not a run folder, MLflow run id, spec file or spec name with finished runs "
                      "in runs/; allowed: runs/<name>/seed-<k>, runs:/<id>, a spec .yaml, a spec name.")


def names_a_spec(target: str) -> bool:
    import re

    from auxcli.spec import NAME_PATTERN

    return bool(re.fullmatch(NAME_PATTERN, target))


def local_run(folder: Path, tracking_uri: str | None) -> BundledRun:
    metrics = _read_json(folder / "metrics.json")
    spec = _read_yaml(folder / "spec.resolved.yaml")
    run_id = metrics.get("mlflow_run_id")
    uri = tracking_uri or (spec.get("tracking") or {}).get("uri")
    return BundledRun(metrics.get("spec_name") or spec["name"], int(metrics.get("seed", _seed_of(folder))),
                      folder, run_id, mlflow_info(run_id, uri, spec), store_uri=uri)


def mlflow_run(run_id: str, tracking_uri: str | None, downloads: Path, weights: bool = False) -> BundledRun:
    """A finished run's files, downloaded from its `spec.resolved.yaml`, `metrics.json`, `history.csv`,
    `repro/` and (with `weights`) `model/final.pt` artifacts."""
    from mlflow.artifacts import download_artifacts

    from auxcli.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    info = mlflow_info(run_id, uri, {})
    if "tags" not in info:
        raise BundleError(f"MLflow run {run_id} is not in the store {info.get('tracking_uri')}; pass "
                          "--tracking-uri or set MLFLOW_TRACKING_URI.")
    folder = downloads / run_id
    folder.mkdir(parents=True, exist_ok=True)
    for artifact in (*RUN_FILES, RECORD_DIR, *(["model/final.pt"] if weights else [])):
        try:
            download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(folder), tracking_uri=uri)
        except Exception:  # absent artifacts are reported below (run files) or tolerated (record, weights)
            pass
    if not (folder / "metrics.json").is_file():
        raise BundleError(f"MLflow run {run_id} has no metrics.json artifact: only finished auxcli runs can "
                          "be bundled.")
    metrics = _read_json(folder / "metrics.json")
    return BundledRun(metrics["spec_name"], int(metrics["seed"]), folder, run_id, info, store_uri=uri)


def mlflow_info(run_id: str | None, uri: str | None, spec: dict) -> dict[str, Any]:
    """Run id, experiment, store URI (no password), tags and params of a run; just the id and URI when the
    store does not have it."""
    from auxcli.report.collect import store_is_missing
    from auxcli.tracking import display_uri, resolve_tracking_uri

    uri = resolve_tracking_uri(uri)
    info: dict[str, Any] = {"run_id": run_id, "tracking_uri": display_uri(uri),
                            "experiment": (spec.get("tracking") or {}).get("experiment")}
    if run_id is None or store_is_missing(uri):
        return info
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(run_id)
        experiment = client.get_experiment(run.info.experiment_id)
    except Exception:
        return info
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.runName"}
    info.update(experiment=experiment.name, status=run.info.status, tags=dict(sorted(tags.items())),
                params=dict(sorted(run.data.params.items())))
    return info


def find_source(run: BundledRun, tracking_uri: str | None, downloads: Path, weights: bool = False
                ) -> BundledRun | None:
    """The run a transfer started from: its run folder when that still holds the same MLflow run, else the
    MLflow run by id; None for `from: init` or a checkpoint that no run produced."""
    tags = run.transfer_tags
    source_id = tags.get("auxcli.transfer.source_run_id")
    if not tags or tags.get("auxcli.transfer.source_spec") == "init" or source_id == "none":
        return None
    checkpoint = Path(tags.get("auxcli.transfer.checkpoint", ""))
    folder = checkpoint.parent
    if checkpoint.is_file() and (folder / "metrics.json").is_file():
        local = local_run(folder, tracking_uri)
        if source_id in (None, "unknown") or local.run_id == source_id:
            return local
    if source_id and RUN_ID.match(source_id):
        try:
            return mlflow_run(source_id, tracking_uri or run.store_uri, downloads, weights)
        except BundleError:
            pass
    raise BundleError(f"{run.folder}: the transfer source of {run.name} seed {run.seed} (MLflow run "
                      f"{source_id}, checkpoint {checkpoint}) is neither a finished run folder nor in the "
                      "MLflow store; pass --tracking-uri with the store that has it.")


# ---------------------------------------------------------------------------------------------- report

def report_markdown(runs: list[BundledRun]) -> str:
    """REPORT.md: the bundled runs through `auxcli report`'s tables and github renderer."""
    from auxcli.report.aggregate import aggregate
    from auxcli.report.collect import RunRecord
    from auxcli.report.render import render
    from auxcli.report.tables import build_report
    from auxcli.tracking import flatten

    records = []
    for run in runs:
        metrics = _read_json(run.folder / "metrics.json")
        params = run.mlflow.get("params") or {k: str(v) for k, v in
                                              flatten(_read_yaml(run.folder / "spec.resolved.yaml")).items()}
        tags = {"auxcli.spec_name": run.name, "auxcli.seed": str(run.seed), **run.transfer_tags,
                **{k: v for k, v in run.mlflow.get("tags", {}).items() if k.startswith("auxcli.")}}
        records.append(RunRecord(
            run_id=run.run_id or f"{run.name}-s{run.seed}", run_name=f"{run.name}-s{run.seed}", status="FINISHED",
            spec_name=run.name, seed=run.seed,
            metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and k != "seed"},
            params=params, tags=tags))
    report = build_report(aggregate(records))
    report.tables = [t for t in report.tables if any(row.n for row in t.rows)]  # only tables with bundled runs
    listing = "\n".join(f"- `{r.member_dir}` ({r.role}): MLflow run `{r.run_id}`, experiment "
                        f"`{r.mlflow.get('experiment')}`" + (f", transfer from `{r.transfer_source}`"
                                                              if r.transfer_source else "") for r in runs)
    return (f"# auxcli bundle\n\n{len(runs)} run(s):\n\n{listing}\n\nVerify and re-run with "
            "`auxcli reproduce <this file>.tar.gz` (`--check-only` verifies without training).\n\n"
            + render(report, "github"))


def _read_yaml(path: Path) -> dict:
    from auxcli.errors import SpecError
    from auxcli.safeyaml import read_yaml_file

    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{path.parent}: spec.resolved.yaml is missing; only finished runs can be bundled.")
    try:
        doc = read_yaml_file(path, "resolved spec", "the spec.resolved.yaml auxcli run wrote")
    except SpecError as exc:
        raise BundleError(f"{exc}; this run folder's spec is damaged, so it cannot be bundled.") from None
    if not isinstance(doc, dict):
        raise BundleError(f"{path}: not a YAML mapping; this run folder's spec is damaged, so it cannot be bundled.")
    return doc


def _read_json(path: Path) -> dict[str, Any]:
    """A run file's JSON object; `BundleError` naming a damaged one (merge markers, truncation, a link)."""
    _refuse_links(path, path.parent)
    try:
        with path.open("rb") as f:
            data = json.loads(f.read(64 << 20))
    except FileNotFoundError:
        raise BundleError(f"{path} is missing; only finished runs can be bundled.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({str(exc)[:120]}); the run folder is damaged: restore the "
                          "file (it is also an MLflow artifact of the run) or re-run with --force.") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} is not a JSON object; the run folder is damaged: restore the file or re-run "
                          "with --force.")
    return data


def _seed_of(folder: Path) -> int:
    try:
        return int(folder.name.removeprefix("seed-"))
    except ValueError:
        raise BundleError(f"{folder}: metrics.json has no seed and the folder is not named seed-<k>") from None
