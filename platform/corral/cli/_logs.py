"""``corral logs finetunejob NAME [-f]``: a fine-tune's progress, live with -f.

Recoveries are marked: the line says how often training restarted and from which step the
latest run resumed, and with ``-f`` every restart, re-attachment after a control plane
restart or resubmission prints its own line (the ``Running`` condition's message) when the
step jumps back.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ..api import kind_for_name
from ..api.v1alpha1 import FineTuneJob
from ..client import APIStatusError, CorralClient

__all__ = ["follow_job", "recovery_note", "register"]

TERMINAL = ("Succeeded", "Failed", "Cancelled")


def _describe(status: dict[str, Any]) -> str:
    metrics = status.get("metrics") or {}
    progress = status.get("progress") or {}
    parts = [f"phase {status.get('phase') or 'Pending'}"]
    if progress.get("totalSteps"):
        parts.append(f"step {progress.get('step', 0)}/{progress['totalSteps']} epoch {progress.get('epoch', 0)}")
    if metrics.get("loss") is not None:
        parts.append(f"loss {metrics['loss']:.4f}")
    if metrics.get("evalLoss") is not None:
        parts.append(f"eval {metrics['evalLoss']:.4f}")
    if metrics.get("tokensPerSecond") is not None:
        parts.append(f"{metrics['tokensPerSecond']:.0f} tok/s")
    if status.get("restarts"):
        parts.append(f"restarts {status['restarts']} (resumed from step {status.get('resumedFromStep', 0)})")
    return "  ".join(parts)


_RECOVERY_REASONS = ("Resumed", "Reattached", "Resubmitted")


def recovery_note(status: dict[str, Any]) -> str | None:
    """The ``Running`` condition's message when its reason tells a recovery, else None."""
    running = next((c for c in status.get("conditions") or [] if c.get("type") == "Running"), None)
    if running is None or running.get("reason") not in _RECOVERY_REASONS:
        return None
    return f"{running['reason']}: {running.get('message', '')}"


def follow_job(client: CorralClient, name: str, *, follow: bool, timeout: float = 3600.0) -> dict[str, Any]:
    """Print a job's progress (a live bar while ``follow``) and return its last state."""
    obj = client.get(FineTuneJob, name)
    if not follow:
        typer.echo(f"{name}: {_describe(obj.get('status') or {})}")
        return obj
    deadline = time.monotonic() + timeout
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=False)) as bar:
        task = bar.add_task(name, total=100, info="")
        told = recovery_note(obj.get("status") or {})
        while True:
            status = obj.get("status") or {}
            note = recovery_note(status)
            if note is not None and note != told:
                bar.console.print(f"--- {note}")
                told = note
            progress = status.get("progress") or {}
            total = progress.get("totalSteps") or 0
            bar.update(task, total=total or 100, completed=progress.get("step", 0), info=_describe(status))
            if status.get("phase") in TERMINAL or time.monotonic() > deadline:
                break
            time.sleep(1.0)
            obj = client.get(FineTuneJob, name)
    return obj


def logs(
    kind: Annotated[str, typer.Argument(help="finetunejob (or ftj).")],
    name: Annotated[str, typer.Argument(help="Name of the FineTuneJob.")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Follow until the job ends.")] = False,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace", help="Namespace.")] = None,
) -> None:
    """Show a fine-tune's progress: step, epoch, loss, eval loss, tokens/s, and ETA with -f."""
    try:
        if kind_for_name(kind) is not FineTuneJob:
            raise ValueError(f"logs are shown for finetunejobs, not {kind!r}")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        with CorralClient.from_context() as client:
            if namespace:
                client.namespace = namespace
            obj = follow_job(client, name, follow=follow)
    except (FileNotFoundError, APIStatusError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    status = obj.get("status") or {}
    if follow:
        typer.echo(f"{name}: {_describe(status)}")
    if status.get("phase") == "Failed":
        failed = [c for c in status.get("conditions", []) if c["type"] in ("Succeeded", "Failed", "Running")]
        for c in failed:
            typer.echo(f"  {c['type']}={c['status']} {c['reason']}: {c.get('message', '')}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("logs")(logs)
