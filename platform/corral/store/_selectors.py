"""Kubernetes label selectors: parse ``a=b,c!=d,e in (x,y),f notin (z),!g,h`` and match labels.

The grammar and semantics follow ``k8s.io/apimachinery/pkg/labels``: requirements are
ANDed, ``!=`` and ``notin`` also match objects without the key, ``in``/``notin`` need a
non-empty set, ``>``/``<`` compare integer values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["LabelSelector", "Requirement", "SelectorError", "parse_selector"]

Operator = Literal["=", "!=", "in", "notin", "exists", "!", "gt", "lt"]

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY_RE = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")
_TOKEN_RE = re.compile(r"\s*(==|!=|=|!|\(|\)|,|>|<|[^\s=!(),<>]+)")


class SelectorError(ValueError):
    """A label selector string that does not parse."""


@dataclass(frozen=True)
class Requirement:
    """One requirement of a selector: ``key operator values``."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Return whether ``labels`` satisfy this requirement."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator == "=":
            return present and value == self.values[0]
        if self.operator == "!=":
            return not present or value != self.values[0]
        if self.operator == "in":
            return present and value in self.values
        if self.operator == "notin":
            return not present or value not in self.values
        if not present or value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.operator == "gt" else number < bound

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return f"!{self.key}"
        if self.operator in ("in", "notin"):
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        symbol = {"gt": ">", "lt": "<"}.get(self.operator, self.operator)
        return f"{self.key}{symbol}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector: every requirement must hold (an empty selector matches everything)."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> LabelSelector:
        """Build the selector ``k1=v1,k2=v2`` of a ``matchLabels`` mapping."""
        return cls(tuple(Requirement(_key(k), "=", (_value(v),)) for k, v in sorted(labels.items())))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Return whether ``labels`` satisfy every requirement."""
        labels = labels or {}
        return all(req.matches(labels) for req in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(req) for req in self.requirements)


def _key(text: str) -> str:
    if not _KEY_RE.match(text) or len(text) > 316:
        raise SelectorError(f"invalid label key {text!r}: a qualified name such as app or corral.dev/team")
    return text


def _value(text: str) -> str:
    if not _VALUE_RE.match(text):
        raise SelectorError(
            f"invalid label value {text!r}: at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
        )
    return text


def _tokens(text: str) -> list[str]:
    tokens = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:  # pragma: no cover - the token pattern matches any non-space character
            raise SelectorError(f"unexpected character at {pos} in {text!r}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token

    def fail(self, expected: str) -> SelectorError:
        found = self.peek()
        where = f"found {found!r}" if found is not None else "found end of selector"
        return SelectorError(f"invalid label selector {self.text!r}: expected {expected}, {where}")

    def parse(self) -> LabelSelector:
        requirements: list[Requirement] = []
        if self.peek() is None:
            return LabelSelector()
        while True:
            requirements.append(self.requirement())
            token = self.take()
            if token is None:
                return LabelSelector(tuple(requirements))
            if token != ",":
                self.pos -= 1
                raise self.fail("',' or end of selector")

    def identifier(self, what: str) -> str:
        token = self.peek()
        if token is None or token in {"==", "!=", "=", "!", "(", ")", ",", ">", "<"}:
            raise self.fail(what)
        self.pos += 1
        return token

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.take()
            return Requirement(_key(self.identifier("a label key after '!'")), "!")
        key = _key(self.identifier("a label key"))
        token = self.peek()
        if token is None or token == ",":
            return Requirement(key, "exists")
        self.take()
        if token in ("=", "==", "!="):
            value = self.single_value()
            return Requirement(key, "!=" if token == "!=" else "=", (value,))
        if token in (">", "<"):
            value = self.single_value()
            try:
                int(value)
            except ValueError:
                raise SelectorError(
                    f"invalid label selector {self.text!r}: {key}{token}{value}: the value must be an integer"
                ) from None
            return Requirement(key, "gt" if token == ">" else "lt", (value,))
        if token in ("in", "notin"):
            return Requirement(key, "in" if token == "in" else "notin", self.value_set())
        self.pos -= 1
        raise self.fail("an operator (=, ==, !=, in, notin, >, <)")

    def single_value(self) -> str:
        token = self.peek()
        if token is None or token in {",", ")"}:
            return ""
        return _value(self.identifier("a label value"))

    def value_set(self) -> tuple[str, ...]:
        if self.take() != "(":
            self.pos -= 1
            raise self.fail("'('")
        values: list[str] = []
        while True:
            token = self.peek()
            if token == ")":
                self.take()
                break
            if token == ",":
                self.take()
                continue
            values.append(_value(self.identifier("a label value or ')'")))
        if not values:
            raise SelectorError(f"invalid label selector {self.text!r}: 'in' and 'notin' need at least one value")
        return tuple(sorted(set(values)))


def parse_selector(selector: str | Mapping[str, str] | LabelSelector | Iterable[Requirement] | None) -> LabelSelector:
    """Parse a label selector.

    Args:
        selector: A selector string (``app=bot,tier!=dev``), a ``matchLabels`` mapping,
            an already parsed :class:`LabelSelector`, requirements, or ``None`` (match everything).

    Returns:
        The parsed selector.

    Raises:
        SelectorError: The string is not a valid Kubernetes label selector.
    """
    if selector is None:
        return LabelSelector()
    if isinstance(selector, LabelSelector):
        return selector
    if isinstance(selector, str):
        return _Parser(selector).parse()
    if isinstance(selector, Mapping):
        return LabelSelector.from_labels(selector)
    return LabelSelector(tuple(selector))
