"""``corral demo``: the main job on the embedded default, end to end.

Brings up the embedded control plane, applies ``examples/support-bot`` (a CPU pool, the
tiny LLaMA base, the support data, a LoRA FineTuneJob with deploy-on-success and the
ModelDeployment), shows training progress, waits until the adapter is served, asks
questions from the data (one reworded as a user would, never trained on) and prints the
base model's answer beside the fine-tuned adapter's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from ..api import load_documents
from ..api.v1alpha1 import SERVING_PHASES, FineTuneJob, ModelDeployment
from ..client import APIStatusError, CorralClient
from ._chat import ask
from ._logs import follow_job
from ._up import ensure_up, print_endpoints

__all__ = ["register"]

_console = Console(width=160)


def _questions(data_dir: Path) -> tuple[str, list[tuple[str, str, bool]]]:
    """(system prompt, [(question, expected answer, trained?)]): two trained phrasings and one held-out."""
    facts = yaml.safe_load((data_dir / "facts.yaml").read_text(encoding="utf-8"))
    by_id = {f["id"]: f for f in facts["facts"]}
    picks = [("hours_weekday", "train", 2), ("tuneup_price", "train", 0), ("head_mechanic", "heldout", 0)]
    questions = [(by_id[i][part][n], by_id[i]["answer"], part == "train") for i, part, n in picks]
    return facts["business"]["system"], questions


def _wait_served(client: CorralClient, deployment: str, adapter: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        dep = client.get(ModelDeployment, deployment)
        status = dep.get("status") or {}
        if adapter in (status.get("servedModels") or []) and status.get("phase") in SERVING_PHASES:
            return dep
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"ModelDeployment {deployment} did not serve {adapter} within {timeout:.0f} s "
                f"(phase {status.get('phase')}, served {status.get('servedModels')}); "
                f"see `corral describe mdep {deployment}`"
            )
        time.sleep(1.0)


def _answer(endpoint: str, model: str, system: str, question: str, headers: dict[str, str]) -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return "".join(ask(endpoint, model, messages, max_tokens=48, headers=headers)).strip()


def demo(
    examples: Annotated[
        Path, typer.Option("--examples", help="The support-bot example folder (run from the repo root).")
    ] = Path("examples/support-bot"),
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="State directory.")] = None,
    port: Annotated[int, typer.Option("--port", help="Control API port (0 picks a free one).")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for training and serving.")] = 900,
) -> None:
    """Fine-tune the tiny model on the support-bot data, serve it, and compare its answers with the base."""
    if not (examples / "data" / "facts.yaml").exists():
        typer.echo(
            f"error: {examples} is not the support-bot example folder; run `corral demo` from the repo root "
            "or pass --examples PATH",
            err=True,
        )
        raise typer.Exit(2)
    objects = load_documents(examples)
    job = next(o for o in objects if isinstance(o, FineTuneJob))
    dep = next(o for o in objects if isinstance(o, ModelDeployment))
    adapter = (job.spec.deploy_on_success.served_name if job.spec.deploy_on_success else None) or (
        job.spec.output.model_name or job.metadata.name
    )
    typer.echo("1/4 Starting Corral: a local Ray head, the reconcile loop and the control API ...")
    try:
        info = ensure_up(data_dir, port)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"    control API at {info['api']}")
    namespace = job.metadata.namespace or "default"
    with CorralClient.from_context() as client:
        client.namespace = namespace
        typer.echo(f"2/4 Applying {examples} (the same YAML works with kubectl apply on a cluster):")
        try:
            for obj in objects:
                _, outcome = client.apply(obj)
                typer.echo(f"    {obj.PLURAL}.corral.dev/{obj.metadata.name} {outcome}")
            typer.echo(f"3/4 Fine-tuning {job.spec.base_model.name} with LoRA on Ray Train ({job.metadata.name}):")
            final = follow_job(client, job.metadata.name, follow=True, timeout=timeout)
            status = final.get("status") or {}
            if status.get("phase") != "Succeeded":
                typer.echo(
                    f"error: FineTuneJob {job.metadata.name} ended {status.get('phase')}; "
                    f"see `corral describe ftj {job.metadata.name} -n {namespace}`",
                    err=True,
                )
                raise typer.Exit(1)
            promoted = next((c for c in status.get("conditions", []) if c.get("type") == "Promoted"), None)
            if promoted is not None:
                typer.echo(f"    evaluation (fine-tune vs base, same questions): {promoted.get('message', '')}")
                if promoted.get("status") != "True":
                    typer.echo(f"error: the adapter was not promoted ({promoted.get('reason')})", err=True)
                    raise typer.Exit(1)
            typer.echo(f"4/4 Waiting until {dep.metadata.name} serves the adapter {adapter} on Ray Serve ...")
            served = _wait_served(client, dep.metadata.name, adapter, timeout)
        except (APIStatusError, TimeoutError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
    endpoint = served["status"]["endpoint"]
    base = dep.spec.served_name or dep.spec.model.name
    system, questions = _questions(examples / "data")
    table = Table(title=f"{base} (base) vs {adapter} (fine-tuned LoRA adapter), same replica", show_lines=True)
    for header in ("question", f"{base}", f"{adapter}", "trained answer?"):
        table.add_column(header, overflow="fold")
    trained_ok = True
    for question, expected, trained in questions:
        base_answer = _answer(endpoint, base, system, question, client.auth_headers())
        tuned_answer = _answer(endpoint, adapter, system, question, client.auth_headers())
        hit = tuned_answer == expected
        if trained and not hit:
            trained_ok = False
        label = ("yes" if hit else "no") + ("" if trained else " (held-out wording)")
        table.add_row(
            question + ("" if trained else "  [reworded, never trained on]"), base_answer, tuned_answer, label
        )
    _console.print(table)
    typer.echo("The adapter carries facts the base model cannot guess. A 1M-parameter model memorises the trained")
    typer.echo("phrasings but generalises to new ones only sometimes; use a real base (hf:// or s3:// URI, a GPU pool)")
    typer.echo("for that — see bench/demo_heldout.py for the measured held-out accuracy.")
    typer.echo("")
    typer.echo(f"Chat with it:   .venv/bin/corral chat {adapter} -n {namespace}")
    typer.echo(f"OpenAI API:     {endpoint}  (model={adapter!r} or {base!r}; api_key: the token in context.yaml)")
    print_endpoints(info)
    typer.echo("Stop it all:    .venv/bin/corral down")
    if not trained_ok:
        typer.echo("error: the fine-tuned adapter did not reproduce a trained answer", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("demo")(demo)
