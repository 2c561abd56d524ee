"""Reading specs: YAML 1.2 with line numbers, `extends:` bases, `--set` overrides, readable errors.

Config flows one way: YAML file(s) -> `extends` merge -> `--set` overrides -> validated, frozen `Spec`.
Every problem is reported as `file:line:col field.path: what is wrong; allowed: ...`.

- `extends: _base.yaml` (or a list of files, relative to the spec) deep-merges the bases first, then the
  spec's own keys; mappings merge key by key, everything else (lists included) is replaced.
- Files whose name starts with `_` are bases, not specs: directory expansion skips them.
- `--set` takes DVC's `dvc exp run -S` syntax: `train.lr=0.05`, `+new.key=value`, `~key` (delete); the
  value is parsed as YAML (`1e-4` is a float under YAML 1.2).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from auxcli.errors import Problem, SpecError
from auxcli.safeyaml import check_control_characters, parse_yaml, plain, read_text_file
from auxcli.spec import CrossFieldErrors, Spec

Location = tuple[str, int | None, int | None]
MAX_KEY_DEPTH = 16
Path_ = tuple[Any, ...]


def spec_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories to the `*.yaml`/`*.yml` specs below them, sorted; bases (`_*.yaml`) skipped.

    A missing `key=value` is an override typed without `--set`: `SpecError` saying so."""
    found: list[Path] = []
    for p in map(Path, paths):
        if "=" in p.name and not p.exists():
            raise SpecError([Problem(str(p), None, None, "", f"looks like an override: use --set {p}", None)])
        if p.is_dir():
            found += sorted(f for f in p.rglob("*.y*ml") if f.suffix in (".yaml", ".yml")
                            and not f.name.startswith("_"))
        else:
            found.append(p)
    return found


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Spec:
    """Load, merge, override and validate one spec; raise `SpecError` listing every problem."""
    data, locations = read_spec_data(path, overrides)
    return validate_spec_data(data, locations, str(path))


def read_spec_data(path: str | Path, overrides: Sequence[str] = ()) -> tuple[dict, dict[Path_, Location]]:
    """The merged, overridden raw mapping and where each key of it was written."""
    data, locations = _read_with_bases(Path(path), chain=())
    for text in overrides:
        _apply_override(data, locations, text, str(path))
    return data, locations


def validate_spec_data(data: dict, locations: dict[Path_, Location], source: str) -> Spec:
    bad = _control_character_values(data, ())
    if bad:  # escapes such as "\0" reach values past the file's own check; paths and names must not hold them
        raise SpecError([_problem_at(path, "control character in the value", "printable text", locations, source)
                         for path in bad])
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_problem_from_pydantic(err, data, locations, source) for err in exc.errors()]) from None
    except CrossFieldErrors as exc:
        raise SpecError([
            _problem_at(tuple(p.path.split(".")), p.message, p.allowed, locations, source,
                        at=tuple(p.at.split(".")) if p.at else None)
            for p in exc.problems
        ]) from None


def _control_character_values(node: Any, path: Path_) -> list[Path_]:
    import re

    if isinstance(node, str):
        return [path] if re.search("[\x00-\x1f\x7f]", node) else []
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _control_character_values(value, path + (key,))]
    if isinstance(node, list):
        return [p for i, value in enumerate(node) for p in _control_character_values(value, path + (i,))]
    return []


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML text, keys in model order (what `spec.resolved.yaml` holds)."""
    out = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    yaml.dump(spec.to_plain(), out)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- reading

def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[Path_, Location]]:
    source = str(path)
    text = read_text_file(path, "spec file", "a UTF-8 YAML 1.2 mapping of at most 1 MiB")
    doc = parse_yaml(text, source, "YAML 1.2 mapping")
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, dict):
        raise SpecError([Problem(source, 1, 1, "", "the spec must be a mapping of sections",
                                 "keys such as name, seeds, data, model, task, augment, train")])
    # Missing keys point at the spec's first key (line 1 of an empty file).
    start = (doc.lc.line + 1, doc.lc.col + 1) if doc.lc.line is not None else (1, 1)
    locations: dict[Path_, Location] = {(): (source, *start)}
    _record_locations(doc, (), source, locations)
    own = plain(doc)
    bases = own.pop("extends", None)
    if bases is None:
        return own, locations
    base_list = [bases] if isinstance(bases, str) else bases
    if not isinstance(base_list, list) or not all(isinstance(b, str) for b in base_list):
        line, col = locations.get(("extends",), (source, None, None))[1:]
        raise SpecError([Problem(source, line, col, "extends", "extends must name base files",
                                 "a relative path or a list of relative paths")])
    merged: dict = {}
    merged_locations: dict[Path_, Location] = {}
    chain = chain + (path.resolve(),)
    for i, base in enumerate(base_list):
        base_path = path.parent / base
        line, col = locations.get(("extends", i), locations[("extends",)])[1:]
        if base_path.resolve() in chain:
            cycle = " -> ".join(p.name for p in chain[chain.index(base_path.resolve()):] + (base_path,))
            raise SpecError([Problem(source, line, col, "extends", f"circular extends: {cycle}",
                                     "a chain of base files without cycles")])
        if not base_path.is_file():
            raise SpecError([Problem(source, line, col, "extends", f"no such base file {str(base)!r}",
                                     f"a path relative to the folder of {path.name} ({path.parent})")])
        base_data, base_locations = _read_with_bases(base_path, chain)
        merged = _deep_merge(merged, base_data)
        merged_locations.update(base_locations)
    merged = _deep_merge(merged, own)
    merged_locations.update({k: v for k, v in locations.items() if k[:1] != ("extends",)})
    return merged, merged_locations


def _record_locations(node: Any, prefix: Path_, source: str, out: dict[Path_, Location]) -> None:
    if isinstance(node, CommentedMap):
        for key in node:
            line, col = node.lc.key(key)
            out[prefix + (key,)] = (source, line + 1, col + 1)
            _record_locations(node[key], prefix + (key,), source, out)
    elif isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            line, col = node.lc.item(i)
            out[prefix + (i,)] = (source, line + 1, col + 1)
            _record_locations(item, prefix + (i,), source, out)


def _deep_merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(data: dict, locations: dict[Path_, Location], text: str, source: str) -> None:
    """Apply one `--set` override. A mapping value merges into the mapping already there (so `train={}`
    changes nothing); to replace a whole section, delete it first: `--set '~train' --set 'train={...}'`."""
    where = f"{source} (--set {text})"
    check_control_characters(text, where, "printable text")
    delete = text.startswith("~")
    body = text[1:] if text[:1] in "~+" else text
    key, sep, raw_value = body.partition("=")
    parts = tuple(key.split("."))
    if not key or (not sep and not delete) or (sep and delete) or not all(p.strip() for p in parts):
        raise SpecError([Problem(where, None, None, key, "malformed override",
                                 "key.path=value, +key.path=value or ~key.path (dvc exp run -S syntax)")])
    if len(parts) > MAX_KEY_DEPTH:
        raise SpecError([Problem(where, None, None, key, f"the key is nested deeper than {MAX_KEY_DEPTH} levels",
                                 "a field path such as train.lr")])
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            if delete:
                return
            node[part] = {}
        node = node[part]
    if delete:
        for old in [p for p in locations if p[: len(parts)] == parts]:
            del locations[old]
        locations[parts] = (where, None, None)
        node.pop(parts[-1], None)
        return
    value = plain(parse_yaml(raw_value, where, "a YAML scalar, list or mapping", key,
                                   value=True)) if raw_value.strip() else None
    if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
        node[parts[-1]] = _deep_merge(node[parts[-1]], value)
        for sub in _leaf_paths(value, parts):
            locations[sub] = (where, None, None)
        return
    for old in [p for p in locations if p[: len(parts)] == parts]:
        del locations[old]
    locations[parts] = (where, None, None)
    node[parts[-1]] = value


def _leaf_paths(value: dict, prefix: Path_) -> list[Path_]:
    out: list[Path_] = []
    for key, sub in value.items():
        out += _leaf_paths(sub, prefix + (key,)) if isinstance(sub, dict) and sub else [prefix + (key,)]
    return out


# ---------------------------------------------------------------------------------------------- errors

def _problem_at(path: Path_, message: str, allowed: str | None,
                locations: dict[Path_, Location], source: str, at: Path_ | None = None) -> Problem:
    """Attach the location of `path` when it was written, else of `at` (the field that asked for it), else
    of the deepest written key on `path`, else of the spec's first key."""
    candidates = [path] + ([at] if at else []) + [path[:d] for d in range(len(path) - 1, -1, -1)]
    src, line, col = next((locations[c] for c in candidates if c in locations), (source, None, None))
    dotted = ".".join(str(p) for p in path)
    return Problem(src, line, col, dotted, message, allowed)


def _public_path(loc: Sequence[Any], data: Any) -> Path_:
    """Drop pydantic's internal location parts (union tags, validator names) by walking the raw data."""
    kept: list[Any] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and part < len(node)):
            kept.append(part)
            node = node[part]
        elif last and isinstance(node, dict):
            kept.append(part)  # a missing field: not in the data, but it is the field's name
    return tuple(kept)


_TYPE_ALLOWED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "a string",
    "finite_number": "a finite number (no .inf or .nan)", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "missing": "a value for this required field", "none_required": "null (only labelset aux tasks take labels)",
}


def _fields_of(path: Path_, data: dict) -> list[str] | None:
    """Field names of the model found at `path` (used to list allowed keys for unknown ones)."""
    model: Any = Spec
    node: Any = data
    for part in path:
        if isinstance(part, int):
            return None
        field = getattr(model, "model_fields", {}).get(part) or next(
            (f for f in getattr(model, "model_fields", {}).values() if f.alias == part), None)
        if field is None:
            return None
        node = node.get(part) if isinstance(node, dict) else None
        model = _model_in(field.annotation, node)
        if model is None:
            return None
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_in(annotation: Any, node: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `X | None` or the aux union (chosen by `kind`)."""
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    candidates = [a for a in _flatten_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(candidates) == 1:
        return candidates[0]
    kind = node.get("kind") if isinstance(node, dict) else None
    for c in candidates:
        if kind in get_args(c.model_fields["kind"].annotation) if "kind" in c.model_fields else False:
            return c
    return None


def _flatten_args(annotation: Any) -> list[Any]:
    from typing import get_args

    args = get_args(annotation)
    if not args:
        return [annotation]
    out: list[Any] = []
    for a in args:
        out += _flatten_args(a)
    return out


def _problem_from_pydantic(err: dict, data: dict, locations: dict[Path_, Location], source: str) -> Problem:
    path = _public_path(err["loc"], data)
    kind, ctx = err["type"], err.get("ctx", {})
    message = err["msg"]
    allowed = _TYPE_ALLOWED.get(kind)
    if kind == "literal_error":
        allowed = ctx.get("expected")
        message = f"{err.get('input')!r} is not one of the choices"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        allowed = "kind: " + str(ctx.get("expected_tags", "labelset, crop, cutout, ricap"))
        path = path + ("kind",) if path[-1:] != ("kind",) else path
        message = f"unknown kind {ctx.get('tag')!r}" if kind == "union_tag_invalid" else "missing kind"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"expected a mapping, got {type(err.get('input')).__name__} {err.get('input')!r}"
    elif kind == "extra_forbidden":
        fields = _fields_of(path[:-1], data)
        message = f"unknown key {path[-1]!r}"
        allowed = ", ".join(fields) if fields else None
    elif kind == "string_pattern_mismatch" and path[-1:] in (("name",), ("experiment",)):
        message = f"{err.get('input')!r} is not a file-system-safe name"
        allowed = "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
    elif kind == "string_pattern_mismatch":
        allowed = f"a string matching {ctx.get('pattern')}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}",
                 "less_than": "< {lt}", "less_than_equal": "<= {le}"}[kind]
        allowed = "a number " + bound.format(**{k: ctx.get(k) for k in ("gt", "ge", "lt", "le")})
    elif kind in ("too_short", "too_long"):
        allowed = f"a list of {ctx.get('min_length', 1)} or more items" if kind == "too_short" else None
    return _problem_at(path, message, allowed, locations, source)


PIPELINE_KEYS: tuple[str, ...] = ("suite",)  # params.yaml keys that configure the DVC pipeline, not the specs
# Keys that would rename every stage's outputs (runs/<name>/, results/<name>/) behind dvc.yaml's back: one
# `name` for a whole suite trains the specs into one folder and `dvc repro` then misses their outputs.
OUTPUT_NAMING_KEYS: tuple[str, ...] = ("name", "runtime.runs_dir")


def params_overrides(path: str | Path) -> list[str]:
    """A params file (a YAML mapping, e.g. DVC's params.yaml) as `--set` overrides, leaf by leaf; the
    pipeline's own keys (`PIPELINE_KEYS`) are not overrides and are left out."""
    source = str(path)
    text = read_text_file(Path(path), "params file", "a UTF-8 YAML mapping of spec keys (DVC's params.yaml)")
    doc = plain(parse_yaml(text, source, "a YAML mapping of spec keys"))
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise SpecError([Problem(source, 1, 1, "", "a params file must be a mapping", "keys of the spec")])

    def leaves(node: dict, prefix: str) -> list[str]:
        out: list[str] = []
        for key, value in node.items():
            if isinstance(value, dict):  # an empty mapping merges nothing, so it adds no override
                out += leaves(value, f"{prefix}{key}.")
            else:
                out.append(f"{prefix}{key}={_yaml_value(value)}")
        return out

    overrides = leaves({k: v for k, v in doc.items() if k not in PIPELINE_KEYS}, "")
    naming = [o.partition("=")[0] for o in overrides if o.partition("=")[0] in OUTPUT_NAMING_KEYS]
    if naming:
        raise SpecError([Problem(source, None, None, key, "a params file cannot rename the specs' outputs (the "
                                 "DVC stages' runs/<name>/ and results/ folders)",
                                 "set it in the spec itself, or use `auxcli run --set` outside the pipeline")
                         for key in naming])
    return overrides


def _yaml_value(value: Any) -> str:
    """A plain value as YAML flow text that `--set` parses back to the same value (`.inf` included)."""
    import json
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)
