"""Resolve what a person types for a kind (``ftj``, ``finetunejobs``, ``FineTuneJob``) to its class."""

from __future__ import annotations

from .v1alpha1 import KINDS, Resource

__all__ = ["kind_for_name"]


def kind_for_name(text: str) -> type[Resource]:
    """Return the Corral kind a user means by ``text``, as ``kubectl`` resolves resource names.

    Accepts the kind (any case), its singular and plural resource names, and its short names.

    Raises:
        ValueError: ``text`` names no Corral kind; the message lists what is accepted.
    """
    wanted = text.strip().lower()
    for cls in KINDS.values():
        names = {cls.KIND.lower(), cls.PLURAL, *cls.SHORT_NAMES}
        if wanted in names:
            return cls
    accepted = ", ".join(f"{cls.PLURAL} ({'/'.join((cls.KIND.lower(), *cls.SHORT_NAMES))})" for cls in KINDS.values())
    raise ValueError(f"{text!r} is not a Corral kind (accepted: {accepted})")
