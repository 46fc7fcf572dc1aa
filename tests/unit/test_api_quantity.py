"""Kubernetes quantities are parsed in one place: exact values, CPU counts, bytes, clear errors."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import TypeAdapter, ValidationError

from corral.api import Quantity, parse_quantity
from corral.api.v1alpha1.common import QuantityString


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("1500m", Decimal("1.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("24G", Decimal(24 * 10**9)),
        ("80Gi", Decimal(80 * 2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("512Mi", Decimal(512 * 2**20)),
        (" 4 ", Decimal(4)),
    ],
)
def test_values_are_exact(text: str, value: Decimal) -> None:
    assert Quantity.parse(text).value == value


def test_cpu_counts_and_integers() -> None:
    assert float(Quantity.parse("500m")) == 0.5
    assert int(Quantity.parse("1500m")) == 1
    assert parse_quantity("2Ki") == 2048
    assert parse_quantity("500m") == 0
    assert str(Quantity.parse(" 250m")) == "250m"


@pytest.mark.parametrize("text", ["", "-1", "1e3", "2 Gi", "4GB", "m", "1.", "+2"])
def test_not_a_quantity_says_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a quantity; .*e\.g\. 500m, 4 or 80Gi"):
        Quantity.parse(text)


def test_every_string_a_spec_accepts_parses() -> None:
    accept = TypeAdapter(QuantityString)
    for text in ("500m", "4", "0.25", "80Gi", "24G", "1Ei"):
        assert Quantity.parse(accept.validate_python(text)).text == text
    with pytest.raises(ValidationError):
        accept.validate_python("1e3")
