"""The `auxcli` command line: thin commands that parse, load the spec and call one function.

Errors are `AuxcliError`s raised below; `_Group.invoke` turns them into one paragraph on stderr and the
error's exit code, so no command handles errors itself. Heavy imports (torch, mlflow) happen inside the
commands, which keeps `auxcli validate` and `--help` fast.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import click
import typer
import typer.exceptions
from typer.core import TyperGroup

from auxcli.errors import AuxcliError, SpecError, describe_unexpected


class _Group(TyperGroup):
    def make_context(self, info_name, args, parent=None, **extra):
        if parent is None:  # the top-level command line, as typed: runs record it (auxcli.lineage)
            import os
            import shlex

            os.environ["AUXCLI_COMMAND"] = shlex.join(["auxcli", *args])
        return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AuxcliError as exc:
            if not getattr(exc, "quiet", False):  # quiet: another torchrun rank prints the same error
                from auxcli.credentials import mask_passwords

                typer.echo(mask_passwords(str(exc)), err=True)
            raise typer.Exit(exc.exit_code) from None
        except _CLI_EXCEPTIONS:  # usage errors, --help, Ctrl-C: the CLI framework reports them
            raise
        except Exception as exc:  # OSError (full disk, read-only folder), a broken MLflow store, a bug
            if _debug_enabled():
                raise
            from auxcli.credentials import mask_passwords

            message, code = describe_unexpected(exc)
            typer.echo(mask_passwords(message), err=True)
            raise typer.Exit(code) from None


_DEBUG = {"on": False}
# typer vendors click (typer._click) in recent releases; its exceptions derive from TyperException.
_CLI_EXCEPTIONS = (typer.Exit, typer.Abort, typer.exceptions.TyperException, click.exceptions.ClickException,
                   click.exceptions.Abort, click.exceptions.Exit, KeyboardInterrupt)


def _debug_enabled() -> bool:
    return _DEBUG["on"] or os.environ.get("AUXCLI_DEBUG", "") not in ("", "0")


HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=True, context_settings=HELP_OPTIONS,
                  help="Declarative image-classification experiments with auxiliary tasks.")
data_app = typer.Typer(cls=_Group, no_args_is_help=True, context_settings=HELP_OPTIONS,
                       help="Create and check data sets.")
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"auxcli {version('auxcli')}")
        except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
            from auxcli import __version__

            typer.echo(f"auxcli {__version__}")
        raise typer.Exit()


@app.callback()
def _common(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="Say more: -v details, -vv debug logs.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and results: no progress.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Print the traceback of an unexpected error (also AUXCLI_DEBUG=1).")] = False,
) -> None:
    """Declarative image-classification experiments with auxiliary tasks."""
    from auxcli.console import set_verbosity

    _DEBUG["on"] = debug
    set_verbosity(-1 if quiet else verbose)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override a spec field, e.g. train.lr=0.05 (dvc exp run -S syntax)."),
]
SpecPaths = Annotated[list[Path], typer.Argument(help="Spec files or directories of specs.")]
ParamsOption = Annotated[Path | None, typer.Option(
    help="A YAML mapping of overrides applied to every spec before --set (DVC's params.yaml).")]


def _overrides(params: Path | None, set_: list[str] | None) -> list[str]:
    """--params' leaves, then --set: the order a run, `show` and `plan` apply them in."""
    from auxcli.specfile import params_overrides

    return (params_overrides(params) if params else []) + (set_ or [])


def _note_pipeline_params(files: list[Path], overrides: list[str], params: Path | None) -> None:
    """One line on stderr when this project's dvc.yaml runs the specs with a params file that this command
    was not given and that would change their results (`auxcli.pipeline.unused_params_note`)."""
    from auxcli.pipeline import unused_params_note

    note = unused_params_note(files, overrides, params is not None)
    if note:
        typer.echo(note, err=True)


@app.command()
def validate(paths: SpecPaths, set_: SetOption = None) -> None:
    """Validate specs: `ok` per file, or one line per problem (exit code 2)."""
    from auxcli.sweep import load_grid

    files = _spec_files(paths)
    failed = False
    for file in files:
        try:
            load_grid([file], set_ or ())  # every point of a sweep
            typer.echo(f"ok {file}")
        except SpecError as exc:
            failed = True
            typer.echo(str(exc), err=True)
    if failed:
        raise typer.Exit(2)


@app.command()
def schema(out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None) -> None:
    """Print the spec's JSON Schema (draft-07), for editor completion."""
    from auxcli.runfolder import atomic_write_text
    from auxcli.schema import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
        typer.echo(f"wrote {out}")


@app.command()
def show(
    paths: SpecPaths,
    set_: SetOption = None,
    params: ParamsOption = None,
) -> None:
    """Print each spec as resolved (bases merged, overrides and defaults applied): what a run records.

    Like LightningCLI's --print_config or Hydra's --cfg job; several specs or sweep points are separate \
YAML documents.
    """
    from auxcli.specfile import dump_spec
    from auxcli.sweep import load_grid

    overrides = _overrides(params, set_)
    _, loaded = load_grid(_spec_files(paths), overrides)
    typer.echo("---\n".join(f"# {item.file}\n{dump_spec(item.spec)}" for item in loaded), nl=False)


# ---------------------------------------------------------------------------------------------- plan

@app.command()
def plan(
    paths: SpecPaths,
    set_: SetOption = None,
    params: ParamsOption = None,
    estimate: Annotated[bool, typer.Option(
        "--estimate", help="Also estimate each run's and the suite's wall time here (a short benchmark per "
        "model, cached per machine).")] = False,
    remeasure: Annotated[bool, typer.Option("--remeasure", help="With --estimate: ignore cached rates.")] = False,
    cache: Annotated[Path | None, typer.Option(
        help="With --estimate: the rate cache (default ~/.cache/auxcli/throughput.json).")] = None,
) -> None:
    """Print the run order (transfers after their sources) and each seed's status: done, incomplete (trained,
    not fully recorded: a re-run repairs it), stale (another spec's result: --force), partial, todo."""
    from auxcli.plan import plan_table, run_statuses
    from auxcli.catalogue import STATES
    from auxcli.sweep import load_grid

    files, overrides = _spec_files(paths), _overrides(params, set_)
    grid, loaded = load_grid(files, overrides)
    if grid.axes:
        typer.echo(grid.describe())
    _note_pipeline_params(files, overrides, params)
    specs = [item.spec for item in loaded]
    by_run = run_statuses(specs)
    from auxcli.launch.cluster import plan_slurm_column

    shown, failures = plan_slurm_column(specs, by_run)  # a submitted seed's Slurm state too: todo/pending
    typer.echo(plan_table(specs, shown, sources=[str(item.file) for item in loaded]))
    for line in failures:
        typer.echo(line)
    statuses = list(by_run.values())
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in STATES
                       if s in ("done", "partial", "todo") or statuses.count(s))
    typer.echo(f"{len(specs)} specs, {len(statuses)} runs: {counts}")
    if estimate:
        from auxcli.estimate import RateCache, default_cache_path, estimate_runs, estimate_table

        rates = RateCache(cache or default_cache_path())
        if remeasure:
            rates.rates.clear()
        runs = estimate_runs(specs, cache=rates, on_measure=lambda name: typer.echo(f"measuring {name} ...", err=True))
        typer.echo("\n" + estimate_table(runs, "this machine"))


class Executor(str, Enum):
    local = "local"
    slurm = "slurm"


@app.command()
def run(
    paths: SpecPaths,
    set_: SetOption = None,
    seed: Annotated[int | None, typer.Option(min=0, max=2**32 - 1,
                                             help="Run only this seed (default: the spec's seeds).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from last.pt (also automatic when it exists).")] = False,
    force: Annotated[bool, typer.Option(help="Retrain runs that already finished.")] = False,
    params: ParamsOption = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would run, where it would write and why (todo, done, stale, partial); "
        "train nothing.")] = False,
    concurrent: Annotated[int, typer.Option(
        min=1, help="Train up to K runs (seeds, specs or sweep points) at once on the device, one process each.")] = 1,
    nproc: Annotated[int | None, typer.Option(min=1, help=(
        "Train each run with N processes (torchrun, DistributedDataParallel; gloo on CPU, one GPU per "
        "process on CUDA), on this machine or, with --executor slurm, inside each job. Same as, per run: "
        "torchrun --standalone --nproc-per-node N -m auxcli run SPEC --seed S ..."))] = None,
    executor: Annotated[Executor, typer.Option(
        help="Where runs train: local (this machine), or slurm (one Slurm job per spec and seed, submitted "
        "with submitit; transfers wait for their sources).")] = Executor.local,
    launcher: Annotated[Path | None, typer.Option(
        help="With --executor slurm: a YAML file of Slurm resources (hydra-submitit-launcher's keys: "
        "partition, account, qos, gpus_per_node, tasks_per_node, cpus_per_task, mem_gb, timeout_min, "
        "constraint, additional_parameters, ...).")] = None,
    slurm: Annotated[list[str] | None, typer.Option(
        "--slurm", help="With --executor slurm: one launcher key=value, e.g. --slurm partition=gpu "
        "(after --launcher's).")] = None,
) -> None:
    """Train every seed of each spec; several specs run in dependency order (transfers after sources).

    `--set key=a,b` sweeps: one spec per value, named <name>-<key><value>; two swept keys make a grid. \
A list in brackets (`--set seeds=[0,1]`) is one value.
    """
    files = _spec_files(paths)
    overrides = _overrides(params, set_)
    if dry_run:
        from auxcli.dryrun import dry_run as plan_seeds, format_dry_run
        from auxcli.plan import plan_order
        from auxcli.sweep import load_grid

        grid, loaded = load_grid(files, overrides)
        specs = plan_order([item.spec for item in loaded], sources=[str(item.file) for item in loaded])
        if grid.axes:
            typer.echo(grid.describe())
        _note_pipeline_params(files, overrides, params)
        plans = plan_seeds(specs, seeds=[seed] if seed is not None else None, force=force)
        typer.echo(format_dry_run(plans), nl=False)
        if any(p.refused for p in plans):  # `auxcli run` would refuse: say so in the exit code too
            raise typer.Exit(2)
        return
    from auxcli.launch.jobs import plan_jobs
    from auxcli.train.distributed import process_group

    chosen = _executor(executor, concurrent=concurrent, nproc=nproc, launcher=launcher, slurm=slurm)
    with process_group() as ranks:  # under torchrun (the in-process path of each worker): join the job
        with ranks.agree():  # a bad spec is the same error on every rank, printed once
            jobs = plan_jobs(files, overrides, seed)  # order, states, dependencies, command lines: once
            if ranks.is_main:
                _note_pipeline_params(files, overrides, params)
        handles = chosen.submit(jobs, resume=resume, force=force)
    report = chosen.report(handles)
    if report:
        typer.echo(report)
    if chosen.exit_code:
        raise typer.Exit(chosen.exit_code)


def _executor(executor: Executor, *, concurrent: int, nproc: int | None, launcher: Path | None,
              slurm: list[str] | None):
    """The `auxcli.launch.executors` backend the flags of `auxcli run` ask for; contradictory flags are
    refused before anything is loaded or started."""
    from auxcli.errors import LaunchError
    from auxcli.launch.executors import pick
    from auxcli.train.distributed import launched_by_torchrun

    starts_processes = [flag for flag, given in (("--executor slurm", executor == Executor.slurm),
                                                 ("--concurrent", concurrent > 1), ("--nproc", nproc is not None))
                        if given]
    if starts_processes and launched_by_torchrun():
        raise LaunchError(f"this auxcli run is one of torchrun's processes, and {', '.join(starts_processes)} "
                          "starts processes of its own: every worker would start them again. Drop it (torchrun's "
                          "--nproc-per-node sets the processes), or run `auxcli run --nproc N` without torchrun.")
    if executor == Executor.slurm:
        from auxcli.launch.settings import load_settings

        if concurrent > 1:
            raise LaunchError("--concurrent K starts local processes; --executor slurm already runs one Slurm job "
                              "per spec and seed, as many at once as the cluster allows. Drop --concurrent.")
        return pick(nproc=nproc, slurm=load_settings(launcher, slurm or []))
    if launcher is not None or slurm:
        raise LaunchError("--launcher and --slurm set the resources of Slurm jobs; add --executor slurm, or drop "
                          "them to train on this machine.")
    if concurrent > 1 and nproc is not None:
        raise typer.BadParameter("--concurrent runs one process per run; it cannot be combined with --nproc")
    return pick(concurrent=concurrent, nproc=nproc)


@app.command()
def cancel(
    paths: SpecPaths,
    set_: SetOption = None,
    seed: Annotated[int | None, typer.Option(min=0, max=2**32 - 1, help="Only this seed's job.")] = None,
    params: ParamsOption = None,
) -> None:
    """Cancel the queued Slurm jobs (pending or running) of these specs' runs (`auxcli run --executor slurm`)."""
    from auxcli.launch.cluster import cancel_suite

    cancelled = cancel_suite(_spec_files(paths), _overrides(params, set_), seed)
    for job, job_id in cancelled:
        typer.echo(f"{job.label}: cancelled Slurm job {job_id}")
    typer.echo(f"{len(cancelled)} job{'s' * (len(cancelled) != 1)} cancelled")


# ---------------------------------------------------------------------------------------------- models

@app.command()
def models(
    backbone: Annotated[str | None, typer.Option(help="Only this backbone (resnet, pyramidnet, linear, wrn).")] = None,
    depth: Annotated[int | None, typer.Option(help="Depth 6n+2 (8, 14, ..., 110); wrn: 6n+4 (10, ..., 28).")] = None,
    alpha: Annotated[float | None, typer.Option(help="PyramidNet widening factor (270 in the study).")] = None,
    classes: Annotated[int, typer.Option(min=1, help="Classes of the classifier head.")] = 100,
    widen_factor: Annotated[int | None, typer.Option(help="Wide ResNet widening factor k (10 in WRN-28-10).")] = None,
) -> None:
    """List backbones: parameters (with a CLASSES-way head), feature width, forward GFLOPs per image."""
    from tabulate import tabulate

    from auxcli.models.registry import describe_backbones

    rows = describe_backbones(backbone=backbone, depth=depth, alpha=alpha, classes=classes,
                              widen_factor=widen_factor)
    typer.echo(tabulate(rows, headers="keys", intfmt=",", floatfmt=("", "", "g", "", "", ".4f"), missingval="-"))
    typer.echo("gflops: forward FLOPs of one 32x32 image / 1e9 (convs and FC layers, multiply-add = 2 FLOPs)")


# ---------------------------------------------------------------------------------------------- data

@data_app.command("synth")
def data_synth(
    root: Annotated[Path, typer.Option(help="Folder to write cifar-100-python/ into.")],
    images_per_class: Annotated[int, typer.Option(min=1, help="Training images per class.")] = 20,
    test_images_per_class: Annotated[int, typer.Option(min=1, help="Test images per class.")] = 5,
    seed: Annotated[int, typer.Option(min=0, help="Fixes every pixel; same seed, same files.")] = 0,
) -> None:
    """Write a deterministic synthetic CIFAR-100-format archive (100 classes in 20 superclasses)."""
    from auxcli.data.synthetic import CLASS_NAMES, SUPERCLASS_NAMES, synthesize_cifar100

    folder = synthesize_cifar100(root, train_per_class=images_per_class, test_per_class=test_images_per_class,
                                 seed=seed)
    typer.echo(f"{folder.resolve()}: {images_per_class * len(CLASS_NAMES)} train and "
               f"{test_images_per_class * len(CLASS_NAMES)} test images, {len(CLASS_NAMES)} classes in "
               f"{len(SUPERCLASS_NAMES)} superclasses (seed {seed})")


@data_app.command("verify")
def data_verify(
    root: Annotated[Path, typer.Option(help="Folder that holds cifar-100-python/.")],
    dataset: Annotated[str, typer.Option(help="auto | cifar100 (official md5s) | synthetic (manifest md5s).")]
    = "auto",
) -> None:
    """Check every archive file's md5 and print counts and label-set sizes (exit code 2 on a failure)."""
    from auxcli.data.verify import format_report, verify_data
    from auxcli.errors import DataError

    report = verify_data(root, dataset)
    typer.echo(format_report(report))
    if not report.ok:
        raise DataError(report.failure())

@data_app.command("prepare")
def data_prepare(
    paths: SpecPaths,
    set_: SetOption = None,
    params: ParamsOption = None,
    suite: Annotated[str | None, typer.Option(
        help="Fail unless the params file's `suite` is this one (dvc.yaml passes the suite it was made for).")]
    = None,
) -> None:
    """Download and verify (CIFAR-100/10) or generate (synthetic) every archive the specs read.

    The DVC pipeline's `data` stage: its output, the data folder, is pinned in dvc.lock and moved by dvc push/pull.
    """
    from auxcli.data.prepare import format_prepared, prepare_data
    from auxcli.pipeline import check_suite
    from auxcli.project import workspace_root
    from auxcli.specfile import load_spec

    if suite is not None and params is not None:
        check_suite(params, suite)
    overrides = _overrides(params, set_)
    specs = [load_spec(f, overrides) for f in _spec_files(paths)]
    typer.echo(format_prepared(prepare_data([s.data for s in specs]), workspace_root()))


# ---------------------------------------------------------------------------------------------- report, ui

class ReportFormat(str, Enum):
    text = "text"
    github = "github"
    latex = "latex"
    csv = "csv"
    json = "json"


TrackingUriOption = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow store (default: the specs' tracking.uri, MLFLOW_TRACKING_URI, "
    "else sqlite:///./mlflow.db).")]


@app.command()
def report(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Only these specs (files or folders); their file stems pick the study rows.")] = None,
    tracking_uri: TrackingUriOption = None,
    experiment: Annotated[str | None, typer.Option(
        help="MLflow experiment (default: the specs' tracking.experiment, else auxcli).")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.")] = ReportFormat.text,
    out: Annotated[Path | None, typer.Option(
        help="Write report.<ext> (and the plots) into this folder instead of printing.")] = None,
    plots: Annotated[bool, typer.Option(
        "--plots", help="Also draw PNGs (Figures 2-3, test accuracy per epoch per table).")] = False,
    set_: SetOption = None,
    params: ParamsOption = None,
    all_settings: Annotated[bool, typer.Option(
        "--all-settings", help="List the runs of other settings (another result identity) that are not shown.")]
    = False,
) -> None:
    """The study's Tables 1-5 from the MLflow store: ours (mean ± sample std over seeds, n) beside the paper.

    Only FINISHED runs count, the latest per (spec, seed), and only results whose identity is the reported \
spec's (as resolved with --params and --set; without specs, the identity of this workspace's run folders); \
the others are counted in the footer. \
A row without runs shows `-` and the `auxcli run` command that fills it; specs outside the study get \
one generic row each. Text and latex show %, csv and json fractions.

    --plots writes PNGs to --out (default reports/) and logs them, with report.json, to a new MLflow run \
named `auxcli-report` tagged `auxcli.report=true` in the experiment `<experiment>-reports`, out of the \
training runs' charts.
    """
    from auxcli.report import make_report
    from auxcli.signals import stop_on_signals

    overrides = _overrides(params, set_)
    if paths:
        _note_pipeline_params(_spec_files(paths), overrides, params)
    with stop_on_signals("an open report run is marked KILLED; re-run the command."):
        result = make_report(paths=paths or (), overrides=overrides, tracking_uri=tracking_uri,
                             experiment=experiment, fmt=fmt.value, out=out, plots=plots, all_settings=all_settings)
    if out is None:
        typer.echo(result.text, nl=False)
    for path in result.written:
        typer.echo(f"wrote {path}", err=True)
    if result.report_run_id:
        typer.echo(f"logged the figures to MLflow run {result.report_run_id} (auxcli-report)", err=True)


@app.command()
def ui(
    tracking_uri: TrackingUriOption = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 5000,
    host: Annotated[str, typer.Option(
        help="Interface to bind; 127.0.0.1 keeps the UI local to this machine.")] = "127.0.0.1",
    experiment: Annotated[str, typer.Option(help="The experiment to link to (specs' tracking.experiment).")]
    = "auxcli",
) -> None:
    """Start the MLflow UI (`mlflow server`) on the runs' store and print a link to the experiment's runs;
    Ctrl-C stops it. For a tracking server (http://...), print the link to its own UI and start nothing."""
    from auxcli.tracking import display_uri, resolve_tracking_uri
    from auxcli.ui import experiment_link, exposure_warning, is_server, serve_ui, server_link

    uri = resolve_tracking_uri(tracking_uri)
    if is_server(uri):
        link = server_link(uri, experiment)
        typer.echo(f"{display_uri(uri)} is a tracking server with its own UI: nothing to start.")
        typer.echo(f"runs of experiment {experiment!r}: {link}" if link else
                   f"no experiment {experiment!r} there yet; open {uri}")
        return
    warning = exposure_warning(host, port)
    if warning:
        typer.echo(warning, err=True)

    def ready(url: str) -> None:
        typer.echo(f"MLflow UI for {uri} at {url} (Ctrl-C to stop)")
        link = experiment_link(uri, experiment, url)
        typer.echo(f"runs of experiment {experiment!r}: {link}" if link else f"no experiment {experiment!r} yet")

    serve_ui(uri, host, port, on_ready=ready)
    typer.echo("stopped")


@app.command()
def migrate(
    to: Annotated[str, typer.Option("--to", help="The store to move the runs to, e.g. http://tracking-host:5000.")],
    from_: Annotated[str | None, typer.Option(
        "--from", help="The store the runs are in (default: MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db).")]
    = None,
    runs_dir: Annotated[list[Path] | None, typer.Option(
        "--runs-dir", help="Folders of run folders whose records are pointed at the copies (default: runs).")]
    = None,
) -> None:
    """Copy every run of an MLflow store (the embedded one by default) to another, losing nothing: params,
    tags, whole metric histories, artifacts, logged models, dataset inputs, nesting, times and states.

    Run ids change: references between runs are rewritten, each copy is tagged auxcli.migrated_from (its \
old id), and the run folders' metrics.json and complete.json are pointed at the copies. The source store is \
only read; running the command again copies nothing twice and finishes an interrupted migration.
    """
    from auxcli.console import info
    from auxcli.migrate import migrate as migrate_runs
    from auxcli.project import anchored

    folders = [anchored(p) for p in (runs_dir or [Path("runs")])]
    result = migrate_runs(target_uri=to, source_uri=from_, runs_dirs=folders, progress=info)
    typer.echo(f"{result.source} -> {result.target}: {result.copied} runs copied, {result.already} copied before"
               + (f", {result.leftovers_removed} half-made copies replaced" if result.leftovers_removed else "")
               + f"; {len(result.folders_rewritten)} run folders pointed at the copies")


class BenchFormat(str, Enum):
    text = "text"
    json = "json"


# ---------------------------------------------------------------------------------------------- analyze

class Embedding(str, Enum):
    pca = "pca"
    tsne = "tsne"


@app.command()
def analyze(
    runs: Annotated[list[str], typer.Argument(
        help="Run folders (runs/<name>/seed-<k>) or MLflow run ids of finished runs on one data set.")],
    layer: Annotated[str, typer.Option(
        help="penultimate (the pooled final feature map) or a backbone module name, e.g. layer2.")] = "penultimate",
    out: Annotated[Path, typer.Option(help="Folder for the csv, json and PNG files.")] = Path("analysis"),
    embedding: Annotated[Embedding, typer.Option(help="2-D embedding: pca, or tsne (needs scikit-learn).")]
    = Embedding.pca,
    tracking_uri: TrackingUriOption = None,
    mlflow: Annotated[bool, typer.Option(
        help="Log the files to a new MLflow run `auxcli-analysis` in the experiment `<experiment>-analysis`.")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:k] | mps")] = "auto",
) -> None:
    """Compare runs' test-set features: linear CKA matrix and heatmap, 2-D embeddings by superclass, and a
    closed-form ridge-probe accuracy per run (a fast companion to Table 2's probe, not the same number)."""
    from auxcli.analysis.analyze import analyze_runs, format_summary
    from auxcli.signals import stop_on_signals

    with stop_on_signals("an open analysis run is marked KILLED; re-run the command."):
        result = analyze_runs(runs, layer=layer, out=out, embedding=embedding.value, tracking_uri=tracking_uri,
                              log_to_mlflow=mlflow, device=device)
    typer.echo(format_summary(result), nl=False)
    for path in result.written:
        typer.echo(f"wrote {path}", err=True)
    if result.mlflow_run_id:
        typer.echo(f"logged the analysis to MLflow run {result.mlflow_run_id} (auxcli-analysis)", err=True)


@app.command()
def bench(
    spec_path: Annotated[Path | None, typer.Argument(
        help="The spec to measure (its model, batch, optimizer, runtime); or give --backbone.")] = None,
    set_: SetOption = None,
    backbone: Annotated[str | None, typer.Option(help="resnet, pyramidnet or linear (overrides the spec).")] = None,
    depth: Annotated[int | None, typer.Option(help="Depth 6n+2 (default 20 without a spec).")] = None,
    alpha: Annotated[float | None, typer.Option(help="PyramidNet widening factor (270 in the study).")] = None,
    steps: Annotated[int, typer.Option(min=1, max=100_000, help="Batches per timed pass.")] = 20,
    epochs: Annotated[int | None, typer.Option(
        min=0, max=1000, help="Steady-state epochs of a real `auxcli run` on the spec's data (default 2 with a spec, "
        "0 without; 0 skips it).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: the spec's runtime.device).")]
    = None,
    workers: Annotated[int | None, typer.Option(min=0, help="Reference DataLoader workers (default: cores, <= 8).")]
    = None,
    fmt: Annotated[BenchFormat, typer.Option("--format", "-f", help="text or json (fixed keys).")] = BenchFormat.text,
) -> None:
    """auxcli vs the hand-written loop (PIL + torchvision + DataLoader): images/s, ratios, FLOP/s vs peak."""
    from auxcli.bench import bench_spec, benchmark, format_report

    spec = bench_spec(spec_path, set_ or (), backbone=backbone, depth=depth, alpha=alpha)
    result = benchmark(spec, steps=steps, epochs=(2 if spec_path else 0) if epochs is None else epochs,
                       device=device, workers=workers)
    typer.echo(json.dumps(result) if fmt is BenchFormat.json else format_report(result))


@app.command()
def pipeline(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Spec files or folders (default: specs/<suite>, the params file's `suite`).")] = None,
    out: Annotated[Path, typer.Option(help="Where to write the DVC pipeline.")] = Path("dvc.yaml"),
    params: Annotated[str, typer.Option(help="The params file every stage reads.")] = "params.yaml",
    set_: SetOption = None,
) -> None:
    """Write dvc.yaml: a data stage, one stage per spec (transfers after their sources), metrics and plots.

    --set overrides go onto every stage's command (after --params), so the stages resolve the specs as here."""
    from auxcli.pipeline import dvc_yaml, ensure_dvcignore, suite_folder
    from auxcli.plottemplate import ensure_plot_template
    from auxcli.runfolder import atomic_write_text
    from auxcli.specfile import load_spec, params_overrides

    suite = None
    if not paths:
        folder = suite_folder(params)
        paths, suite = [folder], folder.name
    files = _spec_files(paths)
    overrides = (params_overrides(params) if Path(params).exists() else []) + (set_ or [])
    atomic_write_text(out, dvc_yaml([(f, load_spec(f, overrides)) for f in files], params_file=params, suite=suite,
                                     overrides=set_ or ()))
    if not Path(params).exists():
        atomic_write_text(Path(params), "{}\n")
    ensure_dvcignore()
    template = ensure_plot_template()
    typer.echo(f"wrote {out} (data + {len(files)} run stages + summary{f', suite {suite}' if suite else ''})"
               + (f" and {template}" if template else "; no .dvc/ here: run `dvc init`, then this again for the "
                  "plot template"))


@app.command()
def results(
    paths: SpecPaths,
    set_: SetOption = None,
    params: ParamsOption = None,
    out: Annotated[Path, typer.Option(help="Folder of the git-tracked results.")] = Path("results"),
    summary: Annotated[bool, typer.Option(
        "--summary", help="Only write <out>/summary.json from the per-run files already there: mean, std and n "
        "of each spec's headline metric (the pipeline's `summary` stage).")] = False,
) -> None:
    """Copy each finished run's summary metrics (numeric only) and history under results/, for DVC to compare."""
    from auxcli.results import write_results, write_summary
    from auxcli.specfile import load_spec

    files, overrides = _spec_files(paths), _overrides(params, set_)
    _note_pipeline_params(files, overrides, params)
    if summary:
        typer.echo(f"wrote {write_summary([load_spec(f, overrides) for f in files], out)}")
        return
    written = [p for f in files for p in write_results(load_spec(f, overrides), out)]
    typer.echo(f"wrote {len(written)} files under {out}/")


# ---------------------------------------------------------------------------------------------- bundle, reproduce

@app.command()
def bundle(
    targets: Annotated[list[str], typer.Argument(
        help="Run folders (runs/<name>/seed-<k>), MLflow run ids (runs:/<id> or bare), spec files or spec names "
        "(every finished seed).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The archive (default bundle-<id>.tar.gz).")]
    = None,
    with_weights: Annotated[bool, typer.Option(
        "--with-weights", help="Include final.pt of every run (and of transfer sources).")] = False,
    tracking_uri: TrackingUriOption = None,
    set_: SetOption = None,
    params: ParamsOption = None,
) -> None:
    """Pack finished runs, their transfer sources and their records into one verifiable .tar.gz.

    A spec file packs its finished seeds of the spec as resolved with --params and --set (its result identity)."""
    from auxcli.bundle.build import build_bundle

    result = build_bundle(targets, out, with_weights=with_weights, tracking_uri=tracking_uri,
                          overrides=_overrides(params, set_))
    typer.echo(f"wrote {result.path}: {len(result.runs)} run(s), {len(result.manifest['members'])} members, "
               f"bundle id {result.manifest['bundle_id']}")


@app.command()
def reproduce(
    bundle_file: Annotated[Path, typer.Argument(help="A bundle written by `auxcli bundle`.")],
    epochs: Annotated[int | None, typer.Option(min=1, help="Re-run only the first N epochs of each run.")] = None,
    tolerance: Annotated[float | None, typer.Option(
        min=0, help="Allowed |recorded - reproduced| for every metric (default: exact for deterministic runs "
        "on the recorded device type, else per metric kind).")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Where the re-runs go (default reproduce-<id>/).")] = None,
    check_only: Annotated[bool, typer.Option("--check-only", help="Verify the bundle and stop.")] = False,
    allow_data_change: Annotated[bool, typer.Option(
        "--allow-data-change", help="Re-run even when the data files differ from the recorded ones.")] = False,
    max_extracted_gib: Annotated[float | None, typer.Option(
        "--max-extracted-gib", min=0, help="Refuse a bundle whose members add up to more (default 16 GiB).")] = None,
    max_compression_ratio: Annotated[float | None, typer.Option(
        "--max-compression-ratio", min=1, help="Refuse a bundle over 64 MiB that extracts to more than this many "
        "times its file size (default 200).")] = None,
) -> None:
    """Verify a bundle, print how this machine differs, re-run every run and compare metrics (exit 0 only if
    all are within tolerance)."""
    from auxcli.bundle.archive import verify_bundle
    from auxcli.bundle.reproduce import bundle_summary, reproduce_bundle
    from auxcli.bundle.trust import Limits
    from auxcli.errors import ReproductionMismatch

    limits = Limits.of(max_extracted_gib, max_compression_ratio)
    if check_only:
        typer.echo(bundle_summary(verify_bundle(bundle_file, limits)))
        return
    result = reproduce_bundle(bundle_file, epochs=epochs, tolerance=tolerance, runs_dir=runs_dir,
                              allow_data_change=allow_data_change, echo=typer.echo, limits=limits)
    if not result.ok:
        raise ReproductionMismatch(f"{bundle_file}: some metrics are outside their tolerance (the rows marked NO).")


def _spec_files(paths: list[Path]) -> list[Path]:
    """The spec files named or found below the given folders; none at all is a spec error."""
    from auxcli.errors import Problem
    from auxcli.specfile import spec_files

    files = spec_files(paths)
    if not files:
        raise SpecError([Problem(", ".join(map(str, paths)), None, None, "", "no spec files found",
                                 "*.yaml files or folders holding them")])
    return files


def main() -> None:
    try:
        app()
    except SystemExit as exc:
        _exit_torchrun_worker(exc)
        raise


def _exit_torchrun_worker(exc: SystemExit) -> None:
    """A torchrun worker leaves with `os._exit` (see `auxcli.train.distributed._leave`): gloo's
    destructors would otherwise run at interpreter exit and can abort the process once a peer is gone."""
    distributed = sys.modules.get("auxcli.train.distributed")
    if distributed is None or not distributed.joined_a_group():
        return
    code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
