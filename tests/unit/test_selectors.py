"""Kubernetes label selectors: grammar, semantics and error messages."""

from __future__ import annotations

import pytest

from corral.store import LabelSelector, SelectorError, parse_selector

LABELS = {"app": "bot", "tier": "prod", "corral.dev/team": "a", "replicas": "3"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=bot", True),
        ("app==bot", True),
        ("app=web", False),
        ("app!=web", True),
        ("missing!=x", True),
        ("tier in (prod,staging)", True),
        ("tier in (dev)", False),
        ("tier notin (dev, staging)", True),
        ("missing notin (x)", True),
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("corral.dev/team=a", True),
        ("replicas>2", True),
        ("replicas<3", False),
        ("app=bot,tier!=dev,tier in (prod),!gone,corral.dev/team", True),
        ("app=bot,tier=dev", False),
        ("  app = bot ,  tier in ( prod )  ", True),
    ],
)
def test_semantics(selector: str, matches: bool) -> None:
    assert parse_selector(selector).matches(LABELS) is matches


def test_empty_value_matches_empty_label() -> None:
    assert parse_selector("app=").matches({"app": ""})
    assert not parse_selector("app=").matches({})


def test_string_form_round_trips() -> None:
    text = "a=b,c!=d,e in (x,y),f notin (z),!g,h,n>1"
    parsed = parse_selector(text)
    assert str(parsed) == text
    assert parse_selector(str(parsed)) == parsed


def test_other_inputs() -> None:
    assert parse_selector(None).matches({})
    assert not parse_selector(None)
    from_map = parse_selector({"tier": "prod", "app": "bot"})
    assert str(from_map) == "app=bot,tier=prod"
    assert from_map.matches(LABELS)
    assert parse_selector(from_map) is from_map
    assert parse_selector(from_map.requirements) == from_map
    assert LabelSelector().matches(None)


@pytest.mark.parametrize(
    ("selector", "needle"),
    [
        ("=b", "expected a label key, found '='"),
        ("a b", "expected an operator"),
        ("a in ()", "need at least one value"),
        ("a in (x", "expected a label value or ')', found end of selector"),
        ("a in x", "expected '('"),
        ("!", "expected a label key after '!'"),
        ("a>z", "must be an integer"),
        ("a=b c", "expected ',' or end of selector, found 'c'"),
        ("a=b,", "expected a label key, found end of selector"),
        ("Bad_Prefix/x=1", "invalid label key"),
        ("a=-x", "invalid label value"),
    ],
)
def test_errors_say_what_was_expected(selector: str, needle: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(selector)
    assert needle in str(info.value)
