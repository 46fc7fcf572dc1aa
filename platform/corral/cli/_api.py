"""``corral validate`` and ``corral crds``: offline checks of resources and CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..api import validate_source
from ..api.crdgen import check_crds, write_crds

DEFAULT_CRD_DIR = Path("charts/corral/crds")


def validate(
    files: Annotated[
        list[Path],
        typer.Option("-f", "--filename", help="YAML/JSON file or directory to validate; repeat for more."),
    ],
    recursive: Annotated[
        bool, typer.Option("-R", "--recursive", help="Also read the files in subdirectories of a directory.")
    ] = False,
) -> None:
    """Validate Corral resources offline; exit 1 at the first bad file, printing every error in it."""
    total = 0
    for path in files:
        if not path.exists():
            typer.echo(f"error: {path}: no such file or directory", err=True)
            raise typer.Exit(2)
        objects, errors = validate_source(path, recursive=recursive)
        if errors:
            for error in errors:
                typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        for obj in objects:
            typer.echo(f"{path}: {obj.kind}/{obj.metadata.name} is valid")
        total += len(objects)
    typer.echo(f"{total} object(s) valid")


def crds(
    out: Annotated[Path, typer.Option("--out", help="Directory the CRD YAML files are written to.")] = DEFAULT_CRD_DIR,
    check: Annotated[
        bool, typer.Option("--check", help="Do not write: exit 1 when the files in --out differ from the API types.")
    ] = False,
) -> None:
    """Generate the CustomResourceDefinitions from the API types (or check that they are current)."""
    if check:
        diff = check_crds(out)
        if diff:
            for line in diff:
                typer.echo(f"stale: {line}", err=True)
            typer.echo(f"run `corral crds --out {out}` and commit the result", err=True)
            raise typer.Exit(1)
        typer.echo(f"CRDs in {out} are current")
        return
    for path in write_crds(out):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("validate")(validate)
    app.command("crds")(crds)
