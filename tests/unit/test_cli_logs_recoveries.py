"""``corral logs`` marks recoveries: restarts on the status line, a line per recovery with ``-f``."""

from __future__ import annotations

from corral.cli._logs import _describe, recovery_note


def test_the_status_line_counts_restarts_and_names_the_resume_step() -> None:
    status = {"phase": "Running", "progress": {"step": 52, "totalSteps": 240, "epoch": 7}, "restarts": 1}
    status["resumedFromStep"] = 50
    assert _describe(status).endswith("restarts 1 (resumed from step 50)")
    assert "restarts" not in _describe({"phase": "Running"})


def test_a_recovery_reason_on_running_is_a_note() -> None:
    message = "Training restarted (...): the run stopped after step 84 and resumed from checkpoint step 50"
    status = {"conditions": [{"type": "Running", "status": "True", "reason": "Resumed", "message": message}]}
    assert recovery_note(status) == f"Resumed: {message}"
    plain = {"conditions": [{"type": "Running", "status": "True", "reason": "JobRunning", "message": "x"}]}
    assert recovery_note(plain) is None
