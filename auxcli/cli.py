"""The `auxcli` command line: thin commands that parse, load the spec and call one function.

Errors are `AuxcliError`s raised below; `_Group.invoke` turns them into one paragraph on stderr and the
error's exit code, so no command handles errors itself. Heavy imports (torch, mlflow) happen inside the
commands, which keeps `auxcli validate` and `--help` fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from auxcli.errors import AuxcliError, SpecError


class _Group(TyperGroup):
    def invoke(self, ctx):  # noqa: ANN001 - click's signature
        try:
            return super().invoke(ctx)
        except AuxcliError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False,
                  help="Declarative image-classification experiments with auxiliary tasks.")
data_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Create and check data sets.")
app.add_typer(data_app, name="data")

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-S", help="Override a spec field, e.g. train.lr=0.05 (dvc exp run -S syntax)."),
]
SpecPaths = Annotated[list[Path], typer.Argument(help="Spec files or directories of specs.")]


@app.command()
def validate(paths: SpecPaths, set_: SetOption = None) -> None:
    """Validate specs: `ok` per file, or one line per problem (exit code 2)."""
    from auxcli.specfile import load_spec, spec_files

    files = spec_files(paths)
    if not files:
        raise SpecError([_no_specs(paths)])
    failed = False
    for file in files:
        try:
            load_spec(file, set_ or ())
            typer.echo(f"ok {file}")
        except SpecError as exc:
            failed = True
            typer.echo(str(exc), err=True)
    if failed:
        raise typer.Exit(2)


@app.command()
def schema(out: Annotated[Optional[Path], typer.Option(help="Write here instead of stdout.")] = None) -> None:
    """Print the spec's JSON Schema (draft-07), for editor completion."""
    from auxcli.schema import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {out}")


def _no_specs(paths: list[Path]):
    from auxcli.errors import Problem

    return Problem(", ".join(map(str, paths)), None, None, "", "no spec files found", "*.yaml files or folders")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
