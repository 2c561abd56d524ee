"""Reading YAML that a user, a shared drive or a DVC remote handed us: bounded, typed, never executed.

Specs, bases, params files and `--set` values all come through here, and so does every other YAML file
the package reads (resolved specs in run folders, `dvc.lock` and `.dvc` files, superclass mappings):
`read_yaml_file` is the one way to load a YAML file. What is refused, with the line and
column where it was found (each a class of hostile or broken input, issue 9):

- anything that is not a regular file (a folder, a FIFO that would block forever, a device), files over
  1 MiB, text that is not UTF-8, and control characters other than tab and newlines;
- explicit tags other than YAML's standard scalar and collection tags (`!foo`, `!!binary`, `!!set`,
  `!!python/...`): a spec holds plain data only;
- merge keys (`<<: *base`), which YAML 1.2 dropped; `extends:` is the way to share settings;
- aliases that refer to their own ancestor (a recursive document) and documents whose aliases expand
  to more than `MAX_NODES` nodes (the "billion laughs" bomb: a 1 KB file that expands to 10**9 nodes);
- nesting deeper than `MAX_DEPTH` (a spec needs 4 levels; recursion limits are reached near 300).

The checks walk ruamel's composed node graph iteratively, before any Python object is constructed.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from auxcli.errors import Problem, SpecError

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 20_000  # the largest real spec has about 100 nodes
_STANDARD_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in
                           ("str", "int", "float", "bool", "null", "map", "seq", "timestamp"))
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def read_text_file(path: Path, what: str, allowed: str) -> str:
    """The UTF-8 text of a regular file of at most 1 MiB; `SpecError` naming `path` otherwise.

    `what` names the file in messages ("spec file", "params file"); `allowed` says what it should be.
    """
    source = str(path)

    def fail(message: str, line: int | None = None, col: int | None = None) -> SpecError:
        return SpecError([Problem(source, line, col, "", message, allowed)])

    try:
        info = os.stat(path)
    except FileNotFoundError:  # what a YAML file should hold is beside the point
        raise SpecError([Problem(source, None, None, "", f"no such file ({what})")]) from None
    except OSError as exc:
        raise fail(f"cannot read this {what}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail(f"is a folder, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise fail(f"is not a regular file (a FIFO, socket or device), so it cannot be a {what}")
    if info.st_size > MAX_FILE_BYTES:
        raise fail(f"is {info.st_size:,} bytes; a {what} is at most {MAX_FILE_BYTES:,}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read this {what}: {exc.strerror}") from None
    return decode_text(data, source, allowed)


def decode_text(data: bytes, source: str, allowed: str) -> str:
    """UTF-8 without control characters (tab, LF and CR allowed), a leading BOM dropped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data[:exc.start].decode("utf-8", errors="replace"))
        raise SpecError([Problem(source, line, col, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x})",
                                 allowed)]) from None
    text = text.removeprefix("\ufeff")
    check_control_characters(text, source, allowed)
    return text


def check_control_characters(text: str, source: str, allowed: str | None) -> None:
    bad = _CONTROL.search(text)
    if bad:
        line, col = _line_col(text[:bad.start()])
        raise SpecError([Problem(source, line, col, "", f"control character U+{ord(bad.group()):04X} in the text",
                                 allowed)])


def parse_yaml(text: str, source: str, allowed: str, path: str = "", *, value: bool = False) -> Any:
    """One YAML 1.2 document as ruamel round-trip data (with line numbers), after the checks above.

    `path` is the field the text belongs to; `value=True` for a `--set` value (messages without a line).
    Raises `SpecError`.
    """
    def fail(message: str, line: int | None, col: int | None) -> SpecError:
        if value:
            message, line, col = message.replace("invalid YAML", "the value is not valid YAML"), None, None
        return SpecError([Problem(source, line, col, path, message, allowed)])

    try:
        root = YAML(typ="rt", pure=True).compose(text)
        if root is not None:
            _check_graph(root, fail)
        return YAML(typ="rt", pure=True).load(text)
    except SpecError:
        raise
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = f"invalid YAML: {exc.problem or exc.context}"
        if exc.problem and exc.context and exc.context_mark:
            start = exc.context_mark
            message += f" ({exc.context} started at line {start.line + 1}, column {start.column + 1})"
        raise fail(message, line, col) from None
    except YAMLError as exc:  # reader errors (unprintable characters) and others without a mark
        raise fail(f"invalid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                   None, None) from None
    except RecursionError:
        raise fail(f"the document nests deeper than {MAX_DEPTH} levels", None, None) from None


def read_yaml_file(path: Path, what: str, allowed: str) -> Any:
    """A YAML file as plain data (`plain`), through every check above; `SpecError` naming `path` otherwise."""
    return plain(parse_yaml(read_text_file(path, what, allowed), str(path), allowed))


def plain(node: Any) -> Any:
    """ruamel's round-trip containers and scalars as plain dicts, lists, str, int, float, bool, None.

    Timestamps (`2024-01-01`) become their ISO text: no spec field is a date, and a string gets a
    readable "expected a number" where a date object would not serialise at all.
    """
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime | date):
        return node.isoformat()
    return str(node)


def _check_graph(root: Node, fail: Any) -> None:
    # Iterative depth-first walk over the composed graph; aliases are shared nodes, so each visit of a
    # shared node counts again: the count is the size of the expanded document.
    visits = 0
    ancestors: list[Node] = []
    stack: list[tuple[Node, int] | None] = [(root, 1)]
    while stack:
        item = stack.pop()
        if item is None:  # leaving a collection
            ancestors.pop()
            continue
        node, depth = item
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        visits += 1
        if visits > MAX_NODES:
            raise fail(f"the document expands to more than {MAX_NODES:,} values (an alias bomb?)", line, col)
        if depth > MAX_DEPTH:
            raise fail(f"the document nests deeper than {MAX_DEPTH} levels", line, col)
        if any(node is a for a in ancestors):
            raise fail("an alias refers to a mapping or list that contains it (a recursive document)", line, col)
        tag = getattr(node.tag, "value", node.tag)
        if tag == "tag:yaml.org,2002:merge":
            raise fail("YAML merge keys (<<) are not supported; share settings with extends: instead", line, col)
        if tag not in _STANDARD_TAGS:
            raise fail(f"the tag {tag} is not allowed; specs hold plain data (mappings, lists, strings, "
                       "numbers, booleans, null)", line, col)
        if isinstance(node, ScalarNode):
            continue
        ancestors.append(node)
        stack.append(None)
        if isinstance(node, MappingNode):
            for key, value in reversed(node.value):
                stack += [(value, depth + 1), (key, depth + 1)]
        elif isinstance(node, SequenceNode):
            stack += [(child, depth + 1) for child in reversed(node.value)]


def _line_col(before: str) -> tuple[int, int]:
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
