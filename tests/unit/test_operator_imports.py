"""The operator's reconcile path imports no torch (DESIGN.md: ``operators/`` imports no torch).

Reading a fine-tune's events file goes through ``corral.training._events``; importing it once
pulled in the whole ``corral.training`` package and torch (~450 MB of operator RSS and ~1.5 s
at the first FineTuneJob, measured by ``bench/operator_scale.py``). Checked in a fresh
interpreter, since this test session has torch loaded already.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import sys
import corral_operator._handlers
from corral.control import _observe
from corral.training import read_events, summarize, StartedEvent
heavy = sorted(m for m in ("torch", "transformers", "peft", "ray", "deepspeed") if m in sys.modules)
print(",".join(heavy))
"""


def test_operator_reconcile_path_imports_no_torch() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("platform", "operators"))}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == ""


def test_training_names_still_resolve() -> None:
    from corral import training

    for name in training.__all__:
        assert getattr(training, name) is not None, name
