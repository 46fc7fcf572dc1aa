"""Kubernetes resource quantities (``500m``, ``2``, ``1.5``, ``24G``, ``80Gi``), parsed once.

Specs keep quantities as the strings users write (so the CRD schema and ``kubectl`` show
them unchanged, and the KubeRay builders pass them to pods as they are); whoever needs a
number parses the string here: :meth:`Quantity.parse` gives the exact value, ``float()``
of it a CPU count, :func:`parse_quantity` an integer (bytes for memory).

Only the suffixes of Kubernetes' ``resource.Quantity`` are known: the decimal SI ``m k M G
T P E`` and the binary ``Ki Mi Gi Ti Pi Ei``; no exponent form, no sign.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["QUANTITY_PATTERN", "Quantity", "parse_quantity"]

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
"""The quantities specs accept (a number, an optional suffix)."""

_MULTIPLIERS: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>[A-Za-z]*)")


@dataclass(frozen=True)
class Quantity:
    """A parsed quantity.

    Attributes:
        text: The quantity as written (surrounding spaces dropped), e.g. ``500m``.
        value: Its exact value: ``Decimal("0.5")`` for ``500m``, ``Decimal(80 * 2**30)`` for ``80Gi``.
    """

    text: str
    value: Decimal

    @classmethod
    def parse(cls, text: str) -> Quantity:
        """Parse a quantity.

        Args:
            text: A quantity such as ``500m``, ``4``, ``24Gi``.

        Returns:
            The quantity with its exact value.

        Raises:
            ValueError: Not a quantity (a sign, an exponent, an unknown suffix); says what is allowed.
        """
        stripped = text.strip()
        match = _QUANTITY.fullmatch(stripped)
        if match is None or match["suffix"] not in _MULTIPLIERS:
            raise ValueError(
                f"{text!r} is not a quantity; expected a non-negative number with an optional suffix "
                f"({', '.join(s for s in _MULTIPLIERS if s)}), e.g. 500m, 4 or 80Gi"
            )
        return cls(stripped, Decimal(match["number"]) * _MULTIPLIERS[match["suffix"]])

    def __float__(self) -> float:
        return float(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __str__(self) -> str:
        return self.text


def parse_quantity(text: str) -> int:
    """The integer value of a quantity, rounded down: bytes for ``80Gi``, ``0`` for ``500m``.

    Raises:
        ValueError: Not a quantity (see :meth:`Quantity.parse`).
    """
    return int(Quantity.parse(text))
