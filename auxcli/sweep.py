"""Sweeps: `--set key=a,b` makes a grid of runs, as Hydra's multirun does.

Hydra's rule (hydra.cc, "Multi-run" and "Override grammar"): a comma-separated list of values at the top
level of an override's value is a sweep; `[a,b]` (brackets), `{...}` and quoted strings are one value.
So `--set train.lr=0.1,0.05 --set seeds=[0,1]` is two points, each training seeds 0 and 1, and two swept
keys make their cartesian product, in the order the overrides were given.

Every point is a spec of its own, named `<name>-<leaf><value>` per swept key (`table1-gt-lr0.05`,
`x-backbone-linear`), so points have their own run folders and MLflow runs. A transfer whose source spec
is swept along with it transfers from the source of its own point.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from auxcli.errors import Problem, SpecError
from auxcli.spec import Spec


class Loaded(NamedTuple):
    """One spec of a (swept) set: its file, the validated spec, and the overrides that make it from the file."""

    file: Path
    spec: Spec
    overrides: list[str]


@dataclass(frozen=True)
class Axis:
    """One swept key: the override's key (with its `+` prefix, if any) and the values it takes."""

    key: str
    values: tuple[str, ...]

    @property
    def leaf(self) -> str:
        return self.key.lstrip("+").split(".")[-1]


@dataclass(frozen=True)
class Grid:
    """Overrides that hold for every point, and the swept axes."""

    fixed: tuple[str, ...]
    axes: tuple[Axis, ...]

    def points(self) -> list[tuple[list[str], str]]:
        """Each point's overrides (fixed ones first) and its name suffix ('' without a sweep)."""
        if not self.axes:
            return [(list(self.fixed), "")]
        out = []
        for values in itertools.product(*(axis.values for axis in self.axes)):
            overrides = list(self.fixed) + [f"{axis.key}={value}" for axis, value in zip(self.axes, values)]
            out.append((overrides, "-".join(_label(self._leaf(axis), value)
                                            for axis, value in zip(self.axes, values))))
        return out

    def describe(self) -> str:
        """What `auxcli plan` prints first: one line per axis and the number of points."""
        if not self.axes:
            return ""
        lines = [f"sweep: {axis.key.lstrip('+')} in [{', '.join(axis.values)}]" for axis in self.axes]
        count = 1
        for axis in self.axes:
            count *= len(axis.values)
        sizes = " x ".join(str(len(axis.values)) for axis in self.axes)
        return "\n".join(lines + [f"grid: {sizes + ' = ' if len(self.axes) > 1 else ''}{count} points per spec"])

    def _leaf(self, axis: Axis) -> str:
        # Two swept keys with one leaf name (a.lr, b.lr) keep their full dotted path apart.
        same = [a for a in self.axes if a.leaf == axis.leaf]
        return axis.key.lstrip("+") if len(same) > 1 else axis.leaf


def split_values(value: str) -> list[str]:
    """The value's top-level comma-separated parts; brackets, braces and quotes hold commas in."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(value):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts]


def parse_grid(overrides: Sequence[str]) -> Grid:
    """Split overrides into fixed ones and swept axes (a key swept twice is an error)."""
    fixed: list[str] = []
    axes: list[Axis] = []
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep or text.startswith("~"):
            fixed.append(text)
            continue
        values = split_values(value)
        if len(values) == 1:
            fixed.append(text)
            continue
        if any(not v for v in values) or key.lstrip("+") in {a.key.lstrip("+") for a in axes}:
            raise SpecError([Problem(f"--set {text}", None, None, key.lstrip("+"),
                                     "a sweep needs one non-empty value between commas, once per key",
                                     "key=a,b,c (a grid over a, b, c); [a,b] for one list value")])
        axes.append(Axis(key, tuple(values)))
    return Grid(tuple(fixed), tuple(axes))


def load_grid(files: Sequence[Path], overrides: Sequence[str]) -> tuple[Grid, list[Loaded]]:
    """Every (file, point) as a validated spec: the files' specs once without a sweep, else once per
    point, renamed `<name>-<suffix>`. Problems of all files are collected into one `SpecError`."""
    from auxcli.specfile import load_spec

    grid = parse_grid(overrides)
    loaded: list[Loaded] = []
    problems: list[Problem] = []
    for point_overrides, suffix in grid.points():
        point: list[Loaded] = []
        for file in files:
            try:
                spec = load_spec(file, point_overrides)
                if suffix:
                    renamed = point_overrides + [f"name={spec.name}-{suffix}"]
                    spec = load_spec(file, renamed)
                    point.append(Loaded(file, spec, renamed))
                else:
                    point.append(Loaded(file, spec, point_overrides))
            except SpecError as exc:
                problems += exc.problems
        loaded += _follow_sources(point, suffix)
    if problems:
        raise SpecError(_unique(problems))
    return grid, loaded


def _follow_sources(point: list[Loaded], suffix: str) -> list[Loaded]:
    """Within one point, a transfer from a swept spec of the set takes that point's copy of it."""
    if not suffix:
        return point
    names = {item.spec.name for item in point}
    out = []
    for item in point:
        spec = item.spec
        if spec.transfer is not None and f"{spec.transfer.from_}-{suffix}" in names:
            source = f"{spec.transfer.from_}-{suffix}"
            transfer = spec.transfer.model_copy(update={"from_": source})
            item = Loaded(item.file, spec.model_copy(update={"transfer": transfer}),
                          item.overrides + [f"transfer.from={source}"])
        out.append(item)
    return out


def _label(leaf: str, value: str) -> str:
    """`lr` + `0.05` -> `lr0.05`; `backbone` + `linear` -> `backbone-linear`; unsafe characters -> `_`."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "_", value.strip("'\"")).strip("_") or "empty"
    return f"{leaf}{value}" if re.match(r"[-.\d]", value) else f"{leaf}-{value}"


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: dict[str, Problem] = {}
    for problem in problems:
        seen.setdefault(str(problem), problem)
    return list(seen.values())
