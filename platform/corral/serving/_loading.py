"""Fetch weights from the artifact store and load them for serving."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from corral.artifacts import open_store, parse_uri

__all__ = ["fetch_dir", "load_base"]

logger = logging.getLogger(__name__)


def _cache_root() -> Path:
    root = os.environ.get("CORRAL_SERVING_CACHE") or str(Path(tempfile.gettempdir()) / "corral-serving-cache")
    return Path(root)


def fetch_dir(uri: str, cache_root: Path | None = None) -> Path:
    """Return a local directory holding the artifacts under ``uri``.

    ``file://`` URIs (and absolute paths) are used in place; ``s3://`` and ``hf://`` are
    downloaded once into ``cache_root`` (default ``$CORRAL_SERVING_CACHE`` or a temp dir),
    keyed by the URI.

    Raises:
        ValueError: ``uri`` is not an artifact URI.
        corral.artifacts.ArtifactNotFound: Nothing is stored under ``uri``.
    """
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        path = Path(parsed.path)
        if not path.is_dir():
            raise FileNotFoundError(f"{uri}: not a directory")
        return path
    root = cache_root or _cache_root()
    local = root / hashlib.sha256(str(parsed).encode()).hexdigest()[:24]
    done = local / ".corral-complete"
    if not done.exists():
        logger.info("downloading %s into %s", uri, local)
        open_store(parsed).download_dir(parsed, local)
        done.write_text(str(parsed))
    return local


def load_base(
    uri: str, chat_template: str | None = None, *, trust_remote_code: bool = False, device: str = "cpu"
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from ``uri`` for inference (eval mode).

    On the CPU the weights are float32; on a GPU (``device="cuda"``) bf16, or fp16 where the GPU
    has no bf16, on that device.

    Args:
        uri: Where the model is (``file://``, ``s3://``, ``hf://``).
        chat_template: A Jinja chat template that overrides the tokenizer's own.
        trust_remote_code: Run the model code shipped with the weights (a Model with
            ``spec.trustRemoteCode`` in a namespace that allows it).
        device: ``cpu`` or ``cuda`` (the replica's one GPU).

    Returns:
        ``(model, tokenizer)``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = fetch_dir(uri)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if chat_template:
        tokenizer.chat_template = chat_template
    dtype = torch.float32
    if device != "cpu":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    model = model.to(device)
    model.eval()
    return model, tokenizer
