"""Architecture configurations of the tiny base models.

All three keep ``head_dim == 64`` (vLLM's CPU attention kernels reject smaller heads),
use two attention heads of 64 (hidden size 128), four layers, a 2048-token vocabulary and
untied input/output embeddings, like the real families they stand for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["ARCHITECTURES", "HEAD_DIM", "MAX_POSITIONS", "VOCAB_SIZE", "make_config"]

#: Supported architectures: ``llama`` (LLaMA, Alpaca, Vicuna, Koala), ``gpt_neox``
#: (Pythia, hence Dolly 2.0) and ``glm`` (the ChatGLM line as transformers has it natively).
ARCHITECTURES = ("llama", "gpt_neox", "glm")

VOCAB_SIZE = 2048
HEAD_DIM = 64
MAX_POSITIONS = 1024
_HIDDEN = 128
_HEADS = 2
_LAYERS = 4
_FFN = 384
# Special token ids, fixed by the tokenizer's vocabulary order (see _corpus.SPECIAL_TOKENS).
PAD_ID, BOS_ID, EOS_ID = 0, 2, 3


def make_config(arch: str) -> PretrainedConfig:
    """Return the transformers config of the tiny ``arch`` model.

    Args:
        arch: One of :data:`ARCHITECTURES`.

    Returns:
        A config whose ``head_dim`` is 64.

    Raises:
        ValueError: ``arch`` is not supported.
    """
    from transformers import GlmConfig, GPTNeoXConfig, LlamaConfig  # lazily: the control plane imports this module

    common: dict[str, Any] = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": _HIDDEN,
        "num_hidden_layers": _LAYERS,
        "num_attention_heads": _HEADS,
        "intermediate_size": _FFN,
        "max_position_embeddings": MAX_POSITIONS,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "pad_token_id": PAD_ID,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
    }
    if arch == "llama":
        return LlamaConfig(
            **common,
            num_key_value_heads=_HEADS,
            head_dim=HEAD_DIM,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            **common,
            hidden_act="gelu",
            use_parallel_residual=True,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.25,
            },
        )
    if arch == "glm":
        return GlmConfig(
            **common,
            num_key_value_heads=_HEADS,
            head_dim=HEAD_DIM,
            rms_norm_eps=1e-5,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
            },
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; allowed: {', '.join(ARCHITECTURES)}")
