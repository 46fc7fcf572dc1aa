"""corral.data: the validation report (stats, duplicates, leakage, over-length) and `corral dataset check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from corral.api.v1alpha1.dataset import DatasetReport
from corral.cli import _dataset
from corral.data import check_dataset, get_template, tokenize_conversation
from corral.data._report import TokenStats
from tests.conftest import REPO
from tests.fixtures.data_tokenizer import make_tokenizer

DATA = REPO / "tests" / "fixtures" / "data"


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _chat(user: str, answer: str, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def test_token_stats_percentiles() -> None:
    stats = TokenStats.of("user", list(range(1, 101)))
    assert (stats.count, stats.min, stats.p5, stats.median, stats.p95, stats.max) == (100, 1, 5, 50, 95, 100)
    assert TokenStats.of("all", [7]) == TokenStats("all", 1, 7, 7, 7, 7, 7)


def test_word_stats_without_tokenizer(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [_chat("one two", "a b c", system="sys tem"), _chat("one", "a b c d e")])
    report = check_dataset(path)
    assert report.token_unit == "words"
    stats = {s.role: s for s in report.token_stats}
    assert set(stats) == {"system", "user", "assistant", "all"}
    assert stats["system"].count == 1 and stats["system"].max == 2
    assert (stats["user"].min, stats["user"].max) == (1, 2)
    assert (stats["assistant"].min, stats["assistant"].max) == (3, 5)
    assert (stats["all"].min, stats["all"].max) == (6, 7)


def test_token_stats_with_tokenizer_and_template(tmp_path: Path) -> None:
    tok = make_tokenizer()
    records = [
        _chat("What is the capital of France?", "Paris."),
        _chat("Translate to German: good morning.", "Guten Morgen."),
    ]
    path = _write(tmp_path / "d.jsonl", records)
    report = check_dataset(path, tokenizer=tok, chat_template="chatml")
    assert report.token_unit == "tokens" and report.chat_template == "chatml"
    stats = {s.role: s for s in report.token_stats}
    assert stats["assistant"].min == len(tok("Paris.", add_special_tokens=False)["input_ids"])
    # "all" is the rendered example, template markers included
    lengths = []
    for conv in report.train.conversations:
        example = tokenize_conversation(conv, tok, get_template("chatml", tok), 10_000)
        assert example is not None
        lengths.append(len(example.input_ids))
    assert (stats["all"].min, stats["all"].max) == (min(lengths), max(lengths))
    assert stats["all"].min > stats["user"].min + stats["assistant"].min
    # without a template the tokenizer counts content only
    plain = {s.role: s for s in check_dataset(path, tokenizer=tok).token_stats}
    assert plain["all"].max == max(
        sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) for m in r["messages"]) for r in records
    )


def test_duplicates_and_leakage(tmp_path: Path) -> None:
    train = _write(
        tmp_path / "train.jsonl",
        [
            _chat("a", "b"),
            _chat("c", "d"),
            _chat(" a ", "b  "),
            _chat("a", "b"),
            _chat("e", "f"),
        ],
    )
    valid = _write(tmp_path / "valid.jsonl", [_chat("x", "y"), _chat("c", "d"), {"messages": "oops"}])
    report = check_dataset(train, validation_source=valid)
    assert report.duplicate_lines == [(3, 1), (4, 1)]
    assert report.leaked_lines == [(2, 2)]
    assert report.validation is not None and report.validation.examples == 2
    assert [(e.line, e.code) for e in report.validation.errors] == [(3, "wrong_type")]
    assert not report.ok  # a malformed validation file refuses training too
    status = report.to_status()
    assert status.duplicates == 2 and status.examples == 5


@pytest.mark.parametrize("over_length", ["drop", "truncate"])
def test_over_length_examples_are_counted_with_their_fate(tmp_path: Path, over_length: str) -> None:
    path = _write(tmp_path / "d.jsonl", [_chat("short", "ok"), _chat("long " * 40, "ok"), _chat("q", "long " * 40)])
    report = check_dataset(path, max_seq_len=20, over_length=over_length)  # type: ignore[arg-type]
    assert report.over_length_lines == [2, 3]
    assert report.to_status().over_max_seq_len == 2
    assert report.to_dict()["over_length"] == over_length


def test_truncation_that_removes_the_answer_is_reported(tmp_path: Path) -> None:
    tok = make_tokenizer()
    path = _write(tmp_path / "d.jsonl", [_chat("short", "ok"), _chat("word " * 100, "the answer")])
    report = check_dataset(path, tokenizer=tok, chat_template="llama-3", max_seq_len=32)
    assert report.over_length_lines == [2]
    assert report.no_loss_lines == [2]
    dropped = check_dataset(path, tokenizer=tok, chat_template="llama-3", max_seq_len=32, over_length="drop")
    assert dropped.no_loss_lines == []


def test_to_status_keeps_the_first_100_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_chat("a", "b")) + "\n" + "{not json\n" * 150)
    report = check_dataset(path, format="openai")
    assert len(report.errors) == 150
    status = report.to_status()
    assert isinstance(status, DatasetReport)
    assert len(status.errors) == 100 and status.invalid == 150 and status.examples == 1
    assert status.errors[0].line == 2 and status.errors[0].code == "invalid_json"
    DatasetReport.model_validate(status.model_dump())


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test root."""

    _dataset.register(app)
    return app


def test_cli_ok_table() -> None:
    result = CliRunner().invoke(_app(), ["dataset", "check", str(DATA / "sharegpt.jsonl")])
    assert result.exit_code == 0, result.output
    assert "format sharegpt" in result.output and "OK" in result.output
    assert "median" in result.output


def test_cli_errors_exit_1_and_name_lines() -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        _app(), ["dataset", "check", str(DATA / "errors.jsonl"), "--max-seq-len", "64"]
    )
    assert result.exit_code == 1
    for code in ("invalid_json", "missing_field", "unrecognized_role", "missing_content", "no_assistant_mess"):
        assert code in result.output
    assert "INVALID" in result.output


def test_cli_json(tmp_path: Path) -> None:
    tok = make_tokenizer.__wrapped__()  # a fresh one: the shared instance must keep no template
    tok.chat_template = get_template("chatml", tok)
    tok.save_pretrained(tmp_path / "tok")
    result = CliRunner().invoke(
        _app(),
        [
            "dataset",
            "check",
            str(DATA / "openai.jsonl"),
            "--json",
            "--tokenizer",
            str(tmp_path / "tok"),
            "--validation",
            str(DATA / "openai.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and data["train"]["format"] == "openai" and data["token_unit"] == "tokens"
    assert data["chat_template"] == "auto" and data["leaked"] == 2
    assert {s["role"] for s in data["token_stats"]} == {"system", "user", "assistant", "all"}
    bad = CliRunner().invoke(_app(), ["dataset", "check", str(DATA / "errors.jsonl"), "--json"])
    assert bad.exit_code == 1
    errors = json.loads(bad.output)["train"]["errors"]
    assert [e["line"] for e in errors] == [2, 3, 5, 6, 7, 8, 9]


def test_cli_format_override_detection_failure_and_missing_file(tmp_path: Path) -> None:
    runner = CliRunner()
    forced = runner.invoke(_app(), ["dataset", "check", str(DATA / "dolly.jsonl"), "--format", "alpaca"])
    assert forced.exit_code == 1 and "missing_field" in forced.output
    odd = _write(tmp_path / "odd.jsonl", [{"question": "q"}])
    result = runner.invoke(_app(), ["dataset", "check", str(odd)])
    assert result.exit_code == 1 and "cannot detect the format" in result.output
    missing = runner.invoke(_app(), ["dataset", "check", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_cli_outside_a_terminal_prints_one_plain_line_per_problem() -> None:
    source = str(DATA / "errors.jsonl")
    result = CliRunner(env={"COLUMNS": "40"}).invoke(_app(), ["dataset", "check", source, "--max-seq-len", "64"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{source}:2: record: invalid_json: not valid JSON: Expecting ',' delimiter at column 91" in lines
    assert (
        f"{source}:5: messages[1].role: unrecognized_role: unrecognized role 'bot'; allowed: assistant, system, user"
        in lines
    )
    problems = [line for line in lines if line.startswith(f"{source}:") and line.split(":")[1].isdigit()]
    assert len(problems) == 7  # every error, none cut to the 40-column width
    assert lines[-1] == "INVALID: 7 error(s); training would refuse this dataset"
    assert "┃" not in result.output and "│" not in result.output  # no table


def test_cli_table_on_request() -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        _app(), ["dataset", "check", str(DATA / "errors.jsonl"), "--table"]
    )
    assert result.exit_code == 1
    assert "errors (7)" in result.output and "┃" in result.output
