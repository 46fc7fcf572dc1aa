"""``corral dataset check``: the validation report of a dataset file, before any training.

At a terminal the report is tables; anywhere else (a pipe, a CI log) it is plain lines, one per
problem, ``FILE:LINE: FIELD: CODE: message`` like compilers and ruff, then the summary, so that
no column is squeezed to the terminal width. ``--json`` prints the full report either way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from corral.data import FormatDetectionError, TemplateError, check_dataset

dataset_app = typer.Typer(help="Inspect instruction datasets.", no_args_is_help=True)

_SHOWN_ERRORS = 20


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _print(report: Any, console: Console) -> None:
    train = report.train
    console.print(
        f"[bold]{train.source}[/bold]: {train.layout}, format [bold]{train.format}[/bold] ({train.format_reason})"
    )
    console.print(
        f"records {train.records}  examples {train.examples}  invalid {train.invalid}  "
        f"blank lines {train.blank_lines}  duplicates {len(report.duplicate_lines)}"
    )
    if report.token_stats:
        unit = report.token_unit + (f", template {report.chat_template}" if report.chat_template else "")
        table = Table(title=f"{unit} per example")
        for column in ("role", "examples", "min", "p5", "median", "p95", "max"):
            table.add_column(column, justify="left" if column == "role" else "right")
        for s in report.token_stats:
            table.add_row(s.role, *(str(v) for v in (s.count, s.min, s.p5, s.median, s.p95, s.max)))
        console.print(table)
    over = len(report.over_length_lines)
    action = "dropped" if report.over_length == "drop" else "truncated"
    console.print(f"over maxSeqLen {report.max_seq_len}: {over} example(s), will be {action}")
    if report.no_loss_lines:
        console.print(f"[yellow]left without supervised tokens (dropped in training): {len(report.no_loss_lines)}[/]")
    if report.duplicate_lines:
        pairs = ", ".join(f"{a} = {b}" for a, b in report.duplicate_lines[:10])
        console.print(f"[yellow]exact duplicates: {len(report.duplicate_lines)} ({pairs})[/]")
    if report.validation is not None:
        v = report.validation
        console.print(
            f"validation {v.source}: examples {v.examples}  invalid {v.invalid}  leaked {len(report.leaked_lines)}"
        )
        if report.leaked_lines:
            pairs = ", ".join(f"validation {a} = train {b}" for a, b in report.leaked_lines[:10])
            console.print(f"[yellow]train/validation leakage: {pairs}[/]")
    files = [train] + ([report.validation] if report.validation is not None else [])
    errors = [(f, e) for f in files for e in f.errors]
    if errors:
        table = Table(title=f"errors ({len(errors)})")
        for column in ("file", "line" if train.layout == "jsonl" else "index", "field", "code"):
            table.add_column(column, no_wrap=True)
        table.add_column("message", overflow="fold")
        for f, e in errors[:_SHOWN_ERRORS]:
            table.add_row(Path(f.source).name, str(e.line), e.field, e.code, e.message)
        console.print(table)
        if len(errors) > _SHOWN_ERRORS:
            console.print(f"... and {len(errors) - _SHOWN_ERRORS} more (use --json for all)")
    console.print("[green]OK[/]" if report.ok else "[red]INVALID[/]: training would refuse this dataset")


def _summary_lines(report: Any) -> list[str]:
    train = report.train
    lines = [
        f"{train.source}: {train.layout}, format {train.format} ({train.format_reason}); records {train.records}, "
        f"examples {train.examples}, invalid {train.invalid}, blank lines {train.blank_lines}, "
        f"duplicates {len(report.duplicate_lines)}"
    ]
    for s in report.token_stats:
        lines.append(
            f"{train.source}: {report.token_unit} per example, {s.role}: n={s.count} min={s.min} p5={s.p5} "
            f"median={s.median} p95={s.p95} max={s.max}"
        )
    action = "dropped" if report.over_length == "drop" else "truncated"
    lines.append(
        f"{train.source}: over maxSeqLen {report.max_seq_len}: {len(report.over_length_lines)} example(s), will be "
        f"{action}"
    )
    if report.validation is not None:
        v = report.validation
        lines.append(
            f"{v.source}: validation examples {v.examples}, invalid {v.invalid}, leaked {len(report.leaked_lines)}"
        )
    return lines


def _print_plain(report: Any) -> None:
    """One line per problem (``FILE:LINE: FIELD: CODE: message``), then the summary; no width limit."""
    train = report.train
    files = [train] + ([report.validation] if report.validation is not None else [])
    for f in files:
        for e in f.errors:
            typer.echo(f"{f.source}:{e.line}: {e.field or 'record'}: {e.code}: {e.message}")
    for line in report.no_loss_lines:
        typer.echo(
            f"{train.source}:{line}: messages: no_loss_tokens: left without supervised tokens (dropped in training)"
        )
    for a, b in report.duplicate_lines:
        typer.echo(f"{train.source}:{a}: record: duplicate: the same example as line {b}")
    if report.validation is not None:
        for a, b in report.leaked_lines:
            typer.echo(f"{report.validation.source}:{a}: record: leaked: also in the training data (line {b})")
    for line in _summary_lines(report):
        typer.echo(line)
    errors = sum(len(f.errors) for f in files)
    typer.echo("OK" if report.ok else f"INVALID: {errors} error(s); training would refuse this dataset")


@dataset_app.command("check")
def check(
    file: Annotated[str, typer.Argument(help="JSON or JSONL file: path, file:// or s3:// URI.")],
    format: Annotated[
        str, typer.Option("--format", "-F", help="auto, alpaca, dolly, sharegpt, openai, prompt_completion, text.")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    max_seq_len: Annotated[int, typer.Option("--max-seq-len", help="Sequence length to check against.")] = 2048,
    over_length: Annotated[str, typer.Option("--over-length", help="drop or truncate (what training does).")] = (
        "truncate"
    ),
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="Tokenizer directory of the base model (else whitespace words).")
    ] = None,
    chat_template: Annotated[
        str | None, typer.Option("--chat-template", help="auto or llama-2, llama-3, vicuna, alpaca, chatml, chatglm.")
    ] = None,
    validation: Annotated[
        str | None, typer.Option("--validation", help="Validation file, checked for errors and leakage.")
    ] = None,
    plain: Annotated[
        bool | None,
        typer.Option(
            "--plain/--table",
            help="Plain lines (FILE:LINE: FIELD: CODE: message) or tables; default: tables at a terminal only.",
        ),
    ] = None,
) -> None:
    """Validate a dataset file: examples, token statistics, over-length, duplicates, leakage, errors.

    Exits 1 when any record has an error (training would refuse the file), 2 when the
    file cannot be read or the arguments are wrong.
    """
    try:
        tok = _load_tokenizer(tokenizer) if tokenizer else None
        report = check_dataset(
            file,
            format=format,
            tokenizer=tok,
            max_seq_len=max_seq_len,
            over_length=over_length,  # type: ignore[arg-type]
            validation_source=validation,
            chat_template=chat_template,
        )
    except FormatDetectionError as exc:
        if as_json:
            typer.echo(json.dumps({"ok": False, "error": str(exc)}, indent=2))
        else:
            typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(1) from exc
    except (FileNotFoundError, TemplateError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    elif plain if plain is not None else not sys.stdout.isatty():
        _print_plain(report)
    else:
        _print(report, Console())
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``dataset`` command group to ``app``."""
    app.add_typer(dataset_app, name="dataset")
