"""The ~60M-parameter llama that the serving and multi-LoRA benchmarks share (one shape, one seed)."""

from __future__ import annotations

from pathlib import Path


def build_llama_60m(directory: Path, tokenizer_from: Path) -> Path:
    """Save a ~60M-parameter llama (random weights, seed 0, float32) with the tiny tokenizer.

    Args:
        directory: Where to save the model and tokenizer.
        tokenizer_from: A model folder whose tokenizer to copy (the tiny llama's).

    Returns:
        ``directory``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=2048,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=8,
        num_attention_heads=12,
        num_key_value_heads=12,
        head_dim=64,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(directory)
    return directory
