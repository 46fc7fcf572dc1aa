"""The evaluation gate: whether a finished fine-tune may be promoted to its deployment.

A pure function of ``spec.deployOnSuccess.gate`` and ``status.evaluation``. The thresholds
are percentages of the gate's metric (``similarity`` or ``exactMatch``); the improvement is
the fine-tune's score minus the base model's on the same questions (held-out when there is a
held-out split, else the training sample). Below any threshold the output is not promoted:
the job still succeeds and its ``Promoted`` condition (``False``, reason
``EvaluationBelowThreshold``) names the score and the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.api.v1alpha1.finetunejob import Evaluation, EvaluationGate, EvaluationScores, EvaluationSplit

__all__ = ["GateDecision", "evaluation_summary", "gate_decision"]

_LABEL = {"heldOut": "held-out", "trained": "trained"}
_METRIC = {"similarity": "similarity", "exactMatch": "exact match"}


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, and the ``Promoted`` condition's reason and message."""

    promote: bool
    reason: str
    message: str


def _score(scores: EvaluationScores, metric: str) -> float:
    return scores.exact_match_percent if metric == "exactMatch" else scores.similarity_percent


def _describe(split: EvaluationSplit, metric: str) -> str:
    tuned, base = _score(split.fine_tuned, metric), _score(split.base, metric)
    return f"{_LABEL[split.name]} {_METRIC[metric]} {tuned:.1f}% (base {base:.1f}%, {split.examples} questions)"


def evaluation_summary(evaluation: Evaluation, metric: str = "similarity") -> str:
    """One line: each split's score of the fine-tune and of the base."""
    return evaluation.summary(metric)


def gate_decision(gate: EvaluationGate, evaluation: Evaluation | None) -> GateDecision:
    """Decide promotion.

    Args:
        gate: The thresholds.
        evaluation: The job's evaluation (None: the trainer recorded none).

    Returns:
        ``promote`` and the condition's reason and message.
    """
    metric = gate.metric
    if evaluation is None:
        return GateDecision(True, "NotEvaluated", "no evaluation was recorded (a trainer before evaluation existed)")
    held, trained = evaluation.split("heldOut"), evaluation.split("trained")
    name = _METRIC[metric]
    checks: list[tuple[str, EvaluationSplit | None, int | None]] = [
        ("minTrainedScorePercent", trained, gate.min_trained_score_percent),
        ("minHeldOutScorePercent", held, gate.min_held_out_score_percent),
    ]
    for field, split, threshold in checks:
        if threshold is None:
            continue
        if split is None:
            return GateDecision(
                False,
                "EvaluationMissing",
                f"{field}={threshold} is set but the evaluation has no "
                f"{'held-out' if field == 'minHeldOutScorePercent' else 'trained'} split (set validationDataset "
                "or hyperparameters.validationSplitPercent)",
            )
        score = _score(split.fine_tuned, metric)
        if score < threshold:
            return GateDecision(
                False,
                "EvaluationBelowThreshold",
                f"{_LABEL[split.name]} {name} score {score:.1f}% is below {field} {threshold}% "
                f"({evaluation_summary(evaluation, metric)})",
            )
    compared = held or trained
    if gate.min_improvement_percent is not None and compared is not None:
        tuned, base = _score(compared.fine_tuned, metric), _score(compared.base, metric)
        gain = tuned - base
        if gain < gate.min_improvement_percent:
            return GateDecision(
                False,
                "EvaluationBelowThreshold",
                f"improvement over the base on {_LABEL[compared.name]} questions {gain:+.1f} points of {name} "
                f"(fine-tune {tuned:.1f}%, base {base:.1f}%) is below minImprovementPercent "
                f"{gate.min_improvement_percent}",
            )
    return GateDecision(True, "EvaluationPassed", f"{evaluation_summary(evaluation, metric)}: meets the gate")
