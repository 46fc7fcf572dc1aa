"""The record formats people have, normalized into one conversation form.

Every format becomes a :class:`Conversation` of :class:`Message` s with roles
``system``, ``user`` and ``assistant``:

* ``alpaca``: ``instruction`` (+ ``input``), ``output``; optional ``system`` and
  ``history`` (a list of ``[user, assistant]`` pairs placed before the instruction).
* ``dolly``: ``instruction`` (+ ``context``), ``response``; ``category`` is ignored.
* ``sharegpt``: ``conversations: [{from, value}]`` with ``from`` in human/user,
  gpt/assistant/chatgpt, system; optional top-level ``system``.
* ``openai``: ``messages: [{role, content, weight?}]``; ``weight`` 0 excludes an
  assistant message from the loss; ``content`` may be a list of text parts.
* ``prompt_completion``: ``prompt``, ``completion`` become one user and one assistant
  message, with ``kind="completion"``.
* ``text``: ``text`` becomes an example without roles (``kind="text"``, loss on every token).

The instruction and its input/context are joined with a newline, as LLaMA-Factory does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from corral.data._records import ErrorCode, RecordError

__all__ = [
    "FORMATS",
    "Conversation",
    "FormatDetectionError",
    "Message",
    "Role",
    "detect_format",
    "normalize",
    "normalize_all_errors",
]

Role = Literal["system", "user", "assistant"]
Kind = Literal["chat", "completion", "text"]

#: Concrete formats, in the order detection reports them.
FORMATS = ("openai", "sharegpt", "alpaca", "dolly", "prompt_completion", "text")

_SHAREGPT_ROLES: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}
_OPENAI_ROLES: tuple[Role, ...] = ("system", "user", "assistant")


class FormatDetectionError(ValueError):
    """``format: auto`` could not tell which format the records are in."""


@dataclass(frozen=True)
class Message:
    """One turn of a conversation.

    Attributes:
        role: ``system``, ``user`` or ``assistant``.
        content: The text of the turn.
        weight: 1 to train on this (assistant) turn, 0 to keep it as context only.
    """

    role: Role
    content: str
    weight: int = 1


@dataclass(frozen=True)
class Conversation:
    """One normalized example.

    Attributes:
        messages: The turns (empty for ``kind="text"``).
        source_line: 1-based line (JSONL) or 0-based index (JSON array) it came from.
        kind: ``chat``; ``completion`` for prompt/completion records (one user and one
            assistant message); ``text`` for plain text (see :attr:`text`).
        text: The document of a ``text`` example.
    """

    messages: tuple[Message, ...] = ()
    source_line: int = -1
    kind: Kind = "chat"
    text: str | None = None

    def content_key(self) -> tuple[tuple[str, str], ...]:
        """The content that identifies the example for duplicate and leakage checks."""
        if self.kind == "text":
            return (("text", (self.text or "").strip()),)
        return tuple((m.role, m.content.strip()) for m in self.messages)


# --------------------------------------------------------------------------- detection

_SIGNATURES: dict[str, tuple[frozenset[str], ...]] = {
    # any one of the key sets identifies the format
    "openai": (frozenset({"messages"}),),
    "sharegpt": (frozenset({"conversations"}),),
    "alpaca": (frozenset({"instruction", "output"}), frozenset({"instruction", "input"})),
    "dolly": (frozenset({"instruction", "response"}), frozenset({"instruction", "context"})),
    "prompt_completion": (frozenset({"prompt", "completion"}),),
    "text": (frozenset({"text"}),),
}


def _matches(keys: set[str]) -> list[str]:
    return [fmt for fmt, sets in _SIGNATURES.items() if any(s <= keys for s in sets)]


def detect_format(records: Iterable[Any], sample: int = 100) -> tuple[str, str]:
    """Tell the format of ``records`` from the key sets of the first valid ones.

    Args:
        records: Decoded records (or ``(line, record)`` pairs from
            :func:`~corral.data.read_records`); non-objects and errors are skipped.
        sample: How many object records to look at.

    Returns:
        ``(format, reason)``, the reason saying what was seen, e.g.
        ``"alpaca: 100 of 100 sampled records have instruction/output keys"``.

    Raises:
        FormatDetectionError: No record matches a known format, or two formats match
            equally often; the message lists the formats considered with their counts.
    """
    counts: Counter[str] = Counter()
    seen = 0
    keysets: Counter[tuple[str, ...]] = Counter()
    for item in records:
        record = item[1] if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], int) else item
        if not isinstance(record, Mapping):
            continue
        keys = {str(k) for k in record}
        keysets[tuple(sorted(keys))] += 1
        matched = _matches(keys)
        # A record with a text field and the keys of a richer format is that format.
        if len(matched) > 1 and "text" in matched:
            matched.remove("text")
        counts.update(matched)
        seen += 1
        if seen >= sample:
            break
    considered = ", ".join(
        f"{fmt} ({counts[fmt]} of {seen}, needs {' or '.join('+'.join(sorted(s)) for s in _SIGNATURES[fmt])})"
        for fmt in FORMATS
    )
    if seen == 0:
        raise FormatDetectionError("cannot detect the format: no JSON object records were found")
    ranked = counts.most_common()
    if not ranked:
        common = ", ".join("/".join(k) for k, _ in keysets.most_common(3))
        raise FormatDetectionError(
            f"cannot detect the format: no known key set in {seen} sampled records (keys seen: {common}); "
            f"formats considered: {considered}. Set format explicitly."
        )
    best, best_count = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == best_count:
        tied = [fmt for fmt, c in ranked if c == best_count]
        raise FormatDetectionError(
            f"ambiguous format: {' and '.join(tied)} match equally ({best_count} of {seen} sampled records); "
            f"formats considered: {considered}. Set format explicitly."
        )
    needed = " or ".join("/".join(sorted(s)) for s in _SIGNATURES[best])
    return best, f"{best}: {best_count} of {seen} sampled records have {needed} keys"


# --------------------------------------------------------------------------- normalization


class _Errors:
    """Collects the errors of one record."""

    def __init__(self) -> None:
        self.items: list[RecordError] = []

    def add(self, code: ErrorCode, field: str, message: str) -> None:
        self.items.append(RecordError(code, field, message))


def _type_name(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _string(
    record: Mapping[str, Any], key: str, errs: _Errors, *, required: bool, path: str = "", content: bool = True
) -> str | None:
    """Read a string field; report missing_field, wrong_type or (if ``content``) missing_content."""
    name = f"{path}{key}"
    if key not in record:
        if required:
            errs.add("missing_field", name, f"required field {name!r} is missing")
        return None
    value = record[key]
    if value is None and not required:
        return None
    if not isinstance(value, str):
        if value is None:
            errs.add("missing_content", name, f"{name!r} is null")
        else:
            errs.add("wrong_type", name, f"{name!r} must be a string, got {_type_name(value)}")
        return None
    if content and required and not value.strip():
        errs.add("missing_content", name, f"{name!r} is empty")
        return None
    return value


def _join(first: str, second: str | None) -> str:
    return f"{first}\n{second}" if second and second.strip() else first


def _alpaca_like(record: Mapping[str, Any], errs: _Errors, extra: str, answer: str) -> list[Message]:
    messages: list[Message] = []
    system = _string(record, "system", errs, required=False)
    if system and system.strip():
        messages.append(Message("system", system))
    history = record.get("history")
    if history is not None:
        if not isinstance(history, list):
            errs.add("wrong_type", "history", f"'history' must be an array of [user, assistant] pairs, got "
                     f"{_type_name(history)}")
        else:
            for i, pair in enumerate(history):
                if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                    errs.add("wrong_type", f"history[{i}]", "each history item must be a [user, assistant] pair "
                             "of strings")
                    continue
                messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    instruction = _string(record, "instruction", errs, required=True, content=False)
    context = _string(record, extra, errs, required=False)
    output = _string(record, answer, errs, required=True)
    if instruction is not None:
        prompt = _join(instruction, context)
        if not prompt.strip():
            errs.add("missing_content", "instruction", f"'instruction' and {extra!r} are both empty")
        messages.append(Message("user", prompt))
    if output is not None:
        messages.append(Message("assistant", output))
    return messages


def _content(value: Any, field: str, errs: _Errors) -> str | None:
    """OpenAI content: a string or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(value, list):
        parts: list[str] = []
        for j, part in enumerate(value):
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                errs.add("wrong_type", f"{field}[{j}]", "content parts must be {\"type\": \"text\", \"text\": str}")
                return None
        value = "".join(parts)
    if value is None:
        errs.add("missing_content", field, f"{field!r} is null")
        return None
    if not isinstance(value, str):
        errs.add("wrong_type", field, f"{field!r} must be a string, got {_type_name(value)}")
        return None
    if not value.strip():
        errs.add("missing_content", field, f"{field!r} is empty")
        return None
    return value


def _turns(
    record: Mapping[str, Any],
    errs: _Errors,
    *,
    list_key: str,
    role_key: str,
    content_key: str,
    roles: Mapping[str, Role],
) -> list[Message]:
    if list_key not in record:
        errs.add("missing_field", list_key, f"required field {list_key!r} is missing")
        return []
    turns = record[list_key]
    if not isinstance(turns, list):
        errs.add("wrong_type", list_key, f"{list_key!r} must be an array, got {_type_name(turns)}")
        return []
    messages: list[Message] = []
    allowed = ", ".join(sorted(roles))
    for i, turn in enumerate(turns):
        where = f"{list_key}[{i}]"
        if not isinstance(turn, Mapping):
            errs.add("wrong_type", where, f"{where!r} must be an object, got {_type_name(turn)}")
            continue
        role_name = turn.get(role_key)
        if role_key not in turn:
            errs.add("missing_field", f"{where}.{role_key}", f"required field {role_key!r} is missing")
            continue
        if not isinstance(role_name, str):
            errs.add("wrong_type", f"{where}.{role_key}", f"{role_key!r} must be a string, got "
                     f"{_type_name(role_name)}")
            continue
        role = roles.get(role_name if list_key == "messages" else role_name.lower())
        if role is None:
            errs.add("unrecognized_role", f"{where}.{role_key}", f"unrecognized role {role_name!r}; allowed: {allowed}")
            continue
        if content_key not in turn:
            errs.add("missing_content", f"{where}.{content_key}", f"{content_key!r} is missing")
            continue
        content = _content(turn[content_key], f"{where}.{content_key}", errs)
        weight = turn.get("weight", 1)
        if weight not in (0, 1) or isinstance(weight, bool):
            errs.add("wrong_type", f"{where}.weight", f"'weight' must be 0 or 1, got {weight!r}")
            continue
        if content is not None:
            messages.append(Message(role, content, int(weight)))
    if not turns:
        errs.add("empty_example", list_key, f"{list_key!r} is empty")
    return messages


def _normalize(record: Any, fmt: str) -> tuple[Conversation | None, list[RecordError]]:
    errs = _Errors()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if not isinstance(record, Mapping):
        errs.add("wrong_type", "", f"a record must be a JSON object, got {_type_name(record)}")
        return None, errs.items
    kind: Kind = "chat"
    if fmt == "text":
        text = _string(record, "text", errs, required=True, content=False)
        if text is not None and not text.strip():
            errs.add("empty_example", "text", "'text' is empty")
        if errs.items or text is None:
            return None, errs.items
        return Conversation(kind="text", text=text), []
    if fmt == "openai":
        messages = _turns(record, errs, list_key="messages", role_key="role", content_key="content",
                          roles={r: r for r in _OPENAI_ROLES})
    elif fmt == "sharegpt":
        messages = []
        system = _string(record, "system", errs, required=False)
        if system and system.strip():
            messages.append(Message("system", system))
        messages += _turns(record, errs, list_key="conversations", role_key="from", content_key="value",
                           roles=_SHAREGPT_ROLES)
    elif fmt == "alpaca":
        messages = _alpaca_like(record, errs, "input", "output")
    elif fmt == "dolly":
        messages = _alpaca_like(record, errs, "context", "response")
    else:  # prompt_completion
        kind = "completion"
        prompt = _string(record, "prompt", errs, required=True, content=False)
        completion = _string(record, "completion", errs, required=True)
        messages = []
        if prompt is not None and completion is not None:
            messages = [Message("user", prompt), Message("assistant", completion)]
    if not errs.items and not any(m.role == "assistant" for m in messages):
        errs.add("no_assistant_message", "", "the example has no assistant message to train on")
    if errs.items:
        return None, errs.items
    return Conversation(messages=tuple(messages), kind=kind), []


def normalize_all_errors(record: Any, fmt: str, line: int = -1) -> tuple[Conversation | None, list[RecordError]]:
    """Normalize ``record`` and collect every error in it (not just the first).

    Args:
        record: A decoded JSON value.
        fmt: A concrete format from :data:`FORMATS`.
        line: Line or index of the record, stored on the result and the errors.

    Returns:
        ``(conversation, [])`` for a valid record, ``(None, errors)`` otherwise.
    """
    conv, errors = _normalize(record, fmt)
    if conv is not None:
        conv = Conversation(messages=conv.messages, source_line=line, kind=conv.kind, text=conv.text)
    return conv, [e.at(line) for e in errors]


def normalize(record: Any, fmt: str, line: int = -1) -> Conversation:
    """Normalize one record of format ``fmt`` into a :class:`Conversation`.

    Args:
        record: A decoded JSON value.
        fmt: A concrete format from :data:`FORMATS` (not ``auto``).
        line: Line or index of the record, stored as ``source_line``.

    Returns:
        The conversation.

    Raises:
        RecordError: The first problem found (code, field, message).
        ValueError: ``fmt`` is not a known format.
    """
    conv, errors = normalize_all_errors(record, fmt, line)
    if conv is None:
        raise errors[0]
    return conv
