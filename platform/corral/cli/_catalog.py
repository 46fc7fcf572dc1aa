"""``corral catalog`` and ``corral lineage``: browse base models and check license lineage."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from .. import catalog


def list_catalog(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the base models in Corral's catalog with their size, license and commercial use."""
    entries = list(catalog.entries())
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    table = Table(title="Corral model catalog")
    for column in ("NAME", "FAMILY", "PARAMS", "ARCH", "CONTEXT", "LICENSE", "COMMERCIAL", "DERIVED FROM"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e.name,
            e.family,
            _params(e.params),
            e.architecture,
            str(e.context_length),
            e.license_info().display_name,
            e.commercial_use,
            e.derived_from or "",
        )
    Console(width=200).print(table)


def _params(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def show_lineage(
    model: Annotated[str, typer.Argument(help="Catalog name of the base model.")],
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", "-d", help="Catalog dataset trained on; repeat for more.")
    ] = None,
    output: Annotated[str | None, typer.Option("--output", help="Name of the fine-tuned result.")] = None,
    intended_use: Annotated[str, typer.Option("--intended-use", help="research or commercial.")] = "research",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show the license lineage of a model (and its training data) and whether an intended use is allowed."""
    if intended_use not in ("research", "commercial"):
        typer.echo(f"error: --intended-use {intended_use!r} is not allowed (allowed: research, commercial)", err=True)
        raise typer.Exit(2)
    use: Literal["research", "commercial"] = "commercial" if intended_use == "commercial" else "research"
    try:
        chain = catalog.lineage(model, datasets=list(dataset or ()), output=output)
    except KeyError as exc:
        typer.echo(f"error: {exc.args[0] if exc.args else exc}", err=True)
        raise typer.Exit(2) from None
    decision = catalog.check_policy(chain, use)
    if as_json:
        typer.echo(json.dumps({"lineage": chain.model_dump(mode="json"), "decision": decision.model_dump(mode="json")}))
    else:
        for link in chain.links:
            typer.echo(
                f"{link.kind:8} {link.relation:14} {link.name:24} {link.license.display_name} "
                f"[{link.license.commercial_use}]"
            )
        typer.echo(f"{intended_use} use: {'allowed' if decision.allowed else 'REFUSED'} ({decision.reason})")
        if not decision.conditions:
            typer.echo(decision.message)
        for condition in decision.conditions:
            typer.echo(f"  - {condition}")
    if not decision.allowed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("catalog")(list_catalog)
    app.command("lineage")(show_lineage)
