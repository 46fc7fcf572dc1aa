"""The reconcile pass as ordered steps, and the one place the cleanup finalizer is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from corral.control import FINALIZER, PatchObject, Result
from corral.control._finalizer import ensure_finalizer, release_finalizer
from corral.control._finetunejob import _STEPS as JOB_STEPS
from corral.control._steps import run_steps
from tests.support.objects import NS, meta


@dataclass
class _Ctx:
    ran: list[str] = field(default_factory=list)

    def finish(self, requeue: float | None = None) -> Result:
        return Result(status=None, actions=[], requeue_after=requeue)


def _go(name: str) -> Callable[[_Ctx], Result | None]:
    def step(ctx: _Ctx) -> Result | None:
        ctx.ran.append(name)
        return None

    return step


def _end(ctx: _Ctx) -> Result:
    ctx.ran.append("end")
    return Result(status="ended", actions=[])


def test_steps_run_in_order_until_one_ends_the_pass() -> None:
    ctx = _Ctx()
    result = run_steps((_go("a"), _go("b"), _end, _go("never")), ctx)
    assert ctx.ran == ["a", "b", "end"] and result.status == "ended"


def test_a_pass_no_step_ends_is_finished_by_the_context() -> None:
    ctx = _Ctx()
    result = run_steps((_go("a"),), ctx)
    assert ctx.ran == ["a"] and result.status is None and result.requeue_after is None


def test_the_finetunejob_steps_are_named_and_ordered() -> None:
    names = [s.__name__.lstrip("_") for s in JOB_STEPS]
    assert names[:2] == ["ownership", "finalizer"]
    assert names.index("references") < names.index("license") < names.index("admit") < names.index("submit")
    assert names[-1] == "follow"


def test_finalizer_is_added_once_and_released_keeping_the_others() -> None:
    bare = meta("bot", finalizers=["other.io/keep"])
    assert ensure_finalizer("FineTuneJob", bare) == PatchObject(
        "FineTuneJob", NS, "bot", {"metadata": {"finalizers": ["other.io/keep", FINALIZER]}}
    )
    held = meta("bot", finalizers=["other.io/keep", FINALIZER])
    assert ensure_finalizer("FineTuneJob", held) is None
    assert release_finalizer("ModelDeployment", held) == PatchObject(
        "ModelDeployment", NS, "bot", {"metadata": {"finalizers": ["other.io/keep"]}}
    )
    assert release_finalizer("ModelDeployment", bare) is None
