"""Unit-test fixtures shared by the training tests: the shipped tiny llama and its tokenizer.

Module-scoped: each test module that asks for ``base``/``tok`` builds its own copy once. A
module defining a fixture of the same name uses its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.models import tiny


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama base model, written to a temporary directory."""
    return tiny.build("llama", tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def tok(base: Path) -> Any:
    """Its tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)
