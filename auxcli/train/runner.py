"""`auxcli run` for one spec and seed, in phases: prepare, restore, train, finish.

The loop itself (`loop.py`) is task-agnostic; this module wires the spec to it: data on the device,
tasks and their heads, optimizer and schedule (the study's recipe), transfer and resume. The phases
compute; every write (run folder, checkpoints, MLflow) goes through a `Recorder` (`record.py`).
Randomness is derived from (seed, epoch), so a run resumed from `last.pt` continues exactly as an
uninterrupted one would (bit-identical on CPU with `runtime.deterministic: true`).

Under torchrun every rank runs these phases (`train/distributed.py`): rank 0 alone looks at the run folder
and resolves transfer sources, and broadcasts what it found (finished, the `last.pt` to resume, the
source); every rank builds the same model and wraps it in DistributedDataParallel; only rank 0 has a
`RunRecorder` (the others a `NoRecorder`) and it broadcasts the MLflow run id. Set-up and recording run
inside `agree` blocks, so an error on any rank stops every rank with the same message.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from auxcli import console
from auxcli.augment.targets import Targets
from auxcli.runrecord import Provenance, run_record, runtime_choices
from auxcli.augment.pipeline import build_eval_transform, build_train_augment
from auxcli.data.batches import augment_seed, epoch_permutation, images_in_batches
from auxcli.data.labelsets import label_set_sizes, labels_for, num_classes
from auxcli.data.load import load_data
from auxcli.data.stats import channel_stats
from auxcli.data.types import ImageData, Split
from auxcli.errors import AuxcliError, CheckpointError, Problem, SpecError, TrainingDiverged
from auxcli.launch.tags import launch_tags
from auxcli.models.batchnorm import ghost_parts, use_ghost_batch_norm, use_sync_batch_norm
from auxcli.models.network import Network
from auxcli.models.registry import create_backbone
from auxcli.spec import Spec, launch_problems
from auxcli.catalogue import checkpoint_belongs, holds_other_settings
from auxcli.staleness import stale_error
from auxcli.tasks import Task, build_tasks
from auxcli.train.checkpoint import LAST_FORMAT, load_checkpoint, restore_rng_state, rng_state
from auxcli.train.distributed import Ranks, current
from auxcli.train.loop import SplitTensors, Transform, evaluate_batches, train_epoch
from auxcli.train.metrics import split_metrics, summary_metrics
from auxcli.runfolder import RunFolder
from auxcli.testhooks import pause_point
from auxcli.train.progress import Progress, make_progress
from auxcli.train.record import NoRecorder, Recorder, RunRecorder, run_label
from auxcli.train.runtime import Runtime, resolve_runtime, seed_everything
from auxcli.train.transfer import apply_transfer, resolve_source

EVAL_AUGMENT_SEED = 20_240_615  # fixed: test-time augmentation for aux metrics is the same every epoch


class Interrupted(AuxcliError):
    """Ctrl-C or SIGTERM: the run is marked KILLED; the last complete epoch stays in last.pt."""

    def __init__(self, signum: int):
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"Interrupted by {name}; the last finished epoch is saved in last.pt: "
                         "re-run the same command to resume.")


@dataclass(frozen=True)
class RunOutcome:
    name: str
    seed: int
    status: str  # finished | complete (finished before; not retrained) | stopped (stop_after_epoch) | repaired
    folder: RunFolder
    metrics: dict[str, Any]  # the summary metrics of metrics.json
    run_id: str | None


def run_spec(spec: Spec, *, seeds: list[int] | None = None, resume: bool = False,
             force: bool = False, provenance: Provenance | None = None) -> list[RunOutcome]:
    return [run_seed(spec, seed, resume=resume, force=force, provenance=provenance)
            for seed in (seeds or spec.seeds)]


def run_seed(spec: Spec, seed: int, *, resume: bool = False, force: bool = False,
             provenance: Provenance | None = None, stop_after_epoch: int | None = None) -> RunOutcome:
    """One seed, in four phases: prepare (build everything from the spec), restore (from `last.pt`),
    train (epoch by epoch, recorded after each) and finish (final weights, summary, `repro/` record).

    `provenance` (spec file as written, overrides, command line) goes into the record. `stop_after_epoch`
    ends training after that epoch with the schedule unchanged (`auxcli reproduce --epochs`): no
    `final.pt` or `metrics.json`, the MLflow run tagged `auxcli.stopped_after_epoch`.

    Rank 0 holds the run folder's lock for the whole run (a second process for the same folder exits 2).
    A folder of another resolved spec is refused (`StaleResult`, exit 2) unless `force`; a finished but
    incompletely recorded one is repaired without retraining (see `record.py`)."""
    ranks = current()
    folder = RunFolder.of(spec, seed)
    with _folder_lock(folder, ranks):
        pause_point("after-lock")
        done, checkpoint = ranks.from_main(lambda: _look_up(spec, seed, folder, resume=resume, force=force))
        if done is not None:
            status, finished = done
            return RunOutcome(spec.name, seed, status, folder, finished, finished.get("mlflow_run_id"))

        training = prepare(spec, seed, ranks)
        with ranks.agree():
            start = restore(training, checkpoint)
        recorder = (RunRecorder(spec, seed, folder, params=training.runtime.params()) if ranks.is_main
                    else NoRecorder())
        stop = stop_after_epoch if stop_after_epoch is not None and stop_after_epoch < spec.train.epochs else None
        tags = {**training.transfer_tags, **({"auxcli.stopped_after_epoch": str(stop)} if stop else {}),
                **({"auxcli.world_size": str(ranks.world_size)} if ranks.distributed else {}), **launch_tags()}
        summary = _train_and_finish(training, recorder, start, tags=tags, clear_folder=force, provenance=provenance,
                                    stop_after_epoch=stop)
        return RunOutcome(spec.name, seed, "stopped" if stop else "finished", folder, summary, recorder.run_id)


def _folder_lock(folder: RunFolder, ranks: Ranks) -> Any:
    """The run folder's lock, taken by rank 0 (the process that writes the folder) only."""
    import contextlib

    return folder.lock() if ranks.is_main else contextlib.nullcontext()


def _look_up(spec: Spec, seed: int, folder: RunFolder, *, resume: bool, force: bool
             ) -> tuple[tuple[str, dict[str, Any]] | None, dict[str, Any] | None]:
    """The run folder's state (rank 0 only, holding the lock): (status, metrics) of a run that needs no
    training (`complete`, or `repaired` after completing its record), else the `last.pt` to resume."""
    folder.prepare()
    folder.remove_stale_temporaries()
    if not force:
        if holds_other_settings(spec, folder):
            raise stale_error(spec, seed, folder)
        if folder.is_finished():
            console.info(f"{run_label(spec, seed)}: complete ({folder.metrics}); use --force to retrain.")
            return ("complete", folder.read_metrics()), None
        if folder.metrics.exists():
            return ("repaired", _repair(spec, seed, folder).metrics), None
    checkpoint = None if force else _load_resumable(folder, spec)
    if resume and checkpoint is None:
        console.info(f"{run_label(spec, seed)}: no last.pt to resume from; starting from epoch 1.")
    return None, checkpoint


def _repair(spec: Spec, seed: int, folder: RunFolder) -> RunOutcome:
    """Training finished earlier but the MLflow record did not: complete it, without retraining."""
    recorder = RunRecorder(spec, seed, folder)
    with _signals_raise():
        status = "FAILED"
        try:
            with _recording():
                recorder.repair()
            status = "FINISHED"
        except Interrupted:
            status = "KILLED"
            raise
        finally:
            with _recording():
                recorder.close(status)
    print(f"{run_label(spec, seed)}: training had finished; completed its MLflow record (run {recorder.run_id}) "
          "without retraining.", flush=True)
    recorded = folder.read_metrics()
    return RunOutcome(spec.name, seed, "repaired", folder, recorded, recorder.run_id)


# ---------------------------------------------------------------------------------------------- prepare

@dataclass(frozen=True)
class _Training:
    """Everything the train and finish phases need, built once per run by `prepare`."""

    spec: Spec
    seed: int
    ranks: Ranks
    model: Network
    forward: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # the model, under DDP and compiled if asked
    eval_forward: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # the same without DDP (no collectives)
    tasks: list[Task]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_split: SplitTensors
    test_split: SplitTensors
    augment: Transform
    clean: Transform
    runtime: Runtime
    progress: Progress
    set_train_mode: Callable[[Network], Any]
    transfer_tags: dict[str, str]
    normalize: dict[str, torch.Tensor]  # the training set's per-channel mean and std (0..1 units, on the CPU)


def prepare(spec: Spec, seed: int, ranks: Ranks) -> _Training:
    """Data on the device, tasks and their heads, transfer, optimizer and schedule (the study's recipe).
    Under torchrun: data read by rank 0 first (it may generate or download it), the transfer source
    resolved by rank 0 alone, the model wrapped in DistributedDataParallel."""
    seed_everything(seed)
    with ranks.agree():
        runtime = resolve_runtime(spec.runtime, backbone=spec.model.backbone)
        runtime = dataclasses.replace(runtime, device=ranks.device(runtime.device))
        _check_launch(spec, ranks, runtime)
    data = ranks.main_first(lambda: load_data(spec.data))
    needs_source = spec.transfer is not None and spec.transfer.from_ != "init"
    source = ranks.from_main(lambda: resolve_source(spec, seed)) if needs_source else None
    with ranks.agree():
        tasks = build_tasks(spec, label_set_sizes(data))
        mean, std = channel_stats(data.train.images)
        normalize = {"mean": mean.float(), "std": std.float()}
        model = build_network(spec, tasks, ranks.world_size)
        setup = apply_transfer(spec, model, source)
        model = runtime.place(model)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=spec.train.lr,
                                    momentum=spec.train.momentum, nesterov=spec.train.nesterov,
                                    weight_decay=spec.train.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, spec.train.milestones, spec.train.gamma)
        mean, std = mean.to(runtime.device), std.to(runtime.device)
        train_split = _on_device(data, data.train, "train", tasks, spec, runtime)
        test_split = _on_device(data, data.test, "test", tasks, spec, runtime)
    normalize_only = build_eval_transform(mean, std)

    def clean(images: torch.Tensor, targets: Targets, generator: None) -> tuple[torch.Tensor, Targets]:
        return normalize_only(images), targets

    def compiled(module: torch.nn.Module) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        return runtime.compile(module)  # static shapes, the resolved mode; the module itself when not compiling

    eval_forward = compiled(model)
    return _Training(
        spec=spec, seed=seed, ranks=ranks, model=model, eval_forward=eval_forward,
        forward=compiled(ranks.wrap(model)) if ranks.distributed else eval_forward,
        tasks=tasks, optimizer=optimizer, scheduler=scheduler, train_split=train_split, test_split=test_split,
        augment=build_train_augment(spec.augment, mean, std), clean=clean, runtime=runtime,
        progress=make_progress(run_label(spec, seed)),
        set_train_mode=setup.set_train_mode if setup else Network.train,
        transfer_tags=setup.tags if setup else {}, normalize=normalize)


def build_network(spec: Spec, tasks: list[Task], world_size: int = 1) -> Network:
    """The spec's backbone with one fresh head per task (the study's Figure 1), its BatchNorm layers
    ghost (groups of `runtime.bn_group` images, whatever the `world_size`) or synchronised
    (`runtime.sync_bn`) as the spec asks."""
    backbone = create_backbone(spec.model, image_size=spec.data.image_size)
    network = Network(backbone, {task.name: task.build_head(backbone.feature_width) for task in tasks})
    if spec.runtime.sync_bn:
        return use_sync_batch_norm(network)
    return use_ghost_batch_norm(network, ghost_parts(spec.runtime.bn_group, spec.train.batch_size, world_size))


def _check_launch(spec: Spec, ranks: Ranks, runtime: Runtime) -> None:
    """The rules that need the world size and the device (`spec.launch_problems`), as a spec error."""
    problems = launch_problems(spec, world_size=ranks.world_size, device_type=runtime.device.type)
    if problems:
        raise SpecError([Problem(f"spec '{spec.name}'", None, None, p.path, p.message, p.allowed)
                         for p in problems])


# ---------------------------------------------------------------------------------------------- restore

@dataclass(frozen=True)
class Start:
    """Where training starts: epoch 1 of a fresh run, or the epoch after `last.pt`'s."""

    epoch: int
    history: list[dict[str, float]]
    run_id: str | None  # the MLflow run a resumed checkpoint belongs to


def restore(t: _Training, checkpoint: dict[str, Any] | None) -> Start:
    """Load model, optimizer, schedule and RNG state from `last.pt`, if there is one."""
    if checkpoint is None:
        return Start(epoch=1, history=[], run_id=None)
    t.model.load_state_dict(checkpoint["model"])
    t.optimizer.load_state_dict(checkpoint["optimizer"])
    t.scheduler.load_state_dict(checkpoint["scheduler"])
    restore_rng_state(checkpoint["rng"])
    console.info(f"{run_label(t.spec, t.seed)}: resuming after epoch {checkpoint['epoch']}.")
    return Start(epoch=checkpoint["epoch"] + 1, history=list(checkpoint["history"]),
                 run_id=checkpoint.get("mlflow_run_id"))


def _load_resumable(folder: RunFolder, spec: Spec) -> dict[str, Any] | None:
    if not folder.last.exists():
        return None
    checkpoint = load_checkpoint(folder.last, LAST_FORMAT)
    if not checkpoint_belongs(spec, checkpoint, folder):
        raise CheckpointError(f"{folder.last} was written by a different version of spec '{spec.name}'; "
                              "resuming would mix two experiments. Re-run with --force to start over.")
    return checkpoint


# ---------------------------------------------------------------------------------------------- train, finish

def _train_and_finish(t: _Training, recorder: Recorder, start: Start, *, tags: dict[str, str], clear_folder: bool,
                      provenance: Provenance | None = None, stop_after_epoch: int | None = None) -> dict[str, float]:
    """Open the record, train and finish under signal handling; the MLflow run always ends FINISHED,
    FAILED or KILLED: a second Ctrl-C or SIGTERM while closing it is ignored, not obeyed halfway."""
    status = "FAILED"
    with _signals_raise():
        try:
            # --force clears the old results only now that set-up succeeded: a failed --force changes nothing.
            # rank 0 opens the MLflow run; every rank learns its id (and any error opening it)
            with _recording():
                recorder.run_id = t.ranks.from_main(lambda: recorder.open(
                    resumed_run_id=start.run_id, history=start.history, tags=tags, clear_folder=clear_folder))
            history = train(t, recorder, start, stop_after_epoch)
            summary = finish(t, recorder, history, provenance) if stop_after_epoch is None else {}
            status = "FINISHED"
        except Interrupted:
            status = "KILLED"
            raise
        except KeyboardInterrupt:
            status = "KILLED"
            raise Interrupted(signal.SIGINT) from None
        finally:
            t.progress.close()
            with _recording():
                recorder.close(status)
    return summary


def train(t: _Training, recorder: Recorder, start: Start, stop_after_epoch: int | None = None
          ) -> list[dict[str, float]]:
    """The remaining epochs (up to `stop_after_epoch`); each is recorded (metrics, history, `last.pt`)
    before the next starts."""
    history = list(start.history)
    t.progress.start_run(f"{run_label(t.spec, t.seed)}: {'resuming at' if start.history else 'starting'} epoch "
                         f"{start.epoch}/{t.spec.train.epochs}: spec {t.spec.name}, seed {t.seed}, "
                         f"{len(t.train_split)} training images, device {t.runtime.device}"
                         + (f", MLflow run {recorder.run_id}" if recorder.run_id else ""))
    for epoch in range(start.epoch, min(t.spec.train.epochs, stop_after_epoch or t.spec.train.epochs) + 1):
        pause_point("before-epoch")
        t.ranks.test_exit_hook(epoch)
        row = _one_epoch(epoch, t)
        t.scheduler.step()
        history.append(row)
        t.ranks.check_replicas(t.model, epoch)
        with t.ranks.agree(), _recording():  # every rank waits until rank 0 has recorded the epoch
            recorder.record_epoch(epoch, row, history, {
                "epoch": epoch, "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
                "scheduler": t.scheduler.state_dict(), "rng": rng_state(), "history": history})
    return history


def finish(t: _Training, recorder: Recorder, history: list[dict[str, float]],
           provenance: Provenance | None = None) -> dict[str, float]:
    """The summary metrics, the weights transfers load (`final.pt`: extractor, heads and the input
    normalisation, on the CPU) and the reproducibility record (`repro/`: environment, code, data, provenance)."""
    summary = summary_metrics(history)
    model = t.model
    record = t.ranks.from_main(lambda: run_record(
        t.spec, t.seed, runtime=runtime_choices(t.spec, t.runtime), provenance=provenance,
        transfer_tags=t.transfer_tags, split_sizes={"train": len(t.train_split), "test": len(t.test_split)}))
    with t.ranks.agree(), _recording():
        recorder.record_final(summary, {
            "spec": t.spec.to_plain(), "seed": t.seed,
            "backbone": {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()},
            "heads": {name: {k: v.detach().cpu() for k, v in head.state_dict().items()}
                      for name, head in model.heads.items()},
            "normalize": t.normalize}, record)
    return summary


def _one_epoch(epoch: int, t: _Training) -> dict[str, float]:
    spec, seed, runtime, ranks = t.spec, t.seed, t.runtime, t.ranks
    started = time.perf_counter()
    lr = t.optimizer.param_groups[0]["lr"]
    order = epoch_permutation(len(t.train_split), seed=seed, epoch=epoch)
    generator = torch.Generator(device=runtime.device).manual_seed(augment_seed(seed, epoch))
    t.progress.start_epoch(epoch, spec.train.epochs, len(t.train_split))
    t.set_train_mode(t.model)
    train_sums = train_epoch(t.forward, t.tasks, t.optimizer, t.train_split, order, batch_size=spec.train.batch_size,
                             augment=t.augment, generator=generator, runtime=runtime, on_batch=t.progress.batch,
                             shard=ranks.shard)
    train_sums = ranks.sum_over_ranks(train_sums)
    train_seconds = time.perf_counter() - started
    with ranks.agree():  # the sums are the same on every rank, so is this verdict
        if not math.isfinite(train_sums["loss"]):
            raise TrainingDiverged(f"{run_label(spec, seed)}: the training loss became {train_sums['loss']} in epoch "
                                   f"{epoch}; the run is marked FAILED and last.pt still holds epoch {epoch - 1}. "
                                   "Lower train.lr or check the data.")
    ranks.share_buffers(t.model)  # rank 0's BatchNorm statistics, the ones final.pt saves, on every rank
    t.model.eval()
    eval_started = time.perf_counter()
    row: dict[str, float] = {"epoch": epoch, **split_metrics("train", t.tasks, train_sums)}
    clean_tasks = [task for task in t.tasks if not task.eval_augmented]
    augmented_tasks = [task for task in t.tasks if task.eval_augmented]
    batch = spec.train.eval_batch_size
    if clean_tasks:
        sums = evaluate_batches(t.eval_forward, clean_tasks, t.test_split, batch_size=batch, transform=t.clean,
                                generator=None, runtime=runtime, shard=ranks.shard,
                                eager=t.model)
        row.update(split_metrics("test", clean_tasks, ranks.sum_in_order(sums)))
    if augmented_tasks:
        fixed = torch.Generator(device=runtime.device).manual_seed(EVAL_AUGMENT_SEED)
        sums = evaluate_batches(t.eval_forward, augmented_tasks, t.test_split, batch_size=batch,
                                transform=t.augment, generator=fixed, runtime=runtime, shard=ranks.shard,
                                eager=t.model)
        row.update(split_metrics("test", augmented_tasks, ranks.sum_in_order(sums)))
    finished = time.perf_counter()
    row.update(lr=lr, epoch_seconds=finished - started, eval_seconds=finished - eval_started,
               images_per_second=images_in_batches(len(t.train_split), spec.train.batch_size, runtime.static_shapes)
               / max(train_seconds, 1e-9))
    t.progress.end_epoch(epoch, spec.train.epochs, row)
    return row


def _on_device(data: ImageData, split: Split, split_name: str, tasks: list[Task], spec: Spec,
               runtime: Runtime) -> SplitTensors:
    classes = {t.name: labels_for(split, t.label_set, random_label_seed=spec.data.random_label_seed,
                                  split_name=split_name, num_classes=num_classes(data, t.label_set)
                                  ).to(runtime.device)
               for t in tasks if t.label_set is not None}
    return SplitTensors(split.images.to(runtime.device), classes)


class _SignalGuard:
    """SIGTERM and Ctrl-C as one `Interrupted`, raised where it cannot corrupt a record.

    The first signal raises `Interrupted` so cleanup runs; later ones are ignored, so a quick second
    signal cannot abort the cleanup and leave the MLflow run RUNNING. Inside `recording()` (a write to the
    run folder or MLflow) the signal waits until the write is done: raised inside MLflow or SQLAlchemy,
    whose `except Exception` blocks wrap it, it would end the run FAILED with a foreign error.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.raised = False
        self.depth = 0

    def handler(self, signum: int, frame: object) -> None:
        if self.raised:
            return
        if self.depth:
            self.pending = signum
            return
        self.raised = True
        raise Interrupted(signum)

    @contextmanager
    def recording(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending is not None and not self.raised:
            self.raised = True
            raise Interrupted(self.pending)


_GUARDS: list[_SignalGuard] = []


def _recording() -> Any:
    """Defer a signal until the write inside this block is done (no-op outside `_signals_raise`)."""
    import contextlib

    return _GUARDS[-1].recording() if _GUARDS else contextlib.nullcontext()


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Install `_SignalGuard` for SIGTERM and SIGINT for the duration of the block."""
    guard = _SignalGuard()
    previous = {sig: signal.signal(sig, guard.handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    _GUARDS.append(guard)
    try:
        yield
    finally:
        _GUARDS.remove(guard)
        for sig, old in previous.items():
            signal.signal(sig, old)
