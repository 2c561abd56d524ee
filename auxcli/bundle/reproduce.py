"""`auxcli reproduce`: verify a bundle, show what differs from the recorded set-up, re-run, compare.

1. Verify every member against the manifest (`archive.verify_bundle`); `--check-only` stops here.
   Every manifest field and bundled spec is untrusted input (`trust.py`): checked, never obeyed.
2. Extract (safely, within `trust.Limits`) into `<runs_dir>/_bundle/`.
3. Print the differences between each run's recorded environment, code and data and the current ones,
   and the bundled locations that are not used; data whose files differ is an error unless
   `allow_data_change`.
4. Re-run each run through the normal runner, into `<runs_dir>/<name>/seed-<k>/` and the MLflow
   experiment `<experiment>-reproduce` of the user's own store (`tracking.uri` as this machine resolves
   it, never the bundle's); data under the bundled `data.root` only when that is a relative path inside
   this project, else under the project's default data root. No existing run folder is replaced: the
   folders the re-run specs will really write must not exist (an earlier reproduction of the same bundle
   into the same folder excepted). Transfers run after their sources and start from the bundled
   source weights when the bundle has them, else from the re-trained source.
5. Compare the recorded and the reproduced history (the first `epochs` rows with `epochs`, else every
   row and the summary metrics): per metric the value at the last compared epoch and the largest
   difference over the compared epochs, against its tolerance.

Default tolerance: exact (0) when the spec has `runtime.deterministic: true` and the run is repeated on
the same device type, since then the same code, data and hardware give the same bits (see the README's
"Determinism"); otherwise per metric kind, `DEFAULT_TOLERANCES`. Timing metrics are never compared.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auxcli.bundle.archive import VerifiedBundle, extract_bundle, verify_bundle
from auxcli.runrecord import RECORD_DIR
from auxcli.bundle.trust import Limits, inside_project
from auxcli.errors import AuxcliError, BundleError, DataError
from auxcli.project import anchored
from auxcli.runfolder import read_history
from auxcli.spec import DataSpec

EXPERIMENT_SUFFIX = "-reproduce"
SUMMARY_SHOWN = ("final_test_acc", "final_test_aux_acc", "best_test_acc")
BUNDLE_DIR = "_bundle"  # where the verified bundle is extracted, inside the runs folder
# Allowed |recorded - reproduced| when bits cannot be expected to match (GPU without determinism, another
# device type): accuracies 1 percentage point, losses 5% of the recorded value, the learning rate 1e-9.
DEFAULT_TOLERANCES: dict[str, tuple[str, float]] = {"acc": ("abs", 0.01), "miou": ("abs", 0.01),
                                                     "loss": ("rel", 0.05), "lr": ("rel", 1e-9),
                                                     "epoch": ("abs", 0.0)}
OTHER_TOLERANCE = ("rel", 0.01)
UNCOMPARED = ("seconds", "per_second", "mlflow_run_id", "spec_name", "seed")  # substrings; and `epoch`


@dataclass(frozen=True)
class Comparison:
    run: str  # name-s<seed>
    metric: str
    epochs: str  # "1-3", or "summary"
    recorded: float
    reproduced: float | None  # None: the reproduced run lacks the metric
    difference: float | None  # the largest |recorded - reproduced| over the compared epochs
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.difference is not None and self.difference <= self.tolerance


@dataclass
class ReproduceResult:
    bundle: VerifiedBundle
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)


def bundle_summary(bundle: VerifiedBundle) -> str:
    """What `--check-only` prints: id, member count, runs with their roles and headline metrics."""
    members = bundle.manifest["members"]
    lines = [f"{bundle.path}: verified, bundle id {bundle.id}",
             f"{len(members)} members, {sum(m['size'] for m in members.values()):,} bytes, "
             f"{len(bundle.runs)} run(s):"]
    for run in bundle.runs:
        extra = [run["role"], f"MLflow run {run.get('mlflow_run_id')}"]
        if run.get("weights"):
            extra.append("with weights")
        if run.get("transfer_source"):
            extra.append(f"transfer from {run['transfer_source']}")
        extra += [f"{k} {v:.4g}" for k, v in (run.get("metrics") or {}).items() if k in SUMMARY_SHOWN]
        lines.append(f"  {run['path']}: " + ", ".join(extra))
    return "\n".join(lines)


def reproduce_bundle(path: Path, *, epochs: int | None = None, tolerance: float | None = None,
                     runs_dir: Path | None = None, allow_data_change: bool = False,
                     echo: Callable[[str], Any] = print, limits: Limits | None = None) -> ReproduceResult:
    import shutil

    from tabulate import tabulate

    from auxcli.runrecord import code_state, environment, runtime_choices
    from auxcli.train.runtime import resolve_runtime

    bundle = verify_bundle(path, limits)
    echo(bundle_summary(bundle))
    # Where the runner will write (relative paths are anchored at the repository root), so that the
    # freshness check below looks at the very folders the re-runs would overwrite.
    runs_dir = anchored(runs_dir or f"reproduce-{bundle.id[:12]}")
    check_fresh(runs_dir, bundle)
    again = _earlier_reproduction(runs_dir, bundle)
    fresh_extraction = not (runs_dir / BUNDLE_DIR).exists()
    extracted = extract_bundle(bundle, runs_dir / BUNDLE_DIR)
    result = ReproduceResult(bundle)
    order = run_order(bundle.runs)
    needed_whole = {r["transfer_source"] for r in order if r.get("transfer_source")
                    and not _has_weights(bundle, r["transfer_source"])}
    try:
        specs = {r["path"]: bundled_spec(extracted, r, bundle, runs_dir) for r in order}
        check_targets(runs_dir, bundle, [(specs[r["path"]], r) for r in order], again)
    except AuxcliError:
        if fresh_extraction:  # leave the runs folder as it was
            shutil.rmtree(extracted, ignore_errors=True)
        raise
    for entry in order:
        for line in ignored_locations(extracted / entry["path"] / "spec.resolved.yaml", specs[entry["path"]]):
            echo(f"{entry['path']}: {line}")
    data_changes = []
    # this machine, read once: the code, the environment per resolved runtime and each data set (a bundle's
    # runs often share them; git, the installed distributions and the data files are slow to read)
    code_now = code_state()[0]
    env_now: dict[str, dict[str, Any]] = {}
    data_now: dict[DataSpec, dict[str, Any]] = {}
    for entry in order:
        spec = specs[entry["path"]]
        runtime = runtime_choices(spec, resolve_runtime(spec.runtime, backbone=spec.model.backbone))
        env_key = json.dumps(runtime, sort_keys=True)
        if env_key not in env_now:
            env_now[env_key] = environment(runtime)
        if spec.data not in data_now:
            data_now[spec.data] = current_data(spec.data)
        lines, data_change = differences(extracted / entry["path"], env_now[env_key], code_now, data_now[spec.data])
        for line in lines:
            echo(line)
        data_changes += [data_change] if data_change else []
    if data_changes and not allow_data_change:
        raise DataError(" ".join(data_changes) + ". The runs would not reproduce the result; restore the recorded "
                        "data or pass --allow-data-change to re-run anyway.")
    for entry in order:
        spec = specs[entry["path"]]
        stop = epochs if entry["path"] not in needed_whole else None
        if epochs is not None and stop is None:
            echo(f"{entry['path']}: trained in full, since a bundled transfer starts from its weights "
                 "and the bundle does not hold them")
        outcome = _run(spec, entry["seed"], stop, extracted / entry["path"])
        result.comparisons += compare_run(f"{entry['name']}-s{entry['seed']}", extracted / entry["path"],
                                          outcome, epochs, tolerance, spec)
    rows = [(c.run, c.metric, c.epochs, _num(c.recorded), _num(c.reproduced), _num(c.difference),
             _num(c.tolerance), "yes" if c.ok else "NO") for c in result.comparisons]
    echo(tabulate(rows, headers=["run", "metric", "epochs", "recorded", "reproduced", "difference", "tolerance",
                                 "within"], disable_numparse=True))
    bad = sum(not c.ok for c in result.comparisons)
    echo(f"{len(result.comparisons) - bad} of {len(result.comparisons)} metrics within tolerance"
         + ("" if bad == 0 else f"; {bad} outside"))
    return result


def check_fresh(runs_dir: Path, bundle: VerifiedBundle) -> None:
    """Re-runs retrain with --force: refuse a runs folder that holds these runs from anything but an
    earlier reproduction of this same bundle, so that no original run is overwritten."""
    if _earlier_reproduction(runs_dir, bundle):
        return
    if (runs_dir / BUNDLE_DIR).exists() or (runs_dir / BUNDLE_DIR).is_symlink():
        raise BundleError(f"{runs_dir}/{BUNDLE_DIR} already exists and is not an extraction of this bundle, "
                          f"which reproducing would replace; pass a fresh --runs-dir.")
    taken = [r["path"] for r in bundle.runs if (runs_dir / r["name"] / f"seed-{r['seed']}").exists()]
    if taken:
        raise BundleError(f"{runs_dir}/ already holds {taken[0].removeprefix('runs/')}, which reproducing would "
                          "overwrite; pass a fresh --runs-dir.")


def _earlier_reproduction(runs_dir: Path, bundle: VerifiedBundle) -> bool:
    from auxcli.bundle.archive import MANIFEST

    earlier = runs_dir / BUNDLE_DIR / MANIFEST
    try:
        return earlier.is_file() and not earlier.is_symlink() and earlier.stat().st_size < (64 << 20) \
            and json.loads(earlier.read_bytes()).get("bundle_id") == bundle.id
    except (OSError, ValueError, AttributeError):
        return False


def check_targets(runs_dir: Path, bundle: VerifiedBundle, specs: list[tuple[Any, dict[str, Any]]],
                  again: bool) -> None:
    """The folders the re-run specs will really write are the ones `check_fresh` looked at, and new (unless
    `again`: this bundle was reproduced into `runs_dir` before)."""
    from auxcli.runfolder import RunFolder

    for spec, entry in specs:
        folder = RunFolder.of(spec, entry["seed"]).root
        if folder != runs_dir / entry["name"] / f"seed-{entry['seed']}":
            raise BundleError(f"{bundle.path}: {entry['path']} would be re-run into {folder}, not into "
                              f"{runs_dir}/; the manifest and its spec disagree")
        if folder.exists() and not again:
            raise BundleError(f"{folder} already exists, which reproducing would overwrite; pass a fresh "
                              "--runs-dir.")


def run_order(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sources before the transfers that start from them; otherwise in manifest order."""
    by_path = {r["path"]: r for r in runs}
    placed: list[dict[str, Any]] = []

    def place(run: dict[str, Any], chain: tuple[str, ...]) -> None:
        if run in placed:
            return
        if run["path"] in chain:
            raise BundleError(f"the bundle's transfer chain is circular at {run['path']}")
        source = by_path.get(run.get("transfer_source") or "")
        if source is not None:
            place(source, chain + (run["path"],))
        placed.append(run)

    for run in runs:
        place(run, ())
    return placed


def bundled_spec(extracted: Path, entry: dict[str, Any], bundle: VerifiedBundle, runs_dir: Path):
    """The recorded spec, sent to `runs_dir` and the `-reproduce` experiment, its transfer re-pointed."""
    from auxcli.specfile import load_spec

    path = extracted / entry["path"] / "spec.resolved.yaml"
    # The bundle's locations are reported, never obeyed: this machine's store, this project's data root.
    overrides = ["tracking.uri=null", *_data_overrides(path, entry)]
    recorded = load_spec(path, overrides)
    overrides += [f"runtime.runs_dir={json.dumps(str(runs_dir))}",
                  f"tracking.experiment={json.dumps(recorded.tracking.experiment + EXPERIMENT_SUFFIX)}"]
    source = entry.get("transfer_source")
    if recorded.transfer is not None and recorded.transfer.from_ != "init":
        if source and _has_weights(bundle, source):
            checkpoint = (extracted / source / "final.pt").resolve()
        elif source:
            name, seed = source.split("/")[1], source.split("/")[2].removeprefix("seed-")
            checkpoint = (runs_dir / name / f"seed-{seed}" / "final.pt").resolve()
        else:
            checkpoint = Path(recorded.transfer.from_)
            if not inside_project(recorded.transfer.from_):
                raise BundleError(f"{entry['path']}: the bundle has no transfer source and names the checkpoint "
                                  f"{checkpoint} outside this project; bundle the source run too.")
            if not checkpoint.is_file():
                raise BundleError(f"{entry['path']}: the bundle has no transfer source and its checkpoint "
                                  f"{checkpoint} is not here; bundle the source run too.")
        overrides.append(f"transfer.from={json.dumps(str(checkpoint))}")
    return load_spec(path, overrides)


def _bundled_data(path: Path) -> dict[str, Any]:
    from auxcli.specfile import read_spec_data

    data, _ = read_spec_data(path)
    return data


def _data_overrides(path: Path, entry: dict[str, Any]) -> list[str]:
    """`data.root` set to the project's default when the bundled one is absolute or leaves the project; a
    mapping file outside the project is refused (it cannot be replaced)."""
    from auxcli.spec import DataSpec

    data = _bundled_data(path).get("data") or {}
    overrides = []
    root = data.get("root")
    if isinstance(root, str) and not inside_project(root):
        overrides.append(f"data.root={json.dumps(DataSpec.model_fields['root'].default)}")
    mapping = data.get("superclasses")
    if isinstance(mapping, str) and not inside_project(mapping):
        raise BundleError(f"{entry['path']}: the bundled data.superclasses {mapping!r} lies outside this project; "
                          "reproducing reads files only inside it. Put the mapping in the project and edit "
                          "nothing in the bundle: re-bundle the run with a relative data.superclasses.")
    return overrides


def ignored_locations(path: Path, spec) -> list[str]:
    """What the bundled spec says about where to write or report that the re-run does not obey."""
    from auxcli.project import anchored as anchor
    from auxcli.tracking import display_uri, resolve_tracking_uri

    bundled = _bundled_data(path)
    lines = []
    uri = (bundled.get("tracking") or {}).get("uri")
    if uri:
        lines.append(f"bundled tracking.uri {display_uri(str(uri))} not used; the re-run is recorded in "
                     f"{display_uri(resolve_tracking_uri(None))}")
    root = (bundled.get("data") or {}).get("root")
    if isinstance(root, str) and root != spec.data.root:
        lines.append(f"bundled data.root {root} not used (outside this project); data read from "
                     f"{anchor(spec.data.root)}")
    return lines


def _has_weights(bundle: VerifiedBundle, member_dir: str) -> bool:
    return f"{member_dir}/final.pt" in bundle.manifest["members"]


def _run(spec, seed: int, stop: int | None, recorded: Path):
    from auxcli.runrecord import Provenance
    from auxcli.train.runner import run_seed

    provenance = Provenance.capture(recorded / "spec.resolved.yaml")
    return run_seed(spec, seed, force=True, provenance=provenance, stop_after_epoch=stop)


# ---------------------------------------------------------------------------------------------- differences

NOT_GIT = "unknown (not a git checkout)"  # a code record's git fields outside a git checkout (None)


def differences(recorded: Path, env_now: dict[str, Any], code_now: dict[str, Any], data_now: dict[str, Any]
                ) -> tuple[list[str], str | None]:
    """Lines saying how this machine (`environment`, `code_state`, `current_data` as of now) differs from
    the recorded environment, code and data, and a sentence naming the data files that differ (None when
    they are as recorded)."""
    record = recorded / RECORD_DIR
    label = recorded.relative_to(recorded.parents[2]).as_posix()
    if not (record / "environment.json").is_file():
        return [f"{label}: no repro/ record (run finished before records existed); differences unknown"], None
    lines = []
    env_then = _record_json(record / "environment.json", label)
    for key in ("python", "os", "machine", "cpu", "gpus", "gpu_driver", "cuda", "cudnn", "torch", "torchvision",
                "threads", "runtime", "determinism"):
        if env_then.get(key) != env_now.get(key):
            lines.append(f"{label}: environment {key}: recorded {env_then.get(key)}, now {env_now.get(key)}")
    then, now = env_then.get("distributions") or {}, env_now.get("distributions", {})
    if not isinstance(then, dict):
        then = {}
    changed = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
    if changed:
        shown = ", ".join(f"{k} {then.get(k, '-')} -> {now.get(k, '-')}" for k in changed[:10])
        lines.append(f"{label}: {len(changed)} installed distribution(s) differ: {shown}"
                     + (" ..." if len(changed) > 10 else ""))
    code_then = _record_json(record / "code.json", label)
    for key in ("git_commit", "git_dirty", "patch_sha256"):
        if code_then.get(key) != code_now.get(key):
            then_, now_ = (NOT_GIT if v is None else v for v in (code_then.get(key), code_now.get(key)))
            lines.append(f"{label}: code {key}: recorded {then_}, now {now_}")
    if code_then.get("package") != code_now.get("package"):
        lines.append(f"{label}: auxcli package: recorded {code_then.get('package')}, now {code_now.get('package')}")
    data_then = _record_json(record / "data.json", label)
    files_then, files_now = data_then.get("files") or {}, data_now.get("files", {})
    if not isinstance(files_then, dict) or not all(isinstance(v, dict) for v in files_then.values()):
        raise BundleError(f"{label}/{RECORD_DIR}/data.json: files is not a mapping of file names to their sha256 "
                          "and size; the bundle's record is damaged")
    differing = sorted(k for k in set(files_then) | set(files_now)
                       if (files_then.get(k) or {}).get("sha256") != (files_now.get(k) or {}).get("sha256"))
    data_change = None
    if differing:
        data_change = (f"{label}: data files differ from the recorded ones in {data_now['folder']}: "
                       + ", ".join(differing))
        lines.append(data_change)
    if not lines:
        lines.append(f"{label}: environment, code and data as recorded")
    return lines, data_change


def _record_json(path: Path, label: str) -> dict[str, Any]:
    """A bundled record file as a JSON object; `BundleError` naming it when it is missing or damaged."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{label}/{RECORD_DIR}/{path.name} is missing from the bundle's record") from None
    except ValueError as exc:
        raise BundleError(f"{label}/{RECORD_DIR}/{path.name} is not valid JSON ({str(exc)[:100]}); the bundle's "
                          "record is damaged") from None
    if not isinstance(data, dict):
        raise BundleError(f"{label}/{RECORD_DIR}/{path.name} is not a JSON object; the bundle's record is damaged")
    return data


def current_data(data: DataSpec) -> dict[str, Any]:
    """The data record of the files here (see `record.data_record`)."""
    from auxcli.runrecord import data_record
    from auxcli.data.load import load_data

    load_data(data)  # generates a synthetic archive, or downloads one, as the run would
    return data_record(data)


# ---------------------------------------------------------------------------------------------- comparing

def compare_run(label: str, recorded: Path, outcome, epochs: int | None, tolerance: float | None,
                spec) -> list[Comparison]:
    then = read_history((recorded / "history.csv").read_text(encoding="utf-8"), recorded / "history.csv")
    now = outcome.folder.read_history()
    if epochs is not None:
        then = then[:epochs]
    if not then:
        raise BundleError(f"{recorded}: the recorded history is empty")
    exact = tolerance is None and exact_expected(recorded, spec)
    comparisons = []
    span = f"1-{len(then)}" if len(then) > 1 else "1"
    for metric in then[-1]:
        if _uncompared(metric):
            continue
        allowed = _tolerance(metric, then[-1][metric], tolerance, exact)
        diffs = []
        for i, row in enumerate(then):
            if metric in row:
                diffs.append(abs(row[metric] - now[i][metric]) if i < len(now) and metric in now[i] else None)
        difference = None if None in diffs else max(diffs)
        reproduced = now[len(then) - 1].get(metric) if len(now) >= len(then) else None
        comparisons.append(Comparison(label, metric, span, then[-1][metric], reproduced, difference, allowed))
    if epochs is None:
        summary_then = json.loads((recorded / "metrics.json").read_text())
        summary_now = outcome.metrics
        for metric, value in sorted(summary_then.items()):
            if _uncompared(metric) or not isinstance(value, int | float):
                continue
            got = summary_now.get(metric)
            comparisons.append(Comparison(label, metric, "summary", float(value), got,
                                          None if got is None else abs(float(value) - got),
                                          _tolerance(metric, float(value), tolerance, exact)))
    return comparisons


def exact_expected(recorded: Path, spec) -> bool:
    """Deterministic spec, and the same device type as recorded."""
    from auxcli.train.runtime import resolve_runtime

    environment = recorded / RECORD_DIR / "environment.json"
    if not spec.runtime.deterministic or not environment.is_file():
        return False
    runtime = _record_json(environment, recorded.name).get("runtime")
    then = runtime.get("device") if isinstance(runtime, dict) else None
    return isinstance(then, str) and then.split(":")[0] == resolve_runtime(spec.runtime).device.type


def _uncompared(metric: str) -> bool:
    return metric == "epoch" or any(part in metric for part in UNCOMPARED)


def _tolerance(metric: str, recorded: float, tolerance: float | None, exact: bool) -> float:
    if tolerance is not None:
        return tolerance
    if exact:
        return 0.0
    kind = next((k for k in DEFAULT_TOLERANCES if metric == k or metric.endswith(f"_{k}")), None)
    how, amount = DEFAULT_TOLERANCES[kind] if kind else OTHER_TOLERANCE
    return amount if how == "abs" else amount * abs(recorded)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
