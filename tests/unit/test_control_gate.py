"""The evaluation gate (pure) and the FineTuneJob reconciler's promotion decision."""

from __future__ import annotations

from corral.api.v1alpha1.finetunejob import Evaluation, EvaluationGate, EvaluationScores, EvaluationSplit
from corral.control._gate import gate_decision


def _scores(similarity: float, exact: float) -> EvaluationScores:
    return EvaluationScores(loss=1.0, exact_match_percent=exact, similarity_percent=similarity)


def _evaluation(trained: tuple[float, float], held: tuple[float, float] | None = None) -> Evaluation:
    splits = [EvaluationSplit(name="trained", examples=58, fine_tuned=_scores(*trained), base=_scores(8.0, 0.0))]
    if held is not None:
        splits.insert(
            0, EvaluationSplit(name="heldOut", examples=6, fine_tuned=_scores(*held), base=_scores(13.0, 0.0))
        )
    return Evaluation(splits=splits)


def test_default_gate_needs_a_point_over_the_base() -> None:
    assert gate_decision(EvaluationGate(), _evaluation((95.0, 90.0))).promote
    refused = gate_decision(EvaluationGate(), _evaluation((8.5, 0.0)))
    assert not refused.promote and refused.reason == "EvaluationBelowThreshold"
    assert "+0.5 points of similarity" in refused.message and "minImprovementPercent 1" in refused.message


def test_thresholds_name_the_score_and_the_threshold() -> None:
    gate = EvaluationGate(min_trained_score_percent=60)
    refused = gate_decision(gate, _evaluation((41.25, 10.0)))
    assert not refused.promote
    assert refused.message.startswith("trained similarity score 41.2% is below minTrainedScorePercent 60%")
    exact = gate_decision(EvaluationGate(metric="exactMatch", min_trained_score_percent=60), _evaluation((99.0, 50.0)))
    assert not exact.promote and "trained exact match score 50.0%" in exact.message


def test_held_out_threshold_and_improvement_use_the_held_out_split() -> None:
    gate = EvaluationGate(min_held_out_score_percent=30, min_improvement_percent=10)
    passed = gate_decision(gate, _evaluation((100.0, 100.0), held=(32.0, 0.0)))
    assert passed.promote and passed.reason == "EvaluationPassed"
    assert "held-out similarity 32.0% (base 13.0%)" in passed.message
    low = gate_decision(EvaluationGate(min_improvement_percent=30), _evaluation((100.0, 100.0), held=(32.0, 0.0)))
    assert not low.promote and "on held-out questions +19.0 points" in low.message


def test_a_held_out_threshold_without_a_held_out_split_refuses() -> None:
    refused = gate_decision(EvaluationGate(min_held_out_score_percent=10), _evaluation((100.0, 100.0)))
    assert not refused.promote and refused.reason == "EvaluationMissing"


def test_no_evaluation_promotes_with_its_own_reason() -> None:
    decision = gate_decision(EvaluationGate(min_trained_score_percent=99), None)
    assert decision.promote and decision.reason == "NotEvaluated"


def test_a_refused_job_succeeds_without_touching_the_deployment() -> None:
    from corral.control import TrainingObservation
    from corral.drivers import JobState
    from tests.unit.test_control_finetunejob import cond, job, kinds, step, submitted, world

    gated = {"deployment": "support", "servedName": "support-bot", "gate": {"minTrainedScorePercent": 60}}
    obj = submitted(job(deployOnSuccess=gated))
    assert obj.status.hyperparameters is not None and obj.status.hyperparameters.reasons
    sid = obj.status.submission_id
    assert sid
    training = TrainingObservation(
        completed_output_uri="file:///srv/out", evaluation=_evaluation((41.25, 10.0), held=(20.0, 0.0))
    )
    obj, result = step(obj, world(job=JobState(sid, "SUCCEEDED"), training=training))
    assert obj.status.phase == "Succeeded" and obj.status.evaluation == training.evaluation
    promoted = cond(obj, "Promoted")
    assert (promoted.status, promoted.reason) == ("False", "EvaluationBelowThreshold")
    assert "41.2% is below minTrainedScorePercent 60%" in promoted.message
    assert [k.__name__ for k in kinds(result)] == ["CreateObject"]  # the output Model only, no deployment
    warnings = [
        a for a in result.actions if type(a).__name__ == "RecordEvent" and a.reason == "EvaluationBelowThreshold"
    ]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    _, again = step(obj, world(job=JobState(sid, "SUCCEEDED"), training=training))
    assert not [a for a in again.actions if type(a).__name__ == "RecordEvent"]  # the event is recorded once
