"""A reconcile pass as an ordered list of small named steps (KubeRay's ``reconcileFuncs`` shape).

Each reconciler builds a per-call context (the status being built, the actions, the observed
world) and runs its steps in order. A step reads and changes the context and returns None
to go on, or a :class:`~corral.control.Result` to end the pass there (deleting, waiting,
refused, done). When every step goes on, the context's ``finish()`` ends the pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from ._actions import Result

__all__ = ["Step", "run_steps"]


class _Finishing(Protocol):
    def finish(self, requeue: float | None = None) -> Result: ...


C = TypeVar("C", bound=_Finishing)

Step = Callable[[C], Result | None]
"""One step of a pass: None goes on to the next step, a Result ends the pass."""


def run_steps(steps: Sequence[Step[C]], ctx: C) -> Result:
    """Run ``steps`` in order over ``ctx`` until one ends the pass.

    Args:
        steps: The reconciler's steps, in order.
        ctx: The per-call context they share.

    Returns:
        The first Result a step returns, else ``ctx.finish()``.
    """
    for step in steps:
        result = step(ctx)
        if result is not None:
            return result
    return ctx.finish()
