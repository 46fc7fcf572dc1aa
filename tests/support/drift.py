"""Compare weights trained under two process layouts (1 process, DDP, FSDP, ZeRO) by how far training moved them.

Two layouts of the same training run do the same arithmetic in another order: an all-reduce
or reduce-scatter over 2 ranks sums ``(a + b) + (c + d)`` where one process accumulates
``((a + b) + c) + d``. In float32 each such sum may differ by a rounding error (2^-24 of the
summands, a few times over for the sizes here), and AdamW then divides every coordinate's
gradient by its own running magnitude: a coordinate whose gradient is close to zero (a
cancellation) can take a visibly different update from a rounding-sized difference, up to
the learning rate per step. So there is no per-element tolerance that is both safe and
tight: a single element out of 1024 differed by 3e-5 (0.3% of its value) on one CPU and by
less than 2e-5 on another, for the same code.

What reduction order cannot do is move the weights as a whole: the difference between two
layouts, measured as a norm over each tensor, stays a small fraction of the distance the
training moved that tensor (``|w_init - w_ref|``). A real bug moves it by a large fraction:
a gradient taken over one shard, a clipping norm over one shard, a skipped or repeated
micro-batch, a lost optimizer state. :func:`drift` is that fraction; the tests bound it and
also check, in the same run, that a run with one real difference (another clipping
threshold) is far outside the bound, so the bound cannot pass everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["Drift", "assert_trained_alike", "drift"]

# Measured (2 cores, float32, gloo; tests/unit/test_training_strategies.py, 8 AdamW steps of
# lr 3e-3): LoRA under FSDP, ZeRO-2 and ZeRO-3 drifts by 3e-5 overall and 3.1e-4 in the worst
# tensor; full fine-tunes and resumed/resharded chains by 1e-6 and 6e-6. A gradient norm taken
# over one of two shards (clipping at 2*sqrt(2) instead of 2) drifts by 6.9e-2 overall and
# 1.4e-1 in the worst tensor; a clipping threshold of 1.9 instead of 2.0, by 6.8e-3 and 1.1e-2.
# The bound sits ~6x above the worst layout drift and ~35x below the one-shard-norm bug.
DRIFT_BOUND = 2e-3


@dataclass(frozen=True)
class Drift:
    """How far ``got`` is from ``want``, relative to how far training moved ``want`` from ``init``."""

    worst: float  # the largest per-tensor ratio
    worst_key: str
    overall: float  # the ratio over all tensors together

    def __str__(self) -> str:
        return f"drift {self.overall:.2e} overall, worst {self.worst:.2e} ({self.worst_key})"


def drift(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], init: Mapping[str, torch.Tensor]) -> Drift:
    """``|got - want| / |want - init|`` per tensor (Frobenius norms, in float64) and over all tensors.

    Args:
        got: Weights of the run under test.
        want: Weights of the reference run.
        init: The weights both runs started from.
    """
    if set(got) != set(want) or set(want) != set(init):
        raise AssertionError(f"different tensors: {sorted(set(got) ^ set(want))} {sorted(set(want) ^ set(init))}")
    worst, worst_key, diff_sq, moved_sq = 0.0, "", 0.0, 0.0
    for key in sorted(want):
        w = want[key].detach().double()
        diff = float(torch.linalg.vector_norm(got[key].detach().double() - w))
        moved = float(torch.linalg.vector_norm(w - init[key].detach().double()))
        diff_sq, moved_sq = diff_sq + diff**2, moved_sq + moved**2
        ratio = diff / moved if moved else (0.0 if diff == 0 else float("inf"))
        if ratio >= worst:
            worst, worst_key = ratio, key
    overall = (diff_sq**0.5) / (moved_sq**0.5) if moved_sq else float("inf")
    return Drift(worst, worst_key, overall)


def assert_trained_alike(
    got: Mapping[str, torch.Tensor],
    want: Mapping[str, torch.Tensor],
    init: Mapping[str, torch.Tensor],
    *,
    bound: float = DRIFT_BOUND,
) -> Drift:
    """Assert that every tensor of ``got`` is within ``bound`` of ``want``, relative to its training update."""
    result = drift(got, want, init)
    assert result.worst <= bound, f"{result}: more than {bound:.0e} of what training moved the weights"
    return result
