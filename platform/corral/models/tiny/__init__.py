"""Tiny, pre-trained base models, one per supported architecture, built offline.

Each is a real (if small) causal LM: ~1.2-1.4 M parameters, ``head_dim`` 64, a
2048-token byte-level BPE tokenizer with a ChatML-style chat template, pre-trained on
text bundled with the package (Python documentation prose plus synthetic instruction
conversations) so that LoRA fine-tuning on it demonstrably learns. The weights ship in
``weights/<arch>/``; :func:`build` writes model and tokenizer with ``save_pretrained``
in about a second.

Example:
    >>> from corral.models import tiny
    >>> path = tiny.build("llama", "/tmp/tiny-llama")
    >>> # AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from corral.models.tiny._configs import ARCHITECTURES, HEAD_DIM

__all__ = ["ARCHITECTURES", "HEAD_DIM", "PACKAGE_DIR", "SAVED_TOKENIZER", "SHIPPED_SEED", "TOKENIZER_JSON", "build"]

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
TOKENIZER_JSON = PACKAGE_DIR / "tokenizer.json"
#: The tokenizer as ``save_pretrained`` writes it (scripts/pretrain_tiny.py regenerates it).
SAVED_TOKENIZER = PACKAGE_DIR / "saved_tokenizer"
#: The seed the shipped weights were pre-trained with.
SHIPPED_SEED = 0


def build(arch: str, path: str | Path, seed: int = SHIPPED_SEED) -> Path:
    """Write the tiny ``arch`` base model and its tokenizer into ``path``.

    No network and no torch are used: the pre-trained weights (``weights/<arch>``, as
    ``save_pretrained`` wrote them) and the tokenizer as ``save_pretrained`` writes it
    (``saved_tokenizer/``) ship with the package and are copied, so that
    ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``
    load them back, and the control plane (the operator materializes tiny presets) needs no ML
    stack. Building twice gives byte-identical files.

    Args:
        arch: One of :data:`ARCHITECTURES`.
        path: Output directory (created; existing files of the same name are replaced).
        seed: Pre-training seed. Only the shipped seed (0) is available here; other seeds
            take minutes of pre-training: run ``scripts/pretrain_tiny.py --seed N --out DIR``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``arch`` is not supported, or ``seed`` is not the shipped seed.
        FileNotFoundError: The shipped weights are missing from the installation.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    if seed != SHIPPED_SEED:
        raise ValueError(
            f"only seed {SHIPPED_SEED} ships pre-trained; for seed {seed} run "
            f"`python scripts/pretrain_tiny.py --arch {arch} --seed {seed} --out DIR` "
            "(about 10 minutes of one CPU thread) and load DIR instead"
        )
    weights = PACKAGE_DIR / "weights" / arch
    if not (weights / "model.safetensors").is_file():
        raise FileNotFoundError(f"shipped weights missing: {weights}; regenerate with scripts/pretrain_tiny.py")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    for source in (
        weights / "config.json",
        weights / "generation_config.json",
        weights / "model.safetensors",
        *sorted(SAVED_TOKENIZER.iterdir()),
    ):
        if source.is_file():
            shutil.copyfile(source, out / source.name)
    logger.info("built tiny %s model into %s", arch, out)
    return out
