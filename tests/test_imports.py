"""Every module imports on its own, first: a user's script may start from any of them (e.g.
`from auxcli.models.resnet import ...`), and an import cycle only shows when its entry point is hit."""

import subprocess
import sys

# One interpreter for all modules (torch loads once); auxcli's modules are dropped before each import.
IMPORT_EACH_FIRST = """
import importlib, pkgutil, sys
import auxcli
names = sorted(m.name for m in pkgutil.walk_packages(auxcli.__path__, "auxcli.")
               if not m.name.endswith("__main__"))  # __main__ runs the CLI
assert len(names) > 50, names
for name in names:
    for loaded in [m for m in sys.modules if m == "auxcli" or m.startswith("auxcli.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        print(f"{name}: {type(exc).__name__}: {exc}")
"""


def test_every_module_imports_first_in_a_fresh_package():
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", f"modules that fail when imported first:\n{result.stdout}"
