"""Model shapes the estimator needs: parameters, layers, widths, heads and vocabulary.

A :class:`ModelProfile` comes either from a transformers ``config.json`` dict
(:meth:`ModelProfile.from_hf_config`) or, for catalog models that only publish a
parameter count, from the nearest standard LLaMA-family shape
(:meth:`ModelProfile.from_catalog_params`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["GATED_MLP_ARCHITECTURES", "MHA_ARCHITECTURES", "ModelProfile", "STANDARD_SHAPES"]

GATED_MLP_ARCHITECTURES = frozenset({"llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "mixtral", "chatglm"})
"""Architectures whose MLP has gate, up and down projections (SwiGLU/GeGLU): 3 matrices, not 2."""

MHA_ARCHITECTURES = frozenset({"gpt_neox", "glm", "pangu_alpha", "gpt2", "opt", "bloom", "falcon"})
"""Architectures with one KV head per attention head (no grouped-query attention) by default."""


@dataclass(frozen=True)
class _Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    context: int


# Standard shapes by nominal size (published configs):
# 1B/3B: Llama 3.2; 7B/13B/33B/65B: LLaMA (1); 8B: Llama 3/3.1; 70B: Llama 3/3.1.
STANDARD_SHAPES: dict[str, _Shape] = {
    "1b": _Shape(layers=16, hidden=2048, heads=32, kv_heads=8, intermediate=8192, vocab=128256, context=131072),
    "3b": _Shape(layers=28, hidden=3072, heads=24, kv_heads=8, intermediate=8192, vocab=128256, context=131072),
    "7b": _Shape(layers=32, hidden=4096, heads=32, kv_heads=32, intermediate=11008, vocab=32000, context=2048),
    "8b": _Shape(layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336, vocab=128256, context=131072),
    "13b": _Shape(layers=40, hidden=5120, heads=40, kv_heads=40, intermediate=13824, vocab=32000, context=2048),
    "33b": _Shape(layers=60, hidden=6656, heads=52, kv_heads=52, intermediate=17920, vocab=32000, context=2048),
    "65b": _Shape(layers=80, hidden=8192, heads=64, kv_heads=64, intermediate=22016, vocab=32000, context=2048),
    "70b": _Shape(layers=80, hidden=8192, heads=64, kv_heads=8, intermediate=28672, vocab=128256, context=131072),
}
_NOMINAL = {"1b": 1.24e9, "3b": 3.21e9, "7b": 6.74e9, "8b": 8.03e9, "13b": 13.0e9, "33b": 32.5e9, "65b": 65.3e9,
            "70b": 70.6e9}


@dataclass(frozen=True)
class ModelProfile:
    """The shape of a decoder-only transformer, as far as memory and FLOPs go.

    Attributes:
        params: Total parameter count.
        layers: Transformer blocks.
        hidden_size: Model width.
        attention_heads: Query heads.
        kv_heads: Key/value heads (fewer than ``attention_heads`` with grouped-query attention).
        head_dim: Width of one head.
        intermediate_size: MLP inner width.
        vocab_size: Tokenizer vocabulary (rows of the embedding and LM head).
        context_length: Longest sequence the model was trained for.
        architecture: transformers ``model_type``, e.g. ``llama``.
        gated_mlp: True for SwiGLU-style MLPs (gate, up, down).
        tied_embeddings: True when the LM head shares the embedding matrix.
        approximate: True when the shape was guessed from the parameter count.
    """

    params: int
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    context_length: int
    architecture: str = "llama"
    gated_mlp: bool = True
    tied_embeddings: bool = False
    approximate: bool = False

    def __post_init__(self) -> None:
        for name in ("params", "layers", "hidden_size", "attention_heads", "kv_heads", "head_dim",
                     "intermediate_size", "vocab_size", "context_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelProfile.{name} must be a positive integer, got {value!r}")
        if self.kv_heads > self.attention_heads:
            raise ValueError(
                f"kv_heads ({self.kv_heads}) must not exceed attention_heads ({self.attention_heads})"
            )

    @property
    def embedding_params(self) -> int:
        """Parameters in the input embedding plus the LM head (one matrix when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def linear_params(self) -> int:
        """Parameters in the transformer blocks' linear layers (what 4-bit quantisation shrinks)."""
        return max(self.params - self.embedding_params, 0)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token needs at 16-bit: layers x 2 x KV heads x head size x 2 bytes."""
        return self.layers * 2 * self.kv_heads * self.head_dim * 2

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear module in one block, by its usual transformers name."""
        h, q, kv, i = self.hidden_size, self.attention_heads * self.head_dim, self.kv_heads * self.head_dim, (
            self.intermediate_size
        )
        shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
        if self.gated_mlp:
            shapes |= {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        else:
            shapes |= {"up_proj": (h, i), "down_proj": (i, h)}
        return shapes

    def lora_params(self, rank: int, targets: tuple[str, ...] | list[str] = ("all-linear",)) -> int:
        """Trainable parameters of a LoRA adapter of ``rank`` on ``targets`` (module names or ``all-linear``).

        Names are matched to LLaMA-style modules; common aliases (``query_key_value``, ``dense``,
        ``fc1``/``fc2``, ``w1``/``w2``/``w3``) map onto them. An unknown name counts as a
        hidden x hidden matrix.

        Raises:
            ValueError: ``rank`` is not positive.
        """
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        shapes = self.linear_shapes()
        aliases: dict[str, tuple[str, ...]] = {
            "query_key_value": ("q_proj", "k_proj", "v_proj"), "qkv_proj": ("q_proj", "k_proj", "v_proj"),
            "c_attn": ("q_proj", "k_proj", "v_proj"), "dense": ("o_proj",), "out_proj": ("o_proj",),
            "c_proj": ("o_proj",), "gate_up_proj": ("gate_proj", "up_proj"), "w1": ("gate_proj",),
            "w3": ("up_proj",), "w2": ("down_proj",), "fc1": ("up_proj",), "fc2": ("down_proj",),
            "dense_h_to_4h": ("up_proj",), "dense_4h_to_h": ("down_proj",),
        }
        chosen: set[str] = set()
        extra = 0
        for target in targets:
            if target in ("all-linear", "all"):
                chosen |= set(shapes)
            elif target in shapes:
                chosen.add(target)
            elif target in aliases:
                chosen |= {name for name in aliases[target] if name in shapes}
            else:
                extra += 2 * self.hidden_size
        per_layer = sum(shapes[name][0] + shapes[name][1] for name in chosen) + extra
        return rank * per_layer * self.layers

    def with_context(self, context_length: int) -> ModelProfile:
        """A copy with another context length (e.g. a catalog entry's)."""
        return replace(self, context_length=context_length)

    @classmethod
    def from_catalog_params(
        cls, params: int | float, architecture: str = "llama", context_length: int | None = None
    ) -> ModelProfile:
        """Approximate a shape from a parameter count and an architecture name.

        Between 0.7B and 100B the nearest standard shape (1B, 3B, 7B, 8B, 13B, 33B, 65B,
        70B; nearest in log-space) is used with the exact ``params`` kept. Outside that range,
        or when the nearest standard size is more than 1.6x away, a LLaMA-like shape is
        derived from ``params ~ 12 x layers x hidden^2`` with hidden/layers ~ 128 (as LLaMA 7B's
        4096/32). Architectures without grouped-query attention (``gpt_neox``, ``glm``, ...)
        get one KV head per attention head.

        Args:
            params: Parameter count, e.g. ``7e9``.
            architecture: transformers ``model_type``.
            context_length: Context length to record; unset uses the standard shape's.

        Raises:
            ValueError: ``params`` is not positive.
        """
        if not params or params <= 0 or not math.isfinite(float(params)):
            raise ValueError(f"params must be a positive number, got {params!r}")
        count = int(params)
        label = min(_NOMINAL, key=lambda k: abs(math.log(count / _NOMINAL[k])))
        ratio = count / _NOMINAL[label]
        if 0.625 <= ratio <= 1.6:
            shape = STANDARD_SHAPES[label]
            head_dim = shape.hidden // shape.heads
            layers, hidden, heads, kv, inter, vocab = (
                shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.intermediate, shape.vocab
            )
            context = shape.context
        else:
            hidden = max(64, round((count * 128 / 12) ** (1 / 3) / 64) * 64)
            layers = max(1, round(count / (12 * hidden * hidden)))
            head_dim = 64 if hidden < 2048 else 128
            heads = max(1, hidden // head_dim)
            kv = heads if hidden < 2048 else max(1, heads // 8)
            inter = 4 * hidden if architecture in MHA_ARCHITECTURES else round(hidden * 8 / 3 / 64) * 64 or hidden
            vocab = max(256, min(32000, int(0.1 * count / hidden)))  # embeddings ~10% of small models
            context = 4096
        if architecture in MHA_ARCHITECTURES:
            kv = heads
        return cls(
            params=count,
            layers=layers,
            hidden_size=hidden,
            attention_heads=heads,
            kv_heads=kv,
            head_dim=head_dim,
            intermediate_size=inter,
            vocab_size=vocab,
            context_length=context_length or context,
            architecture=architecture,
            gated_mlp=architecture not in MHA_ARCHITECTURES,
            approximate=True,
        )

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], params: int | None = None) -> ModelProfile:
        """Build a profile from a transformers ``config.json`` dict.

        Reads the LLaMA names (``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``,
        ``num_key_value_heads``, ``intermediate_size``, ``vocab_size``,
        ``max_position_embeddings``) and the GPT-2/NeoX/ChatGLM aliases. Parameters are
        counted from the shape unless ``params`` is given.

        Raises:
            ValueError: A required field is missing or not a positive integer.
        """

        def pick(*names: str, default: int | None = None) -> int:
            for name in names:
                value = config.get(name)
                if value is not None:
                    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                        raise ValueError(f"config field {name!r} must be a positive integer, got {value!r}")
                    return value
            if default is None:
                raise ValueError(f"config.json has none of {', '.join(names)}; cannot size the model")
            return default

        architecture = str(config.get("model_type", "llama"))
        layers = pick("num_hidden_layers", "n_layer", "num_layers")
        hidden = pick("hidden_size", "n_embd", "d_model")
        heads = pick("num_attention_heads", "n_head")
        kv_default = heads
        if config.get("multi_query_attention") and config.get("multi_query_group_num"):
            kv_default = int(config["multi_query_group_num"])
        kv = pick("num_key_value_heads", default=kv_default)
        head_dim = pick("head_dim", default=max(1, hidden // heads))
        gated = architecture not in MHA_ARCHITECTURES
        inter = pick("intermediate_size", "ffn_hidden_size", "n_inner", default=4 * hidden)
        vocab = pick("vocab_size", "padded_vocab_size")
        context = pick("max_position_embeddings", "seq_length", "n_positions", "max_sequence_length", default=2048)
        tied = bool(config.get("tie_word_embeddings", False))
        if params is None:
            attn = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
            mlp = (3 if gated else 2) * hidden * inter
            norms = 2 * hidden
            params = layers * (attn + mlp + norms) + vocab * hidden * (1 if tied else 2) + hidden
        return cls(
            params=int(params),
            layers=layers,
            hidden_size=hidden,
            attention_heads=heads,
            kv_heads=kv,
            head_dim=head_dim,
            intermediate_size=inter,
            vocab_size=vocab,
            context_length=context,
            architecture=architecture,
            gated_mlp=gated,
            tied_embeddings=tied,
            approximate=False,
        )
