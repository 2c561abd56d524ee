"""The study's reference numbers as data: Tables 1-5 and the curves of Figures 2-3.

Source: docs/study.md (Yamada, Iwamura, Kise, "A study of additional tasks that improve image
classification accuracy", IEICE technical report). Accuracies are fractions (99.99% -> 0.9999); Table 5
gives mean and std over 4 runs. A row's `key` is the stem of the spec that reproduces it
(`specs/paper/<key>.yaml`); scaled-down suites prefix it (`mini-table1-gt`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str  # "train" or "test"
    metric: str  # the summary metric that holds our number (auxcli.train.metrics)
    label: str


@dataclass(frozen=True)
class PaperRow:
    key: str  # spec stem, e.g. "table2-probe-random"
    label: str  # the study's row label
    values: dict[str, float]  # column name -> fraction
    std: dict[str, float] | None = None  # Table 5 only


@dataclass(frozen=True)
class PaperTable:
    id: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[PaperRow, ...]
    transfer: bool = False  # rows state the transfer protocol and the source run
    runs: int | None = None  # runs per row in the study (None: one run)
    history_metric: str = "test_acc"  # the per-epoch metric charted for this table


TRAIN = Column("train", "final_train_acc", "train acc")
TEST = Column("test", "final_test_acc", "test acc")
AUX_TRAIN = Column("train", "final_train_aux_acc", "aux train acc")

TABLES: tuple[PaperTable, ...] = (
    PaperTable(
        "table1", "Table 1: pretraining on each label set alone (PyramidNet-110), final train acc",
        (TRAIN,),
        (
            PaperRow("table1-gt", "gt (relatedness high)", {"train": 0.9999}),
            PaperRow("table1-superclass", "superclass (medium)", {"train": 0.9998}),
            PaperRow("table1-random", "random (low)", {"train": 0.9990}),
        ),
    ),
    PaperTable(
        "table2", "Table 2: linear probe, only the final FC layer retrained on gt",
        (TRAIN, TEST),
        (
            PaperRow("table1-gt", "gt (PyramidNet; plain training)", {"train": 0.9999, "test": 0.8064}),
            PaperRow("table2-probe-superclass", "superclass (PyramidNet)", {"train": 0.7720, "test": 0.6821}),
            PaperRow("table2-probe-random", "random (PyramidNet)", {"train": 0.2852, "test": 0.2277}),
            PaperRow("table2-linear-pixels", "a single FC layer on raw pixels", {"train": 0.1689, "test": 0.1453}),
            PaperRow("table2-probe-init", "untrained PyramidNet, FC layer trained",
                     {"train": 0.0125, "test": 0.0355}),
        ),
        transfer=True,
    ),
    PaperTable(
        "table3", "Table 3: transfer, the whole network fine-tuned on gt",
        (TRAIN, TEST),
        (
            PaperRow("table3-finetune-gt", "gt model", {"train": 0.9998, "test": 0.8147}),
            PaperRow("table3-finetune-superclass", "superclass model", {"train": 0.9997, "test": 0.8136}),
            PaperRow("table3-finetune-random", "random-label model", {"train": 0.9998, "test": 0.7783}),
            PaperRow("table1-gt", "random init (scratch)", {"train": 0.9999, "test": 0.8064}),
        ),
        transfer=True,
    ),
    PaperTable(
        "table4", "Table 4: the augmentation task alone (ResNet-110), final aux train acc",
        (AUX_TRAIN,),
        (
            PaperRow("table4-crop", "random crop", {"train": 0.8235}),
            PaperRow("table4-cutout", "cutout", {"train": 0.9995}),
            PaperRow("table4-ricap", "RICAP", {"train": 0.6985}),
        ),
        history_metric="test_aux_acc",  # labels: none, so there is no main test accuracy
    ),
    PaperTable(
        "table5", "Table 5: augmentation task jointly with classification (ResNet-110), test acc",
        (TEST,),
        (
            PaperRow("table5-crop-base", "random crop, no aux task", {"test": 0.7339}, {"test": 0.0039}),
            PaperRow("table5-crop-aux", "random crop, aux task", {"test": 0.7357}, {"test": 0.0035}),
            PaperRow("table5-cutout-base", "cutout, no aux task", {"test": 0.7602}, {"test": 0.0050}),
            PaperRow("table5-cutout-aux", "cutout, aux task", {"test": 0.7618}, {"test": 0.0030}),
            PaperRow("table5-ricap-base", "RICAP, no aux task", {"test": 0.7630}, {"test": 0.0059}),
            PaperRow("table5-ricap-aux", "RICAP, aux task", {"test": 0.7652}, {"test": 0.0045}),
        ),
        runs=4,
    ),
)


@dataclass(frozen=True)
class PaperFigure:
    id: str
    title: str
    metric: str  # per-epoch metric
    ylabel: str
    epochs: int  # the study plots the first 50 epochs
    curves: tuple[tuple[str, str], ...]  # (row key, label) of the fine-tuning runs
    baseline: tuple[str, str]  # scratch, drawn dotted


_FINETUNE = (("table3-finetune-gt", "from gt"), ("table3-finetune-superclass", "from superclass"),
             ("table3-finetune-random", "from random labels"))
FIGURES: tuple[PaperFigure, ...] = (
    PaperFigure("figure2", "Figure 2: training loss while fine-tuning on gt", "train_loss", "training loss",
                50, _FINETUNE, ("table1-gt", "scratch")),
    PaperFigure("figure3", "Figure 3: training accuracy while fine-tuning on gt", "train_acc",
                "training accuracy", 50, _FINETUNE, ("table1-gt", "scratch")),
)


def row_keys() -> set[str]:
    """Every spec stem the study's tables read."""
    return {row.key for table in TABLES for row in table.rows}


def match_key(name: str, keys: set[str] | None = None) -> tuple[str, str] | None:
    """(suite, row key) when `name` is a row key (suite "") or ends with `-<row key>` (suite = the prefix).

    The longest matching key wins, so `mini-table1-gt` is suite `mini`, key `table1-gt`.
    """
    keys = row_keys() if keys is None else keys
    for key in sorted(keys, key=len, reverse=True):
        if name == key:
            return "", key
        if name.endswith("-" + key):
            return name[: -len(key) - 1], key
    return None
