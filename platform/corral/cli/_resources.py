"""``corral apply | get | describe | delete``: the kubectl verbs for Corral kinds, over the control API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from ..api import DocumentError, kind_for_name, load_documents
from ..api.v1alpha1 import Resource
from ..client import APIStatusError, CorralClient
from ._columns import age, column_value

_console = Console(width=200)

Namespace = Annotated[str | None, typer.Option("-n", "--namespace", help="Namespace; default from the context.")]


def _client(namespace: str | None) -> CorralClient:
    try:
        client = CorralClient.from_context()
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if namespace:
        client.namespace = namespace
    return client


def _kind(text: str) -> type[Resource]:
    try:
        return kind_for_name(text)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _fail(exc: APIStatusError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def apply(
    files: Annotated[list[Path], typer.Option("-f", "--filename", help="File or directory of resources; repeat.")],
    recursive: Annotated[bool, typer.Option("-R", "--recursive", help="Read subdirectories too.")] = False,
    namespace: Namespace = None,
) -> None:
    """Create or update resources from YAML, as `kubectl apply -f` does on a cluster."""
    objects: list[Resource] = []
    for path in files:
        try:
            objects += load_documents(path, recursive=recursive)
        except DocumentError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except FileNotFoundError:
            typer.echo(f"error: {path}: no such file or directory", err=True)
            raise typer.Exit(2) from None
    with _client(namespace) as client:
        for obj in objects:
            try:
                _, outcome = client.apply(obj)
            except APIStatusError as exc:
                raise _fail(exc) from None
            typer.echo(f"{obj.PLURAL}.corral.dev/{obj.metadata.name} {outcome}")


def _row(cls: type[Resource], obj: dict[str, Any], wide: bool, all_namespaces: bool) -> list[str]:
    cells = [obj["metadata"].get("namespace", "")] if all_namespaces else []
    cells.append(obj["metadata"]["name"])
    for column in cls.PRINTER_COLUMNS:
        if column.get("priority", 0) and not wide:
            continue
        value = column_value(obj, column["jsonPath"])
        if column["type"] == "date":
            cells.append(age(value))
        else:
            cells.append("" if value is None else str(value))
    return cells


def get(
    kind: Annotated[str, typer.Argument(help="Kind, plural or short name: models, ftj, mdep, gpool, ...")],
    name: Annotated[str | None, typer.Argument(help="Name of one object.")] = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="yaml, json or wide.")] = None,
    namespace: Namespace = None,
    all_namespaces: Annotated[
        bool, typer.Option("-A", "--all-namespaces", help="Every namespace you may see.")
    ] = False,
    selector: Annotated[str | None, typer.Option("-l", "--selector", help="Label selector.")] = None,
) -> None:
    """List objects of a kind, or show one."""
    cls = _kind(kind)
    if output not in (None, "yaml", "json", "wide"):
        typer.echo(f"error: -o {output!r} is not allowed (allowed: yaml, json, wide)", err=True)
        raise typer.Exit(2)
    with _client(namespace) as client:
        try:
            items = (
                [client.get(cls, name)]
                if name
                else client.list(cls, all_namespaces=all_namespaces, label_selector=selector)
            )
        except APIStatusError as exc:
            raise _fail(exc) from None
    if output in ("yaml", "json"):
        data: Any = items[0] if name else {"apiVersion": "v1", "kind": "List", "items": items}
        typer.echo(json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False))
        return
    if not items:
        typer.echo(f"No {cls.PLURAL} found.")
        return
    wide = output == "wide"
    table = Table(box=None, pad_edge=False)
    headers = (["NAMESPACE"] if all_namespaces else []) + ["NAME"]
    headers += [c["name"].upper() for c in cls.PRINTER_COLUMNS if wide or not c.get("priority", 0)]
    for header in headers:
        table.add_column(header, no_wrap=True)
    for obj in items:
        table.add_row(*_row(cls, obj, wide, all_namespaces))
    _console.print(table)


def describe(
    kind: Annotated[str, typer.Argument(help="Kind, plural or short name.")],
    name: Annotated[str, typer.Argument(help="Name of the object.")],
    namespace: Namespace = None,
) -> None:
    """Show one object: its spec, conditions (why it is pending or failed), status and events."""
    cls = _kind(kind)
    with _client(namespace) as client:
        try:
            obj = client.get(cls, name)
            events = client.events(cls, name)
        except APIStatusError as exc:
            raise _fail(exc) from None
    meta = obj["metadata"]
    status = dict(obj.get("status") or {})
    conditions = status.pop("conditions", [])
    typer.echo(f"Name:         {meta['name']}")
    if meta.get("namespace"):
        typer.echo(f"Namespace:    {meta['namespace']}")
    typer.echo(f"Kind:         {cls.KIND}")
    typer.echo(f"Generation:   {meta.get('generation')}  (observed: {status.get('observedGeneration', '-')})")
    typer.echo(f"Created:      {meta.get('creationTimestamp')} ({age(meta.get('creationTimestamp'))} ago)")
    if meta.get("labels"):
        typer.echo("Labels:       " + ", ".join(f"{k}={v}" for k, v in meta["labels"].items()))
    typer.echo("Spec:")
    typer.echo(_indent(yaml.safe_dump(obj.get("spec", {}), sort_keys=False)))
    typer.echo("Conditions:")
    if conditions:
        table = Table(box=None, pad_edge=False)
        for header in ("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"):
            table.add_column(header, overflow="fold")
        for c in conditions:
            table.add_row(c["type"], c["status"], c["reason"], age(c.get("lastTransitionTime")), c.get("message", ""))
        _console.print(table)
    else:
        typer.echo("  <none>")
    status.pop("observedGeneration", None)
    if status:
        typer.echo("Status:")
        typer.echo(_indent(yaml.safe_dump(status, sort_keys=False)))
    typer.echo("Events:")
    if not events:
        typer.echo("  <none>")
        return
    table = Table(box=None, pad_edge=False)
    for header in ("TYPE", "REASON", "AGE", "COUNT", "MESSAGE"):
        table.add_column(header, overflow="fold")
    for e in events:
        table.add_row(e["type"], e["reason"], age(e.get("lastTimestamp")), str(e.get("count", 1)), e["message"])
    _console.print(table)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.rstrip().splitlines())


def delete(
    kind: Annotated[str, typer.Argument(help="Kind, plural or short name.")],
    names: Annotated[list[str], typer.Argument(help="Names of the objects to delete.")],
    namespace: Namespace = None,
) -> None:
    """Delete objects (a FineTuneJob's Ray job is stopped; a deployment's Serve app is removed)."""
    cls = _kind(kind)
    with _client(namespace) as client:
        for name in names:
            try:
                client.delete(cls, name)
            except APIStatusError as exc:
                raise _fail(exc) from None
            typer.echo(f"{cls.PLURAL}.corral.dev/{name} deleted")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("apply")(apply)
    app.command("get")(get)
    app.command("describe")(describe)
    app.command("delete")(delete)
