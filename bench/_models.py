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


def save_random_adapters(base: Path, out: list[Path], *, rank: int, targets: list[str], seed: int) -> None:
    """Save one random LoRA adapter of ``base`` into each folder of ``out`` (weights ~ N(0, 0.02), seeds from ``seed``).

    One PEFT model is built and re-drawn per adapter, so 64 adapters of a 7B base cost one load.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    for i, folder in enumerate(out):
        torch.manual_seed(seed + i)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_" in name:
                    p.normal_(0.0, 0.02)
        peft.save_pretrained(folder)
