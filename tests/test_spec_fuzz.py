"""Fuzzing spec validation (issue 9): random spec documents, random bytes and random `--set` strings
either validate to a `Spec` or fail with a `SpecError` naming the file; nothing else, never a hang."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from auxcli.errors import SpecError
from auxcli.spec import Spec
from auxcli.specfile import load_spec

FOLDER = Path(tempfile.mkdtemp(prefix="auxcli-fuzz-"))
KEYS = ["name", "seeds", "data", "model", "task", "augment", "train", "runtime", "tracking", "transfer", "extends",
        "epochs", "lr", "depth", "alpha", "base_width", "backbone", "aux", "kind", "labels", "weight", "threads",
        "device", "experiment", "uri", "milestones", "dataset", "synthetic", "crop", "cutout", "ricap", "from"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["resnet", "pyramidnet", "linear", "gt", "superclass", "random", "crop", "cutout",
                                     "ricap", "labelset", "cpu", "auto", "x", "init", "finetune", "synthetic"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner,
                                                 max_size=5)), max_leaves=25)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(content: bytes, overrides: list[str] = ()) -> None:
    path = FOLDER / "fuzz.yaml"
    path.write_bytes(content)
    try:
        spec = load_spec(path, overrides)
    except SpecError as exc:
        assert exc.problems and "fuzz.yaml" in str(exc)
        return
    assert isinstance(spec, Spec)


def _dump(doc: dict) -> bytes:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(doc, out)
    return out.getvalue().encode("utf-8", errors="surrogatepass")


@SETTINGS
@given(DOCUMENTS)
def test_random_spec_documents_validate_or_fail_cleanly(doc):
    _load(_dump(doc))


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_random_sections_on_a_valid_spec_validate_or_fail_cleanly(extra):
    _load(_dump({"name": "fuzz", **extra}))


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_random_bytes_validate_or_fail_cleanly(content):
    _load(content)


SET_ALPHABET = st.sampled_from(list("abcdefghijklmnopqrstuvwxyz._~+=-[]{}:,&*!|>'\"#%@ 0123456789\\\n\t\x00\x1b"))
SET_TEXT = st.one_of(
    st.text(SET_ALPHABET, max_size=40),
    st.tuples(st.sampled_from(["", "+", "~"]), st.lists(st.sampled_from(KEYS), min_size=1, max_size=4),
              st.text(SET_ALPHABET, max_size=25)).map(lambda t: f"{t[0]}{'.'.join(t[1])}={t[2]}"),
)


@SETTINGS
@given(st.lists(SET_TEXT, min_size=1, max_size=3))
def test_random_set_strings_validate_or_fail_cleanly(overrides):
    _load(b"name: fuzz\ntrain: {epochs: 3, milestones: [1]}\n", overrides)
