"""The experiment spec: pydantic models whose defaults are the study's training recipe.

The field names are a contract (specs, `--set` overrides, MLflow params and the report read them):
add fields freely, never rename one. Structural checks live on the models; the rules that tie fields
together are in `cross_field_problems`, which names the field each problem belongs to.

Defaults follow the study (docs/study.md, "Training recipe"): 300 epochs, batch 128,
SGD with Nesterov momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at epochs 150 and 225,
pad-4 random crop and horizontal flip.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from auxcli.models.depth import allowed_depths, valid_depth

LabelSet = Literal["gt", "superclass", "random"]
LABEL_SETS: tuple[str, ...] = ("gt", "superclass", "random")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1024  # 8: the conv backbones' stride-4 map is still 2x2

# Bounds on numbers (issue 9): every count and size has a ceiling far above the study's values but below
# what would exhaust memory or overflow a generator, so a typo (base_width: 100000, a seed of 10**29) is a
# validation error instead of a crash or a hang. Floats must be finite (no .inf/.nan) through the config.
SEED_MAX = 2**32 - 1  # numpy's RandomState (synthetic data) takes seeds below 2**32
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
PositiveInt = Annotated[int, Field(gt=0, le=10**9)]
NonNegativeInt = Annotated[int, Field(ge=0, le=10**9)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    # strict: YAML's types are kept (`epochs: true` is not 1, `lr: "0.1"` is not a number); ints still pass
    # as floats. allow_inf_nan=False: no .inf or .nan anywhere.
    # use_attribute_docstrings: the string under each field is its description in the JSON Schema.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True,
                              allow_inf_nan=False, use_attribute_docstrings=True)


class SyntheticSpec(Section):
    """Size of the generated CIFAR-100-format archive (dataset: synthetic only)."""

    train_per_class: int = Field(20, gt=0, le=6000)  # CIFAR-100 has 500; beyond 6000 the archive passes 2 GB
    """Generated training images per class (100 classes)."""
    test_per_class: int = Field(5, gt=0, le=6000)
    """Generated test images per class."""
    seed: Seed = 0
    """Fixes every generated pixel: same seed and sizes, same files."""


class DataSpec(Section):
    dataset: Literal["cifar100", "cifar10", "synthetic", "folder"] = "cifar100"
    """cifar100 (the study), cifar10, a generated CIFAR-100-format archive (synthetic), or an image folder
    with train/<class>/ and test/<class>/ (folder)."""
    root: str = "data"  # holds cifar-100-python/ (or cifar-10-batches-py/, synthetic/...); folder: train/ and test/
    """Folder that holds cifar-100-python/ (cifar-10-batches-py/, synthetic/.../cifar-100-python/), or an
    image folder's train/ and test/; relative to the repository root."""
    download: bool = True  # synthetic: generated on first use instead; folder: unused
    """Download the official archive when it is missing (synthetic: generate it instead; folder: unused)."""
    random_label_seed: Seed = 0  # fixes the 'random' label set for every run that uses it
    """Fixes the 'random' label set, so every run that uses it sees the same labels."""
    subset: PositiveInt | None = None  # first N training images per class
    """Keep only the first N training images of each class (null: all of them)."""
    synthetic: SyntheticSpec = SyntheticSpec()
    """Size and seed of the generated archive (dataset: synthetic only)."""
    # Square side in pixels every image is resized to (CIFAR's own 32 by default); see auxcli/data/folder.py.
    image_size: int = Field(32, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)
    """Square side in pixels every image is resized to (CIFAR's own 32 by default)."""
    superclasses: str | None = None  # folder only: YAML mapping class -> superclass (enables 'superclass')
    """Image folders only: a YAML file mapping each class to a superclass (enables the superclass label set)."""


class ModelSpec(Section):
    backbone: Literal["resnet", "pyramidnet", "linear", "wrn"] = "resnet"
    """Feature extractor: CIFAR ResNet, additive PyramidNet, Wide ResNet, or a linear model on raw pixels."""
    depth: Annotated[int, Field(gt=0, le=2000)] | None = 110  # resnet/pyramidnet: 6n+2; wrn: 6n+4; linear: none
    """Layers: 6n+2 (8, 14, 20, ..., 110) for resnet and pyramidnet, 6n+4 (10, 16, 22, 28, ...) for wrn;
    null for linear."""
    alpha: Annotated[float, Field(gt=0, le=4096)] | None = None  # pyramidnet widening factor (270 in the study)
    """PyramidNet widening factor: channels added over the whole network (270 in the study)."""
    base_width: int = Field(16, gt=0, le=1024)  # channels of the first stage (16 in both papers)
    """Channels of the first stage (16 in both papers)."""
    widen_factor: Annotated[int, Field(gt=0, le=64)] | None = None  # wrn: channels per stage x k (WRN-28-10: 10)
    """Wide ResNet only: channels of every stage multiplied by k (WRN-28-10: 10)."""
    dropout: float = Field(0.0, ge=0, lt=1)  # wrn: dropout between the two convs of a block (0.3 in Cutout/RICAP)
    """Wide ResNet only: dropout between the two convolutions of a block (0.3 in the Cutout and RICAP papers)."""

    @model_validator(mode="before")
    @classmethod
    def _linear_has_no_depth(cls, data: Any) -> Any:
        # The depth default (110) belongs to the conv backbones; without this the resolved spec of a
        # linear model would record depth 110. An explicit depth is still checked (and refused) below.
        if isinstance(data, dict) and data.get("backbone") == "linear" and "depth" not in data:
            data = {**data, "depth": None}
        return data


class LabelsetAux(Section):
    """A second classification head on another label set."""

    kind: Literal["labelset"]
    """labelset: a second classification head on another label set."""
    labels: LabelSet
    """The auxiliary head's label set (not the main head's)."""
    weight: float = Field(1.0, ge=0)
    """Weight of the auxiliary loss in the training objective (main + weight * aux)."""


class CropAux(Section):
    """Classify which of the 3x3 blocks of the 9x9 crop-offset grid the crop came from."""

    kind: Literal["crop"]
    """crop: classify the crop offset's 3x3 block."""
    labels: None = None
    """Not used by this task (null)."""
    weight: float = Field(1.0, ge=0)
    """Weight of the auxiliary loss in the training objective (main + weight * aux)."""
    # sampled: the study's label, the sampled offset even when the image is then flipped;
    # visible: mirror the horizontal block of flipped images so the label matches what is seen.
    crop_label: Literal["sampled", "visible"] = "sampled"
    """sampled: the offset as drawn (the study); visible: mirrored for flipped images, as seen."""


class CutoutAux(Section):
    """Segment the pixels that Cutout set to zero."""

    kind: Literal["cutout"]
    """cutout: segment the pixels Cutout set to zero (2 classes)."""
    labels: None = None
    """Not used by this task (null)."""
    weight: float = Field(1.0, ge=0)
    """Weight of the auxiliary loss in the training objective (main + weight * aux)."""


class RicapAux(Section):
    """Segment which of RICAP's four source images each pixel came from."""

    kind: Literal["ricap"]
    """ricap: segment which of RICAP's four source images each pixel came from (4 classes)."""
    labels: None = None
    """Not used by this task (null)."""
    weight: float = Field(1.0, ge=0)
    """Weight of the auxiliary loss in the training objective (main + weight * aux)."""


class RotationAux(Section):
    """Predict by how many quarter turns the image was rotated (RotNet, Gidaris et al. 2018): a 4-way head."""

    kind: Literal["rotation"]
    """rotation: predict the quarter turns applied to the image (4 classes)."""
    labels: None = None
    """Not used by this task (null)."""
    weight: float = Field(1.0, ge=0)
    """Weight of the auxiliary loss in the training objective (main + weight * aux)."""
    # unrotated: the main head's loss and accuracy see only the 0-degree copies; all: every copy
    main_copies: Literal["unrotated", "all"] = "unrotated"
    """unrotated: the main head's loss and accuracy use only the 0-degree copies; all: every copy."""


AuxSpec = Annotated[LabelsetAux | CropAux | CutoutAux | RicapAux | RotationAux, Field(discriminator="kind")]
AUX_KINDS: tuple[str, ...] = ("labelset", "crop", "cutout", "ricap", "rotation")


class TaskSpec(Section):
    labels: Literal["gt", "superclass", "random", "none"] = "gt"  # none: the aux task alone
    """Label set of the main classification head; none trains the auxiliary task alone."""
    aux: AuxSpec | None = None
    """The auxiliary (pretext) task and its head; null for plain classification."""
    # sla: one head over (class, rotation) joint labels (Lee et al. 2020, self-supervised label augmentation)
    joint: Literal["sla"] | None = None
    """sla: one head over joint (class, rotation) labels (Lee et al. 2020, self-supervised label
    augmentation); null: none."""


class CropAug(Section):
    padding: NonNegativeInt = 4
    """Zero padding in pixels on each side before the random 32x32 crop (4 in the study)."""


class CutoutAug(Section):
    size: PositiveInt = 16
    """Side in pixels of the square Cutout sets to zero (16 for CIFAR-100 in the Cutout paper)."""


class RicapAug(Section):
    beta: PositiveFloat = 0.3
    """Beta(beta, beta) distribution of RICAP's boundary position (0.3 in the RICAP paper)."""
    keep_off_edges: bool = False  # keep the boundary >= 1 px inside, so all four images show
    """Keep the boundary at least 1 pixel inside the image, so all four sources show."""


class RotationAug(Section):
    # all: every image in the batch four times (0, 90, 180, 270 degrees; RotNet and SLA), the batch grows 4x;
    # one: one rotation drawn per image
    copies: Literal["all", "one"] = "all"
    """all: each image four times, at 0, 90, 180 and 270 degrees (the batch grows 4x; RotNet, SLA);
    one: one rotation drawn per image."""


class AugmentSpec(Section):
    crop: CropAug | None = CropAug()
    """Pad-and-crop augmentation; null turns it off."""
    flip: bool = True
    """Random horizontal flip with probability 0.5."""
    cutout: CutoutAug | None = None
    """Cutout augmentation (DeVries and Taylor 2017); null: off."""
    ricap: RicapAug | None = None
    """RICAP augmentation (Takahashi et al. 2018); null: off."""
    rotation: RotationAug | None = None
    """Rotation of each image by a multiple of 90 degrees; null: off."""


class TrainSpec(Section):
    epochs: int = Field(300, gt=0, le=100_000)
    """Training epochs (300 in the study)."""
    batch_size: int = Field(128, gt=0, le=1 << 20)
    """Training images per step (128 in the study)."""
    lr: PositiveFloat = 0.1
    """Initial learning rate of SGD (0.1 in the study)."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """SGD momentum (0.9 in the study)."""
    nesterov: bool = True
    """Nesterov momentum (on in the study)."""
    weight_decay: float = Field(1.0e-4, ge=0)
    """L2 weight decay (1e-4 in the study)."""
    milestones: list[PositiveInt] = [150, 225]  # filled in from epochs when not given (below)
    """Epochs after which the learning rate is multiplied by gamma. Default: 50% and 75% of train.epochs (150 and 225
    at 300 epochs, the study's schedule); the resolved spec records the numbers."""
    gamma: PositiveFloat = 0.1
    """Learning-rate factor at each milestone (0.1: divided by 10)."""
    eval_batch_size: int = Field(1000, gt=0, le=1 << 20)
    """Images per step when evaluating (no effect on the numbers)."""

    @model_validator(mode="before")
    @classmethod
    def _milestones_follow_epochs(cls, data: Any) -> Any:
        # The study's schedule is relative: lr / 10 at 50% and 75% of training. Filling the numbers in
        # here puts them in the resolved spec, so what ran is on record (and 300 epochs gives 150, 225).
        if isinstance(data, dict) and data.get("milestones") is None:
            epochs = data.get("epochs", 300)
            if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0:
                data = {**data, "milestones": default_milestones(epochs)}
        return data


def default_milestones(epochs: int) -> list[int]:
    """The study's step schedule relative to `epochs`: 50% and 75% (150 and 225 of 300), rounded down;
    milestones that fall on epoch 0, repeat, or reach the last epoch are dropped (epochs 2 -> [1])."""
    marks = [epochs // 2, epochs * 3 // 4]
    return sorted({m for m in marks if 0 < m < epochs})


class TransferSpec(Section):
    from_: str = Field(alias="from", min_length=1)  # spec name | checkpoint path | mlflow run id | init
    """Where the backbone comes from: a spec name, a checkpoint path, an MLflow run id (runs:/<id>) or init (untrained
    weights)."""
    mode: Literal["linear", "finetune"]
    """linear: train a fresh head on frozen features (linear probe); finetune: train everything."""
    bn: Literal["frozen", "train"] = "frozen"  # linear only: BatchNorm statistics frozen or updated
    """Linear probe only: BatchNorm statistics frozen or updated on the new labels."""

    @model_serializer(mode="wrap")
    def _without_fields_that_do_not_apply(self, handler):
        # A finetune has no `bn` (a written one is refused): a resolved spec, which writes every default,
        # must load again as a spec, and its identity must not hold a field that changes nothing.
        data = handler(self)
        if self.mode == "finetune":
            data.pop("bn", None)
        return data


class RuntimeSpec(Section):
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    """auto (CUDA if available, else MPS, else CPU), cpu, cuda, cuda:N or mps."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    """auto: bf16 autocast on CUDA, fp32 elsewhere; fp32; or bf16."""
    compile: bool = False  # torch.compile the model with static shapes (see auxcli/train/runtime.py)
    """torch.compile the model with static shapes (slower start, faster steps on GPUs)."""
    # with compile: true; auto: reduce-overhead (CUDA graphs) on CUDA, default elsewhere
    compile_mode: Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "auto"
    """torch.compile mode when compile is on; auto: reduce-overhead (CUDA graphs) on CUDA, default elsewhere."""
    deterministic: bool = False
    """Deterministic kernels: bit-identical reruns and resumes, at some speed cost."""
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: on for conv backbones on CUDA and CPU
    """Memory format of images and weights; auto: on for conv backbones on CUDA and CPU."""
    threads: Annotated[int, Field(gt=0, le=1024)] | None = None  # torch.set_num_threads; None: torch's default
    """CPU threads torch may use (torch.set_num_threads); null leaves torch's default."""
    runs_dir: str = "runs"  # run folders are <runs_dir>/<name>/seed-<k>/
    """Folder of the run folders, <runs_dir>/<name>/seed-<k>/."""
    system_metrics: bool = False
    """Log CPU, memory, disk, network and (with pynvml) GPU use to MLflow as system/* metrics while
    training (MLflow's system metrics monitor, one sample every 10 s)."""
    # Which images BatchNorm takes its statistics over (models/batchnorm.py, issue 20). bn_group: groups of
    # that many images of the global batch (the study: 32, its 4 GPUs x 32), the same groups for any number
    # of processes; null: each process's whole batch. sync_bn: SyncBatchNorm over all processes (CUDA only).
    sync_bn: bool = False
    """Distributed runs (CUDA only): SyncBatchNorm, statistics over all processes' batches."""
    bn_group: PositiveInt | None = None
    """Ghost batch norm: BatchNorm statistics over groups of this many images (with their rotation copies)
    of the global batch, the same groups on 1, 2 or 4 processes (the study: 32, its 4 GPUs x 32); each
    process's batch must hold whole groups. null: each process's whole batch."""
    bn_split: PositiveInt = 1
    """Replaced by bn_group: K parts of each process's batch gave different statistics on different numbers
    of processes. Only 1 (no effect) is accepted."""


class TrackingSpec(Section):
    uri: str | None = None  # None: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    """MLflow tracking URI; null: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."""
    # A name, never a path: it also names the artifact folder mlartifacts/<experiment>/ (issue 9).
    experiment: str = Field("auxcli", pattern=NAME_PATTERN)
    """MLflow experiment the runs are recorded in."""


class Spec(Section):
    name: str = Field(pattern=NAME_PATTERN)
    """Names the run folder and the MLflow runs (<name>-s<seed>); unique within a suite."""
    seeds: list[Seed] = Field(default=[0], min_length=1, max_length=1000)
    """One run per seed; the report averages over them."""
    data: DataSpec = DataSpec()
    """The data set."""
    model: ModelSpec = ModelSpec()
    """The backbone."""
    task: TaskSpec = TaskSpec()
    """Main and auxiliary tasks."""
    augment: AugmentSpec = AugmentSpec()
    """Training augmentation, applied in the order crop, flip, cutout, ricap."""
    train: TrainSpec = TrainSpec()
    """Optimizer and schedule (defaults: the study's recipe)."""
    transfer: TransferSpec | None = None
    """Start from another model's backbone (linear probe or fine-tune); null: train from scratch."""
    runtime: RuntimeSpec = RuntimeSpec()
    """Where and how the run executes; no effect on what is trained."""
    tracking: TrackingSpec = TrackingSpec()
    """Where the runs are recorded in MLflow."""

    @model_validator(mode="before")
    @classmethod
    def _augment_defaults_follow_image_size(cls, data: Any) -> Any:
        # The study's pad 4 and Cutout 16 are fractions of its 32x32 images (1/8 and 1/2); an unwritten
        # padding or Cutout size keeps those fractions at data.image_size. See `scaled_augment_defaults`.
        if not isinstance(data, dict):
            return data
        section = data.get("data")
        size = section.get("image_size") if isinstance(section, dict) else getattr(section, "image_size", None)
        augment = data.get("augment", {})
        if not isinstance(size, int) or size == 32 or not isinstance(augment, dict):
            return data
        return {**data, "augment": scaled_augment_defaults(augment, size)}

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Spec:
        problems = cross_field_problems(self)
        if problems:
            raise CrossFieldErrors(problems)
        return self

    def to_plain(self) -> dict[str, Any]:
        """The resolved spec as plain YAML-able data, with the contract's key names (`from`)."""
        return self.model_dump(mode="json", by_alias=True)


def scaled_augment_defaults(augment: dict[str, Any], image_size: int) -> dict[str, Any]:
    """`augment` with the unwritten sizes filled in for `image_size`-pixel images (the documented rule):

    - `crop.padding` = image_size // 8 (the study's 4 at 32), so the crop-offset grid has
      (2 * padding + 1)^2 positions and its 3x3 blocks (`augment/crop.py`) cover the same fraction
      of the image at every size;
    - `cutout.size` = image_size // 2 (the study's 16 at 32).
    RICAP's boundary and the segmentation targets are defined per pixel of the image and need no rule.
    A section that is absent or null stays so; written values are kept as written.
    """
    out = dict(augment)
    for key, field_name, value in (("crop", "padding", image_size // 8), ("cutout", "size", max(1, image_size // 2))):
        section = out.get(key, {} if key == "crop" else None)  # crop is on by default, cutout off
        if isinstance(section, dict) and field_name not in section:
            out[key] = {**section, field_name: value}
    return out


class CrossFieldProblem(NamedTuple):
    path: str  # the dotted field to change
    message: str
    allowed: str | None = None
    at: str | None = None  # the field that asked for `path`: where to point when `path` was not written


class CrossFieldErrors(Exception):
    """Raised from the model validator; not a ValueError, so pydantic lets it through unwrapped."""

    def __init__(self, problems: list[CrossFieldProblem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))


def _mapping_file_problem(path: str) -> str | None:
    """What is wrong with an existing `data.superclasses` file that `run` would refuse; None when it is a
    regular file within the limit or does not exist yet (DVC may pull it)."""
    import os
    import stat

    from auxcli.project import anchored
    from auxcli.safeyaml import MAX_FILE_BYTES

    try:
        info = os.stat(anchored(path))
    except (OSError, ValueError):  # missing (DVC may pull it), or a name the OS cannot hold (refused elsewhere)
        return None
    if not stat.S_ISREG(info.st_mode):
        return f"{anchored(path)} is not a regular file (a folder, FIFO, socket or device)"
    if info.st_size > MAX_FILE_BYTES:
        return f"{anchored(path)} is {info.st_size:,} bytes"
    return None


def cross_field_problems(spec: Spec) -> list[CrossFieldProblem]:
    """Rules that tie fields together, as (field path, what is wrong, what is allowed, field that asked)."""
    problems: list[CrossFieldProblem] = []

    def add(path: str, msg: str, allowed: str | None = None, at: str | None = None) -> None:
        problems.append(CrossFieldProblem(path, msg, allowed, at))

    model, task, aug, train = spec.model, spec.task, spec.augment, spec.train
    if model.backbone == "linear":
        if "depth" in model.model_fields_set and model.depth is not None:
            add("model.depth", "the linear backbone has no depth", "null, or a resnet/pyramidnet backbone")
    elif model.depth is None:
        add("model.depth", f"{model.backbone} needs a depth", allowed_depths(model.backbone), at="model.backbone")
    elif not valid_depth(model.backbone, model.depth):
        add("model.depth", f"{model.depth} is not a valid {model.backbone} depth", allowed_depths(model.backbone))
    if model.alpha is not None and model.backbone != "pyramidnet":
        add("model.alpha", "alpha is the PyramidNet widening factor", "null unless model.backbone is pyramidnet")
    if model.backbone == "pyramidnet" and model.alpha is None:
        add("model.alpha", "pyramidnet needs its widening factor", "a positive number (270 in the study)",
            at="model.backbone")

    if model.widen_factor is not None and model.backbone != "wrn":
        add("model.widen_factor", "widen_factor is the Wide ResNet widening factor",
            "null unless model.backbone is wrn")
    if model.backbone == "wrn" and model.widen_factor is None:
        add("model.widen_factor", "wrn needs its widening factor", "a positive integer (10 for WRN-28-10)",
            at="model.backbone")
    if model.dropout > 0 and model.backbone != "wrn":
        add("model.dropout", "dropout sits between the convs of a Wide ResNet block", "0 unless model.backbone is wrn")

    aux = task.aux
    needs = {"crop": "crop", "cutout": "cutout", "ricap": "ricap", "rotation": "rotation"}
    if aux is not None and aux.kind in needs and getattr(aug, needs[aux.kind]) is None:
        add(f"augment.{needs[aux.kind]}", f"the {aux.kind} auxiliary task needs the {aux.kind} augmentation",
            f"an augment.{needs[aux.kind]} mapping, or another task.aux.kind", at="task.aux.kind")
    if aux is not None and aux.kind in ("cutout", "ricap") and model.backbone == "linear":
        add("task.aux.kind", "segmentation heads need a convolutional feature map",
            "labelset or crop with the linear backbone")
    if task.labels == "none" and aux is None:
        add("task.labels", "labels: none trains the auxiliary task alone, but task.aux is missing",
            "gt, superclass or random; or add task.aux")
    if aux is not None and aux.kind == "labelset" and aux.labels == task.labels:
        add("task.aux.labels", f"the auxiliary head would repeat the main head's label set ({aux.labels})",
            "a label set other than task.labels")
    data = spec.data
    label_paths = (("task.labels", task.labels), ("task.aux.labels", getattr(aux, "labels", None)))
    if data.dataset == "cifar10":
        for path, value in label_paths:
            if value == "superclass":
                add(path, "CIFAR-10 has no superclasses", "gt or random", at="data.dataset")
    if data.dataset == "folder" and data.superclasses is None:
        for path, value in label_paths:
            if value == "superclass":
                add(path, "an image-folder data set has superclasses only with a class -> superclass mapping",
                    "gt or random; or set data.superclasses to a YAML file mapping each class to its superclass",
                    at="data.dataset")
    from auxcli.credentials import ALLOWED, has_password

    if has_password(spec.tracking.uri):
        add("tracking.uri", "a password in the URI would be written into run records, MLflow params and bundles",
            ALLOWED)
    if data.superclasses is not None:  # `validate` says what `run` would refuse (a FIFO hangs a reader)
        problem = _mapping_file_problem(data.superclasses)
        if problem:
            add("data.superclasses", problem, "a regular YAML file of at most 1 MiB")
    if data.superclasses is not None and data.dataset != "folder":
        add("data.superclasses", f"{data.dataset} brings its own label sets",
            "null, or data.dataset: folder")
    size = data.image_size
    if aug.cutout is not None and aug.cutout.size > size:
        add("augment.cutout.size", f"{aug.cutout.size} is larger than the {size}x{size} image", f"1..{size}")
    if aug.crop is not None and aug.crop.padding > size // 2:
        add("augment.crop.padding", f"{aug.crop.padding} pixels of padding on a {size}x{size} image",
            f"0..{size // 2}")
    if task.joint == "sla":
        if aug.rotation is None:
            add("augment.rotation", "SLA's joint labels pair each class with the rotation of the copy",
                "an augment.rotation mapping (copies: all, as in SLA)", at="task.joint")
        if aux is not None:
            add("task.aux", "task.joint: sla trains one joint head; it replaces the auxiliary head",
                "null with task.joint: sla", at="task.joint")
        if task.labels == "none":
            add("task.labels", "SLA's joint labels need a label set", "gt, superclass or random", at="task.joint")
        if aug.ricap is not None:
            add("augment.ricap", "SLA's joint labels and aggregated inference need one label per image",
                "null with task.joint: sla", at="task.joint")

    ms = train.milestones
    if any(b <= a for a, b in itertools.pairwise(ms)):
        add("train.milestones", f"{ms} is not strictly increasing", "increasing epochs below train.epochs")
    if train.nesterov and train.momentum == 0:
        add("train.nesterov", "Nesterov momentum needs a momentum", "nesterov: false, or train.momentum > 0",
            at="train.momentum")
    if ms and ms[-1] >= train.epochs:
        add("train.milestones", f"milestone {ms[-1]} is not below train.epochs ({train.epochs})",
            "increasing epochs below train.epochs", at="train.epochs")
    runtime = spec.runtime
    if runtime.sync_bn and runtime.device in ("cpu", "mps"):
        add("runtime.sync_bn", f"SyncBatchNorm needs CUDA (nccl); runtime.device is {runtime.device}",
            "false on CPU (runtime.bn_group: G gives groups of G images instead)", at="runtime.device")
    if runtime.bn_split != 1:
        same = max(1, train.batch_size // runtime.bn_split)
        add("runtime.bn_split", f"bn_split: {runtime.bn_split} (parts of each process's batch) gave different "
            "BatchNorm statistics on different numbers of processes and was replaced by runtime.bn_group, the "
            "images per BatchNorm group", f"1 (or omit it); runtime.bn_group: {same} is what bn_split: "
            f"{runtime.bn_split} meant on one process")
    if runtime.sync_bn and runtime.bn_group is not None:
        add("runtime.bn_group", "ghost batch norm and SyncBatchNorm contradict each other",
            "null with runtime.sync_bn: true", at="runtime.sync_bn")
    elif runtime.bn_group is not None and train.batch_size % runtime.bn_group:
        add("runtime.bn_group", f"a batch of {train.batch_size} images does not split into BatchNorm groups of "
            f"{runtime.bn_group}", f"a divisor of train.batch_size ({train.batch_size})", at="train.batch_size")
    if len(set(spec.seeds)) != len(spec.seeds):
        add("seeds", f"{spec.seeds} repeats a seed", "distinct non-negative integers")

    if spec.transfer is not None:
        if task.labels == "none":
            add("task.labels", "a transfer trains a fresh head on a label set", "gt, superclass or random",
                at="transfer")
        if spec.transfer.from_ == spec.name:
            add("transfer.from", "a spec cannot transfer from itself", "another spec name, a path or a run id")
        if spec.transfer.mode == "finetune" and "bn" in spec.transfer.model_fields_set:
            add("transfer.bn", "bn selects the linear-probe protocol", "omit it with mode: finetune")
        if model.backbone == "linear":
            add("transfer", "the linear backbone has no feature extractor to transfer",
                "null, or a resnet/pyramidnet backbone")
    return problems



def launch_problems(spec: Spec, *, world_size: int, device_type: str) -> list[CrossFieldProblem]:
    """Rules that need the torchrun world size and the resolved device, known only once processes run:
    `train.batch_size` is the global batch, split into equal per-process batches (each holding whole
    `runtime.bn_group` groups), and SyncBatchNorm needs CUDA (`runtime.device: auto` on CPU)."""
    problems: list[CrossFieldProblem] = []
    batch, group = spec.train.batch_size, spec.runtime.bn_group
    if batch % world_size:
        problems.append(CrossFieldProblem(
            "train.batch_size", f"the global batch of {batch} images does not split into {world_size} equal "
            f"per-process batches (torchrun world size {world_size})", f"a multiple of {world_size}"))
    elif group is not None and (batch // world_size) % group:
        local = batch // world_size
        problems.append(CrossFieldProblem(
            "runtime.bn_group", f"each of the {world_size} processes gets {local} of the {batch} images, which do "
            f"not split into BatchNorm groups of {group} (a group cannot span processes)",
            f"a divisor of {local}; or a number of processes that divides {batch // group}; or runtime.sync_bn: true "
            "(CUDA) for statistics over all processes"))
    if spec.runtime.sync_bn and device_type != "cuda":
        problems.append(CrossFieldProblem(
            "runtime.sync_bn", f"SyncBatchNorm needs CUDA (nccl); this run's device is {device_type}",
            "false on CPU (runtime.bn_group: G gives groups of G images instead)"))
    return problems
