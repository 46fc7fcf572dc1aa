"""The control plane's processes load no ML stack (issue 17, contract 1 typed and light).

The operator, the control API and the reconcilers build and read contract 1 (``TrainingJob``, the
events file) without torch, transformers, PEFT or DeepSpeed: those are for the Ray workers. Each
check runs in a fresh interpreter, since this test session has long imported torch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "peft", "deepspeed")


@pytest.mark.parametrize(
    "statement",
    [
        "import corral_operator._handlers",
        "import corral_operator.controlapi",
        "import corral.controlapi",
        "import corral.control",
        "import corral.embedded",
        "from corral.training import TrainingJob, EventWriter, load_job, read_events",
    ],
)
def test_the_control_plane_imports_no_ml_stack(statement: str) -> None:
    code = f"import sys\n{statement}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"{statement} imported {out.stdout.strip()}"


def test_the_training_package_still_offers_its_loop_on_first_use() -> None:
    code = "\n".join(
        [
            "import sys, corral.training as t",
            "assert 'torch' not in sys.modules",
            "t.run_loop",
            "print('torch' in sys.modules)",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"


def test_materializing_a_tiny_preset_needs_no_ml_stack(tmp_path: Path) -> None:
    """The operator builds the catalog's tiny bases (copies of shipped files): no torch in its image."""
    code = (
        "import sys\nfrom corral.control._observe import materialize_model\n"
        f"materialize_model('llama', {(tmp_path / 'tiny').as_uri()!r})\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""
    assert {p.name for p in (tmp_path / "tiny").iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}


def test_every_training_name_still_resolves() -> None:
    from corral import training

    for name in training.__all__:
        assert getattr(training, name) is not None, name
