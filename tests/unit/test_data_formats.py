"""corral.data: reading JSON/JSONL, format detection, normalization and error classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.data import (
    Conversation,
    DatasetInvalid,
    FormatDetectionError,
    Message,
    RecordError,
    check_dataset,
    detect_format,
    load_dataset,
    normalize,
    read_records,
)
from tests.conftest import REPO

DATA = REPO / "tests" / "fixtures" / "data"


@pytest.mark.parametrize(
    ("name", "fmt", "examples"),
    [
        ("alpaca.json", "alpaca", 3),
        ("dolly.jsonl", "dolly", 2),
        ("sharegpt.jsonl", "sharegpt", 2),
        ("openai.jsonl", "openai", 2),
        ("prompt_completion.jsonl", "prompt_completion", 2),
        ("text.jsonl", "text", 2),
    ],
)
def test_every_format_loads_and_auto_detect_says_which(name: str, fmt: str, examples: int) -> None:
    data = load_dataset(DATA / name)
    assert data.format == fmt
    assert len(data.train) == examples
    assert data.report.train.format_reason.startswith(f"{fmt}: {examples} of {examples} sampled records")
    # the explicit format gives the same conversations
    assert load_dataset(DATA / name, format=fmt).train == data.train


def test_alpaca_normalization_with_system_history_and_input() -> None:
    convs = load_dataset(DATA / "alpaca.json").train
    assert convs[0].messages == (
        Message("user", "Give three tips for staying healthy."),
        Message("assistant", "Eat well, exercise, and sleep enough."),
    )
    assert convs[1].messages[0] == Message("user", "Translate to French.\nGood morning")
    assert [m.role for m in convs[2].messages] == ["system", "user", "assistant", "user", "assistant"]
    assert convs[2].messages[1:3] == (Message("user", "Translate to French: cat"), Message("assistant", "chat"))
    assert [c.source_line for c in convs] == [0, 1, 2]  # JSON array: 0-based index


def test_dolly_sharegpt_openai_prompt_completion_text() -> None:
    dolly = load_dataset(DATA / "dolly.jsonl").train
    assert dolly[0].messages[0].content.startswith("When did Virgin Australia start operating?\nVirgin Australia")
    assert dolly[1].messages[0].content == "Which is a species of fish? Tope or Rope"
    assert [c.source_line for c in dolly] == [1, 2]  # JSONL: 1-based line
    share = load_dataset(DATA / "sharegpt.jsonl").train
    assert [m.role for m in share[0].messages] == ["user", "assistant", "user", "assistant"]
    assert share[1].messages[0] == Message("system", "Answer in one word.")
    openai = load_dataset(DATA / "openai.jsonl").train
    assert [m.weight for m in openai[1].messages] == [1, 0, 1, 1]
    pc = load_dataset(DATA / "prompt_completion.jsonl").train
    assert pc[0].kind == "completion"
    assert pc[0].messages == (
        Message("user", "Classify the sentiment: I loved this movie ->"),
        Message("assistant", " positive"),
    )
    text = load_dataset(DATA / "text.jsonl").train
    assert text[0].kind == "text" and text[0].messages == () and text[0].text is not None


EXPECTED_ERRORS = [
    (2, "", "invalid_json"),
    (3, "messages[0].role", "missing_field"),
    (5, "messages[1].role", "unrecognized_role"),
    (6, "messages[1].content", "missing_content"),
    (7, "", "no_assistant_message"),
    (8, "messages[0].content", "wrong_type"),
    (9, "messages", "empty_example"),
]


def test_every_error_class_with_its_line_and_field() -> None:
    report = check_dataset(DATA / "errors.jsonl")
    assert report.format == "openai"
    got = [(e.line, e.field, e.code) for e in report.errors]
    assert got == EXPECTED_ERRORS
    assert {e.code for e in report.errors} == {
        "invalid_json",
        "missing_field",
        "unrecognized_role",
        "missing_content",
        "no_assistant_message",
        "wrong_type",
        "empty_example",
    }
    # nothing skipped uncounted: every record is an example or invalid; the blank line is counted
    train = report.train
    assert train.records == 9 and train.examples == 2 and train.invalid == 7 and train.blank_lines == 1
    assert train.examples + train.invalid == train.records
    assert [c.source_line for c in train.conversations] == [1, 10]
    assert "allowed: assistant, system, user" in report.errors[2].message
    assert not report.ok


def test_malformed_file_is_refused_with_first_errors_and_count() -> None:
    with pytest.raises(DatasetInvalid) as info:
        load_dataset(DATA / "errors.jsonl")
    message = str(info.value)
    assert "7 errors in 7 records" in message
    assert "line 2: invalid_json" in message
    assert "(and 2 more)" in message
    assert info.value.report is not None


def test_json_array_errors_carry_the_index() -> None:
    report = check_dataset(DATA / "errors_array.json", format="alpaca")
    assert report.train.layout == "json"
    assert [(e.line, e.field, e.code) for e in report.errors] == [
        (1, "output", "missing_field"),
        (2, "instruction", "wrong_type"),
        (3, "", "wrong_type"),
    ]
    assert report.train.examples == 1


def test_broken_json_array_is_one_counted_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"text": "a"},\n {"text": ')
    report = check_dataset(path, format="text")
    assert [(e.code, e.line) for e in report.errors] == [("invalid_json", 0)]
    assert "line 2" in report.errors[0].message
    assert report.train.examples == 0 and not report.ok


def test_read_records_jsonl_and_array(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('\ufeff{"text": "x"}\n\n  \n{"text": "y"}\nnot json\n')
    items = list(read_records(jsonl))
    assert [line for line, _ in items] == [1, 4, 5]
    assert items[0][1] == {"text": "x"}
    assert isinstance(items[2][1], RecordError) and items[2][1].code == "invalid_json" and items[2][1].line == 5
    array = tmp_path / "a.json"
    array.write_text('  \n [{"text": "x"}, {"text": "y"}]')
    assert list(read_records(array)) == [(0, {"text": "x"}), (1, {"text": "y"})]
    assert list(read_records(f"file://{array}")) == [(0, {"text": "x"}), (1, {"text": "y"})]


def test_non_utf8_line_is_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    report = check_dataset(path)
    assert [(e.line, e.code) for e in report.errors] == [(2, "invalid_json")]


def test_missing_file_and_unknown_scheme() -> None:
    with pytest.raises(FileNotFoundError):
        check_dataset("/nonexistent/data.jsonl")
    with pytest.raises(ValueError, match="unsupported dataset URI"):
        list(read_records("ftp://x/y.jsonl"))


def test_detect_format_ambiguous_and_unknown() -> None:
    assert detect_format([{"prompt": "a", "completion": "b"}])[0] == "prompt_completion"
    pairs = [(1, {"text": "a"}), (2, {"text": "b"})]
    assert detect_format(pairs) == ("text", "text: 2 of 2 sampled records have text keys")
    # a text field alongside a richer format's keys is that format
    assert detect_format([{"instruction": "a", "output": "b", "text": "a b"}])[0] == "alpaca"
    with pytest.raises(FormatDetectionError, match="ambiguous format: openai and sharegpt") as info:
        detect_format([{"messages": []}, {"conversations": []}])
    assert "formats considered: openai (1 of 2" in str(info.value)
    with pytest.raises(FormatDetectionError, match="keys seen: foo"):
        detect_format([{"foo": 1}])
    with pytest.raises(FormatDetectionError, match="no JSON object"):
        detect_format([[1, 2]])


def test_undetectable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DatasetInvalid, match="cannot detect the format"):
        load_dataset(path)


def test_normalize_raises_record_error_and_accepts_text_parts() -> None:
    with pytest.raises(RecordError) as info:
        normalize({"messages": [{"role": "user", "content": "x"}]}, "openai", line=7)
    assert (info.value.code, info.value.line) == ("no_assistant_message", 7)
    conv = normalize(
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "c"},
            ]
        },
        "openai",
    )
    assert conv == Conversation(messages=(Message("user", "ab"), Message("assistant", "c")))
    with pytest.raises(RecordError, match="'weight' must be 0 or 1"):
        normalize(
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]},
            "openai",
        )
    with pytest.raises(RecordError) as info:
        normalize({"conversations": [{"from": "human", "value": "x"}, {"from": "robot", "value": "y"}]}, "sharegpt")
    assert info.value.code == "unrecognized_role" and info.value.field == "conversations[1].from"
    with pytest.raises(RecordError) as info:
        normalize({"text": "   "}, "text")
    assert info.value.code == "empty_example"
    with pytest.raises(ValueError, match="unknown format"):
        normalize({}, "csv")


def test_several_errors_in_one_record_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "multi.jsonl"
    record = {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": ""}]}
    path.write_text(json.dumps(record) + "\n")
    report = check_dataset(path)
    assert [(e.field, e.code) for e in report.errors] == [
        ("messages[0].role", "unrecognized_role"),
        ("messages[1].content", "missing_content"),
    ]
    assert report.train.invalid == 1


def test_s3_uri_is_read_through_corral_artifacts(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import corral.artifacts

    calls: list[tuple[str, Path]] = []

    class FakeStore:
        def get_file(self, uri: str, local: Path) -> None:
            calls.append((uri, Path(local)))
            shutil.copy(DATA / "dolly.jsonl", local)

    monkeypatch.setattr(corral.artifacts, "open_store", lambda uri, settings=None: FakeStore())
    report = check_dataset("s3://bucket/data/dolly.jsonl")
    assert report.format == "dolly" and report.train.examples == 2
    assert calls[0][0] == "s3://bucket/data/dolly.jsonl" and calls[0][1].name == "dolly.jsonl"
    assert not calls[0][1].exists()  # the temporary copy is removed after reading
