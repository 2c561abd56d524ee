"""`auxcli pipeline`: the `dvc.yaml` that runs a suite of specs, so `dvc repro` runs the whole study.

`params.yaml` chooses the suite (`suite: mini` runs `specs/mini/`) and holds the overrides applied to
every spec (`seeds`, `train.epochs`, ...; `dvc exp run -S train.epochs=5` edits them). Stages:
- `data`: `auxcli data prepare` downloads/verifies or generates every archive the suite reads; its output
  is the data folder (kept between runs, `persist`), so dvc.lock pins the data's md5 and push/pull move
  it. It depends on the specs, the data code and only the `suite`/`data` keys of params.yaml, so a
  training knob never re-prepares data.
- one stage per spec, in run order: `auxcli run` then `auxcli results`. It depends on its spec file and
  `extends` bases, the auxcli package, the data folder, every key of params.yaml and, for a transfer,
  the source's run folder (which is how DVC orders pretraining before probing and fine-tuning). Outputs:
  the run folder `runs/<name>/` (cached: weights, history, metrics, resolved spec; `last.pt` is in
  `.dvcignore`), and git-tracked `results/metrics/<name>/` (every summary metric per seed) and
  `results/history/<name>/` (what the plots draw), plain outputs rather than DVC metrics: `dvc exp show`
  would print every key of every run side by side. DVC deletes the run folder before re-running a stage,
  so a stage it runs trains afresh without `--force`, and a workspace restored by `dvc pull` has nothing
  to do.
- `summary`, after every spec stage: `auxcli results --summary` writes `results/summary.json` (per spec:
  mean, std and n of its headline metric over its seeds), the only DVC metrics file, so `dvc exp show` and
  `dvc metrics diff` show one narrow column per number, named `<spec name>.mean`.
Top-level `plots:` draw, per table of the study, one chart per history metric that overlays every run of
the table (specs outside the study: per spec), and the study's Figures 2 and 3 (training loss/accuracy of
the fine-tuning runs against training from scratch); all with whole epochs on x (`auxcli.plottemplate`).
"""

from __future__ import annotations

import io
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from ruamel.yaml import YAML

from auxcli.errors import Problem, SpecError
from auxcli.plan import plan_order
from auxcli.plottemplate import EPOCH_TEMPLATE
from auxcli.results import RESULTS_DIR, history_dir, metrics_dir, summary_path
from auxcli.spec import Spec

SUITES_DIR = "specs"
DEFAULT_SUITE = "mini"
DATA_PARAMS: tuple[str, ...] = ("suite", "data")  # the params.yaml keys the data stage reads
SUMMARY_STAGE = "summary"


def read_params(params_file: str | Path) -> dict:
    """params.yaml as a plain mapping ({} when absent or empty)."""
    path = Path(params_file)
    if not path.is_file():
        return {}
    from auxcli.safeyaml import parse_yaml, plain, read_text_file

    allowed = "a YAML mapping of spec keys"
    doc = plain(parse_yaml(read_text_file(path, "params file", allowed), str(path), allowed))
    if doc is not None and not isinstance(doc, dict):
        raise SpecError([Problem(str(path), 1, 1, "", "a params file must be a mapping", "keys of the spec")])
    return doc or {}


def suite_folder(params_file: str | Path) -> Path:
    """`specs/<suite>` for the params file's `suite` (default mini); `SpecError` when that folder is missing."""
    suite = str(read_params(params_file).get("suite", DEFAULT_SUITE))
    folder = Path(SUITES_DIR) / suite
    if not folder.is_dir():
        known = sorted(p.name for p in Path(SUITES_DIR).iterdir() if p.is_dir()) if Path(SUITES_DIR).is_dir() else []
        raise SpecError([Problem(str(params_file), None, None, "suite", f"no spec folder {folder}/ for suite {suite!r}",
                                 ", ".join(known) or "a folder of specs under specs/")])
    return folder


def check_suite(params_file: str | Path, expected: str) -> None:
    """Raise `SpecError` unless params.yaml's `suite` is the one dvc.yaml was generated for."""
    suite = read_params(params_file).get("suite", DEFAULT_SUITE)
    if str(suite) != expected:
        raise SpecError([Problem(str(params_file), None, None, "suite",
                                 f"dvc.yaml runs suite {expected!r} but params.yaml asks for {suite!r}; run "
                                 "`auxcli pipeline` to regenerate dvc.yaml for it, then `dvc repro`",
                                 f"{expected}, or a regenerated dvc.yaml")])


# Run-folder files DVC should not cache: resume state (2x the weights) and atomic-write temporaries.
DVCIGNORE_LINES: tuple[str, ...] = ("last.pt", ".*.tmp", ".lock")


def ensure_dvcignore(path: Path = Path(".dvcignore")) -> None:
    """Add `DVCIGNORE_LINES` to .dvcignore (when the project uses DVC) unless they are there."""
    if not path.exists() and not Path(".dvc").is_dir():
        return
    lines = path.read_text().splitlines() if path.exists() else []
    missing = [line for line in DVCIGNORE_LINES if line not in lines]
    if missing:
        path.write_text("\n".join([*lines, "# auxcli run folders: resume state and temporaries", *missing]) + "\n")


def _bases(spec_file: Path) -> list[Path]:
    """The spec's `extends` files, recursively (they are dependencies too)."""
    from auxcli.safeyaml import parse_yaml, plain, read_text_file

    allowed = "a UTF-8 YAML mapping"
    doc = plain(parse_yaml(read_text_file(spec_file, "spec file", allowed), str(spec_file), allowed)) or {}
    named = doc.get("extends") or []
    found: list[Path] = []
    for base in [named] if isinstance(named, str) else named:
        path = spec_file.parent / base
        found += [path, *_bases(path)]
    return found


def _relative(path: str | Path) -> str | None:
    """`path` relative to the current directory (the repository root), or None when it lies outside."""
    rel = os.path.relpath(Path(path).resolve(), Path.cwd().resolve())
    return None if rel.startswith("..") else Path(rel).as_posix()


def _mapping_dep(spec: Spec) -> list[str]:
    """An image folder's superclass mapping (`data.superclasses`), which lies outside its data root."""
    from auxcli.project import anchored

    path = _relative(anchored(spec.data.superclasses)) if spec.data.superclasses else None
    return [path] if path else []


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def pipeline_stages(specs: list[tuple[Path, Spec]], *, params_file: str = "params.yaml",
                    package: str = "auxcli", suite: str | None = None, overrides: Sequence[str] = ()) -> dict:
    """The `stages:` mapping of dvc.yaml for these specs: `data`, then one stage per spec in run order.
    `overrides` (`auxcli pipeline --set`) go onto every stage's command after `--params`, so every stage
    resolves the specs exactly as they were resolved here."""
    from auxcli.project import anchored

    by_name = {spec.name: spec for _, spec in specs}
    files = {spec.name: path for path, spec in specs}
    spec_deps = {name: _unique([path.as_posix(), *(b.as_posix() for b in _bases(path))])
                 for name, path in files.items()}
    code = [package] if Path(package).is_dir() else []  # the code, when run from a checkout
    data_roots = _unique([r for _, s in specs if (r := _relative(anchored(s.data.root))) is not None])
    q = shlex.quote  # every path on a command line: one argument, never shell code (issue 9)
    spec_args = " ".join(q(a) for a in sorted({p.parent.as_posix() if suite else p.as_posix() for p in files.values()}))
    present = read_params(params_file)
    params = f"--params {q(params_file)}" + "".join(f" --set {q(o)}" for o in overrides)
    stages: dict[str, dict] = {}
    stages["data"] = {
        "cmd": f"auxcli data prepare {spec_args} {params}" + (f" --suite {q(suite)}" if suite else ""),
        "deps": _unique([d for name in files for d in spec_deps[name]])
        + ([f"{package}/data"] if code else []),
        **({"params": [{params_file: [k for k in DATA_PARAMS if k in present]}]}
           if any(k in present for k in DATA_PARAMS) else {}),
        "outs": [{root: {"persist": True}} for root in data_roots],
    }
    for spec in plan_order([spec for _, spec in specs]):
        path = files[spec.name].as_posix()
        source = by_name.get(spec.transfer.from_) if spec.transfer else None
        own_data = _relative(anchored(spec.data.root))
        stages[spec.name] = {
            # quoted: a file name with a space or `$(...)` is one argument, never shell code (issue 9)
            "cmd": f"auxcli run {q(path)} {params} && auxcli results {q(path)} {params}",
            "deps": [*spec_deps[spec.name], *code, *([own_data] if own_data else []), *_mapping_dep(spec),
                     *([_source_dep(source)] if source is not None else [])],
            "params": [{params_file: None}],
            # git-tracked results; plain outputs, not DVC metrics: `dvc exp show` would print every key of
            # every run side by side (the `summary` stage's file is what it shows)
            "outs": ([_run_dir(spec)] if _run_dir(spec) else [])
            + [{history_dir(Path(RESULTS_DIR), spec.name).as_posix(): {"cache": False}},
               {metrics_dir(Path(RESULTS_DIR), spec.name).as_posix(): {"cache": False}}],
        }
    stages[SUMMARY_STAGE] = {
        "cmd": f"auxcli results {spec_args} {params} --summary",
        "deps": [*code, *(metrics_dir(Path(RESULTS_DIR), name).as_posix() for name in stages if name in files)],
        "params": [{params_file: None}],  # `seeds` picks the per-run files it reads
        "metrics": [{summary_path(Path(RESULTS_DIR)).as_posix(): {"cache": False}}],
    }
    return stages


def _run_dir(spec: Spec) -> str | None:
    """The spec's run folder `runs/<name>` relative to the repository (None when runs_dir lies outside)."""
    from auxcli.project import anchored

    runs = _relative(anchored(spec.runtime.runs_dir))
    return f"{runs}/{spec.name}" if runs else None


def _source_dep(source: Spec) -> str:
    """What a transfer waits for: the source's run folder (its weights), or its git-tracked history when the
    run folders lie outside the repository (DVC still orders the stages by it)."""
    return _run_dir(source) or history_dir(Path(RESULTS_DIR), source.name).as_posix()


def pipeline_plots(specs: list[Spec]) -> list[dict]:
    """Top-level `plots:`: per table of the study (specs outside it: per spec), one chart per history metric
    that overlays every seed of every spec in it; and Figures 2-3. The x axis is whole epochs."""
    from auxcli.report.paper import FIGURES, TABLES, match_key

    def history(spec: Spec, seed: int) -> str:
        return (history_dir(Path(RESULTS_DIR), spec.name) / f"seed-{seed}.csv").as_posix()

    plots: list[dict] = []
    for group, title, members in _plot_groups(plan_order(specs), TABLES, match_key):
        metrics = _unique([m for spec in members for fields in _history_fields(spec).values() for m in fields])
        for metric in metrics:
            y = {history(spec, seed): metric for spec in members if metric in _fields(spec) for seed in spec.seeds}
            plots.append({f"{group} {metric}": {"x": "epoch", "y": y, "template": EPOCH_TEMPLATE,
                                                "x_label": "epoch", "y_label": metric,
                                                "title": f"{title}: {metric} per epoch"}})
    by_key = {m[1]: s for s in specs if (m := match_key(s.name))}
    for figure in FIGURES:
        keys = [key for key, _ in figure.curves] + [figure.baseline[0]]
        y = {history(by_key[k], seed): figure.metric for k in keys if k in by_key for seed in by_key[k].seeds}
        if len(y) > 1:
            plots.append({figure.id: {"x": "epoch", "y": y, "template": EPOCH_TEMPLATE, "x_label": "epoch",
                                      "y_label": figure.ylabel,
                                      "title": f"{figure.title} (vs {figure.baseline[0]} from scratch)"}})
    return plots


def _plot_groups(specs: list[Spec], tables, match_key) -> list[tuple[str, str, list[Spec]]]:
    """(plot id prefix, title, specs) per table of the study that the specs fill (`mini-table2` for suite
    mini; a table needs a row of its own), in table order, then one group per spec outside the study."""
    groups: list[tuple[str, str, list[Spec]]] = []
    matched = {spec.name: m for spec in specs if (m := match_key(spec.name))}
    suites = _unique([suite for suite, _ in matched.values()])
    for suite in suites:
        for table in tables:
            members = [s for row in table.rows for s in specs if matched.get(s.name) == (suite, row.key)]
            # a table only of rows another table owns (Table 2's gt row is table1-gt) would repeat that chart
            if any(matched[s.name][1].startswith(table.id + "-") for s in members):
                group = f"{suite}-{table.id}" if suite else table.id
                groups.append((group, table.title.split(":")[0] + (f" ({suite})" if suite else ""), members))
    groups += [(spec.name, spec.name, [spec]) for spec in specs if spec.name not in matched]
    return groups


def _fields(spec: Spec) -> list[str]:
    return [m for fields in _history_fields(spec).values() for m in fields]


def _history_fields(spec: Spec) -> dict[str, list[str]]:
    """history.csv columns per chart (auxcli.train.metrics): main head, plus the auxiliary head if any;
    `train_loss` is the whole objective, the test losses are per head."""
    main = spec.task.labels != "none"
    aux = spec.task.aux is not None
    return {
        "accuracy": [*(["train_acc", "test_acc"] if main else []), *(["train_aux_acc", "test_aux_acc"] if aux else [])],
        "loss": ["train_loss", *(["test_loss"] if main else []), *(["test_aux_loss"] if aux else [])],
    }


def dvc_yaml(specs: list[tuple[Path, Spec]], *, params_file: str = "params.yaml", suite: str | None = None,
             overrides: Sequence[str] = ()) -> str:
    out = io.StringIO()
    yaml = YAML(typ="rt", pure=True)
    yaml.default_flow_style = False
    yaml.width = 200
    made_for = f" for suite {suite!r} (params.yaml: suite)" if suite else ""
    out.write(f"# Generated by `auxcli pipeline`{made_for}; regenerate after adding or renaming specs.\n")
    yaml.dump({"stages": pipeline_stages(specs, params_file=params_file, suite=suite, overrides=overrides),
               "plots": pipeline_plots([spec for _, spec in specs])}, out)
    return out.getvalue()


def pipeline_params_file() -> Path | None:
    """The params file this workspace's `dvc.yaml` runs its stages with (`--params <file>` in a stage
    command), when both exist; None outside such a project or when dvc.yaml cannot be read."""
    from auxcli.errors import AuxcliError
    from auxcli.project import workspace_root
    from auxcli.safeyaml import read_yaml_file

    root = workspace_root() or Path.cwd()
    dvc_file = root / "dvc.yaml"
    if not dvc_file.is_file():
        return None
    try:  # a broken dvc.yaml is DVC's to report: this only looks for a hint
        stages = read_yaml_file(dvc_file, "DVC pipeline", "a dvc.yaml file").get("stages") or {}
    except (AuxcliError, AttributeError):
        return None
    for name in dict.fromkeys(_params_arguments(stages)):
        if (root / name).is_file():
            return root / name
    return None


def _params_arguments(stages: object) -> list[str]:
    """The values of `--params FILE` / `--params=FILE` in the stages' commands (a string or a list each)."""
    import shlex

    found = []
    for stage in stages.values() if isinstance(stages, dict) else []:
        commands = stage.get("cmd") if isinstance(stage, dict) else None
        for command in [commands] if isinstance(commands, str) else commands or []:
            try:
                words = shlex.split(str(command))
            except ValueError:  # an unclosed quote: DVC will say so when it runs the stage
                continue
            for word, following in zip(words, [*words[1:], ""]):
                if word == "--params" and following:
                    found.append(following)
                elif word.startswith("--params="):
                    found.append(word.removeprefix("--params="))
    return found


def unused_params_note(files: list[Path], overrides: list[str], params_given: bool) -> str | None:
    """One line for a command run without --params in a project whose dvc.yaml runs with a params file that
    would change these specs' results: which specs and fields, and the flag that gives the pipeline's view."""
    if params_given:
        return None
    params = pipeline_params_file()
    if params is None:
        return None
    from auxcli.identity import identity_fields, result_id
    from auxcli.specfile import load_spec, params_overrides
    from auxcli.staleness import field_diff

    try:
        with_params = params_overrides(params)
        changed: list[str] = []
        fields: list[str] = []
        for file in files:
            alone, piped = load_spec(file, overrides), load_spec(file, [*with_params, *overrides])
            if result_id(alone) != result_id(piped):
                changed.append(alone.name)
                fields += field_diff(identity_fields(alone.to_plain()), identity_fields(piped.to_plain()))
    except SpecError:
        return None  # the command itself reports bad specs; a bad params file is `dvc repro`'s to report
    if not changed:
        return None
    shown = ", ".join(dict.fromkeys(fields[:4])) + (" ..." if len(fields) > 4 else "")
    names = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return (f"note: dvc.yaml runs these specs with --params {params.name}, which changes {names} ({shown}); "
            f"without it these are other settings than the pipeline's results. Add --params {params.name} "
            "to see the pipeline's view.")
