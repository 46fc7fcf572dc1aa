"""``corral estimate``: memory, time, cost and placement of a FineTuneJob (or ModelDeployment), offline.

The base model is sized from, in order: ``--params``/``--arch``; the ``Model`` named by
the job's ``baseModel`` when it is in the files and has a ``catalogName``; the catalog
entry named like ``baseModel``. Pools come from ``--pools`` and any ``GPUPool`` in the
files. Trained tokens come from ``--tokens``, ``--examples`` x ``--tokens-per-example``,
or a ``Dataset`` in the files with a validation report; without them the table shows the
price of a million tokens instead of the job's cost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .. import catalog
from ..api import load_documents
from ..api.v1alpha1.common import Resource
from ..artifacts import parse_uri
from ..catalog import choose_hyperparameters, load_catalog
from ..data import load_dataset
from ..scheduler import ModelProfile, PoolState, dry_run_deployment, dry_run_job

__all__ = ["catalog_profile", "estimate", "register"]

_GB = 1e9
_SUFFIXES = ("-instruct", "-chat", "-it")


def catalog_profile(name: str) -> ModelProfile | None:
    """Size a catalog model (imported lazily); None when the catalog or the entry is missing.

    Tries ``name``, then ``name`` without an ``-instruct``/``-chat``/``-it`` suffix (instruct
    variants share the base's shape).
    """
    candidates = [name] + [name[: -len(s)] for s in _SUFFIXES if name.endswith(s)]
    for candidate in candidates:
        try:
            entry = catalog.get(candidate)
        except KeyError:
            continue
        return ModelProfile.from_catalog_params(entry.params, entry.architecture, entry.context_length)
    return None


def _resolve_profile(model_ref: str, models: dict[str, Resource], params: float | None, arch: str) -> ModelProfile:
    if params is not None:
        return ModelProfile.from_catalog_params(params, arch)
    model = models.get(model_ref)
    name = model_ref
    if model is not None:
        catalog_name = getattr(model.spec, "catalog_name", None)  # type: ignore[attr-defined]
        if catalog_name:
            name = catalog_name
    profile = catalog_profile(name)
    if profile is None:
        raise typer.BadParameter(
            f"cannot size base model {model_ref!r} (looked up {name!r} in the catalog); pass --params 7e9 --arch llama",
            param_hint="--params",
        )
    return profile


def _dataset_tokens(job: Resource, datasets: dict[str, Resource]) -> int | None:
    total = 0
    for ref in job.spec.datasets:  # type: ignore[attr-defined]
        ds = datasets.get(ref.name)
        report = getattr(getattr(ds, "status", None), "report", None) if ds is not None else None
        if report is None or not report.examples:
            return None
        stats = {s.role: s.median for s in report.token_stats}
        per_example = stats.get("all") or sum(stats.values())
        if not per_example:
            return None
        total += report.examples * per_example
    return total


def _dataset_examples(job: Resource, datasets: dict[str, Resource]) -> int | None:
    """Examples of the job's datasets: their reports, else the local files read."""
    total = 0
    for ref in job.spec.datasets:  # type: ignore[attr-defined]
        ds = datasets.get(ref.name)
        if ds is None:
            return None
        report = getattr(getattr(ds, "status", None), "report", None)
        if report is not None and report.examples:
            total += report.examples
            continue
        uri = ds.spec.uri  # type: ignore[attr-defined]
        if parse_uri(uri).scheme != "file":
            return None
        try:
            total += len(load_dataset(uri, format=ds.spec.format).train)  # type: ignore[attr-defined]
        except (OSError, ValueError):
            return None
    return total


def _chosen(job: Resource, models: dict[str, Resource], examples: int | None) -> Any:
    """The hyper-parameters the control plane would choose (``corral.catalog.choose_hyperparameters``)."""
    if examples is None:
        return None
    spec = job.spec  # type: ignore[attr-defined]
    base = models.get(spec.base_model.name)
    catalog_name = spec.base_model.name
    if base is not None:
        catalog_name = getattr(getattr(base, "spec", None), "catalog_name", None)
    return choose_hyperparameters(
        spec.hyperparameters,
        method=spec.method,
        recipe=load_catalog().recipe_for_model(catalog_name),
        examples=examples,
        workers=spec.resources.workers,
        has_validation_dataset=spec.validation_dataset is not None,
    )


def _gb(value: int | float | None) -> str:
    return "-" if value is None else f"{value / _GB:.1f}"


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f}"


def _render_job(console: Console, result: dict[str, Any]) -> None:
    est = result["estimate"]
    title = f"FineTuneJob {result['namespace']}/{result['name']}"
    console.print(
        f"[bold]{title}[/]: {est['method']} {est['params'] / 1e9:.2f}B, {est['strategy']}, {est['gpus']} GPU(s), "
        f"{est['precision']}, trainable {est['trainable_params'] / 1e6:.1f}M"
    )
    console.print(f"Memory per GPU (GB) on {est['accelerator']}:")
    mem = Table()
    mem.add_column("component")
    mem.add_column("GB", justify="right")
    for name, value in est["memory"].items():
        mem.add_row(name, _gb(value))
    console.print(mem)
    tokens = result["trainTokens"]
    console.print(
        f"trained tokens: {tokens:,}" if tokens else "trained tokens: unknown (pass --tokens or --examples)",
        f"| {est['tokens_per_second']:,.0f} tokens/s on {est['accelerator']}",
    )
    chosen = result.get("hyperparameters")
    if chosen:
        console.print(
            f"hyper-parameters: {chosen['epochs']} epochs x {chosen['stepsPerEpoch']} steps = {chosen['totalSteps']} "
            f"steps, batch {chosen['globalBatchSize']}, learning rate {chosen['learningRate']:g}, "
            f"{chosen['validationSplitPercent']}% held out ({chosen['trainExamples']} training examples)"
        )
        for reason in chosen["reasons"]:
            console.print(f"  - {reason}", soft_wrap=True)
    if result["options"]:
        console.print("Options per pool:")
        table = Table()
        for col in (
            "pool",
            "accelerator",
            "spot",
            "GB/GPU needed",
            "GB/GPU",
            "fits",
            "GPUs",
            "hours",
            "GPU-h",
            "USD",
            "USD/M tokens",
        ):
            table.add_column(col, justify="right" if col not in ("pool", "accelerator") else "left")
        for opt in result["options"]:
            table.add_row(
                opt["pool"],
                opt["acceleratorType"],
                "yes" if opt["spot"] else "",
                _gb(opt["memoryPerGpu"]),
                _gb(opt["gpuMemory"]),
                {True: "yes", False: "[red]no[/]", None: "-"}[opt["fits"]],
                str(opt["gpus"]),
                _hours(opt["seconds"]),
                "-" if opt["gpuHours"] is None else f"{opt['gpuHours']:.1f}",
                opt["costUsd"] or "-",
                opt["usdPerMillionTokens"] or "-",
            )
        console.print(table)
    _render_decision(console, result)
    for note in est["notes"]:
        console.print(f"note: {note}")


def _render_deployment(console: Console, result: dict[str, Any]) -> None:
    est = result["estimate"]
    console.print(
        f"[bold]ModelDeployment {result['namespace']}/{result['name']}[/]: {result['model']['params'] / 1e9:.2f}B, "
        f"{est['gpus_per_replica']} GPU(s) per replica, context {est['context_length']}, "
        f"{est['concurrent_sequences']} concurrent sequences"
    )
    console.print("Memory per GPU (GB), worst case (every sequence at full context):")
    mem = Table()
    mem.add_column("component")
    mem.add_column("GB", justify="right")
    for name, value in est["memory"].items():
        mem.add_row(name, _gb(value))
    console.print(mem)
    if result["options"]:
        console.print("Options per pool:")
        table = Table()
        for col in ("pool", "accelerator", "GB/GPU needed", "GB/GPU", "fits", "full-context seqs", "USD/h"):
            table.add_column(col)
        for opt in result["options"]:
            table.add_row(
                opt["pool"],
                opt["acceleratorType"],
                _gb(opt["memoryPerGpu"]),
                _gb(opt["gpuMemory"]),
                {True: "yes", False: "[red]no[/]", None: "-"}[opt["fits"]],
                str(opt["fullContextSequences"]),
                opt["usdPerHour"],
            )
        console.print(table)
    _render_decision(console, result)
    for note in est["notes"]:
        console.print(f"note: {note}")


def _render_decision(console: Console, result: dict[str, Any]) -> None:
    decision = result.get("decision")
    if decision is None:
        console.print("placement: no pools given (--pools POOLS.yaml)")
        return
    verdict = "[green]admitted[/]" if decision["admitted"] else "[yellow]pending[/]"
    console.print(f"placement ({verdict}, {decision['reason']}): {decision['message']}")


def estimate(
    files: Annotated[
        list[Path], typer.Option("-f", "--filename", help="YAML with a FineTuneJob (and its Model, Datasets, pools).")
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    pools: Annotated[Path | None, typer.Option("--pools", help="YAML with GPUPools to price and place on.")] = None,
    params: Annotated[
        float | None, typer.Option("--params", help="Base model parameters, e.g. 7e9 (when not in the catalog).")
    ] = None,
    arch: Annotated[str, typer.Option("--arch", help="Architecture with --params, e.g. llama.")] = "llama",
    tokens: Annotated[
        int | None, typer.Option("--tokens", help="Training tokens per epoch (multiplied by the job's epochs).")
    ] = None,
    examples: Annotated[int | None, typer.Option("--examples", help="Training examples per epoch.")] = None,
    tokens_per_example: Annotated[
        int | None, typer.Option("--tokens-per-example", help="Tokens per example with --examples; default maxSeqLen.")
    ] = None,
) -> None:
    """Estimate memory per GPU, time and cost of a fine-tune and where it would be placed (a dry run)."""
    objects: list[Resource] = []
    try:
        for path in [*files, *([pools] if pools else [])]:
            if not path.exists():
                typer.echo(f"error: {path}: no such file or directory", err=True)
                raise typer.Exit(2)
            objects += load_documents(path)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    by_kind: dict[str, dict[str, Resource]] = {}
    for obj in objects:
        by_kind.setdefault(obj.kind, {})[obj.metadata.name] = obj
    pool_states = [PoolState.from_gpupool(p) for p in by_kind.get("GPUPool", {}).values()]  # type: ignore[arg-type]
    jobs = list(by_kind.get("FineTuneJob", {}).values())
    deployments = list(by_kind.get("ModelDeployment", {}).values())
    if not jobs and not deployments:
        typer.echo("error: no FineTuneJob or ModelDeployment in the given files", err=True)
        raise typer.Exit(2)
    models = by_kind.get("Model", {})
    results: list[dict[str, Any]] = []
    for job in jobs:
        spec = job.spec  # type: ignore[attr-defined]
        profile = _resolve_profile(spec.base_model.name, models, params, arch)
        hp = spec.hyperparameters
        n_examples = examples if examples is not None else _dataset_examples(job, by_kind.get("Dataset", {}))
        chosen = _chosen(job, models, n_examples)
        per_epoch: int | None = tokens
        if per_epoch is None and examples is not None:
            per_epoch = examples * (tokens_per_example or hp.max_seq_len)
        if per_epoch is None:
            per_epoch = _dataset_tokens(job, by_kind.get("Dataset", {}))
        epochs = chosen.hyperparameters.epochs if chosen is not None else hp.resolved().epochs
        train_tokens = None if per_epoch is None else per_epoch * epochs
        result = dry_run_job(job, profile, pool_states, train_tokens=train_tokens)  # type: ignore[arg-type]
        if chosen is not None:
            result["hyperparameters"] = chosen.status.model_dump(mode="json", by_alias=True)
        results.append(result)
    for dep in deployments:
        profile = _resolve_profile(dep.spec.model.name, models, params, arch)  # type: ignore[attr-defined]
        results.append(dry_run_deployment(dep, profile, pool_states))  # type: ignore[arg-type]
    if json_out:
        typer.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return
    console = Console(width=140)
    for result in results:
        if result["kind"] == "FineTuneJob":
            _render_job(console, result)
        else:
            _render_deployment(console, result)
        console.print()


def register(app: typer.Typer) -> None:
    """Add ``corral estimate`` to ``app``."""
    app.command("estimate")(estimate)
