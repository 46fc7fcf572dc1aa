"""Benchmark: Corral's training loop vs a plain HF + PEFT loop — tokens/s, MFU, peak memory vs the estimate.

For each method (``lora``, ``qlora`` on CUDA only, ``full``) on a random-init LLaMA shape:

* ``corral``: :func:`corral.training.build_model` + :func:`corral.training.run_loop`, exactly
  what a Ray Train worker runs (precision ``auto``: on a GPU the LoRA base in bf16, autocast).
* ``plain``: the loop a user would write: ``from_pretrained`` (LoRA base in bf16 on a GPU, fp32
  on CPU), PEFT, AdamW, ``autocast`` in bf16 on a GPU, ``loss.backward()``, ``step()``.

Both see the same batches (random tokens, every position trained). Tokens/s excludes the first
``--warmup`` steps. MFU = tokens/s x training FLOPs per token (the scheduler's formula) / the
accelerator's dense bf16 peak (only on a GPU). Peak memory is ``torch.cuda.max_memory_allocated``
(GPU only), compared with :func:`corral.scheduler.estimate_training` for the same batch. The
Alpaca projection: 52,002 examples x 3 epochs x ~180 tokens at the measured rate and price.

Shapes: ``tiny`` (CPU default: hidden 256, 4 layers), ``1b`` (TinyLlama-1.1B), ``7b`` (LLaMA-7B).
Goals (issue #18, H100/H200-class GPU): LoRA 7B >= 40% MFU, full 1B >= 35%, each >= 1.0x plain.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/gpu_train.py            # CPU, tiny, quick
    python bench/gpu_train.py --shape 7b --methods lora,qlora --steps 12 --batch 8 --seq 512

Prints a table and writes ``bench/results/gpu_train.json`` (``gpu_train_cpu.json`` on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 4, "vocab_size": 2048},
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
           "num_key_value_heads": 4, "vocab_size": 32000},
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32, "vocab_size": 32000},
}  # fmt: skip
ALPACA_TOKENS = 52_002 * 3 * 180
PRICE_PER_GPU_HOUR = 2.99


def build(path: Path, shape: str, seq: int, device: Any) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=max(seq, 2048), tie_word_embeddings=False)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device.type):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(path)
    del model
    return json.loads((path / "config.json").read_text())


def batches(vocab: int, steps: int, batch: int, seq: int) -> list[Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    return [torch.randint(4, vocab, (batch, seq), generator=g) for _ in range(steps)]


def run_corral(path: Path, method: str, data: list[Any], device: Any, lr: float) -> tuple[float, int | None]:
    import torch

    from corral.api.v1alpha1.finetunejob import Hyperparameters, LoRASpec
    from corral.training import LoopConfig, build_model, run_loop
    from corral.training._data import Unit

    batch, seq = data[0].shape
    lora = LoRASpec(rank=16, alpha=32, dropout=0.0) if method != "full" else None
    model = build_model(path, method, lora, seed=0, device=device, precision="auto")  # type: ignore[arg-type]
    units = [Unit(list(map(int, row)), list(map(int, row)), (seq,)) for b in data for row in b]
    hp = Hyperparameters(
        epochs=1, learning_rate=lr, global_batch_size=batch, micro_batch_size=batch, warmup_ratio=0.0, seed=0
    )
    cfg = LoopConfig(method=method, lora=lora, hyperparameters=hp, checkpoint_every_steps=10**6)  # type: ignore[arg-type]
    times: list[float] = []

    class Timing:  # progress events arrive once per optimizer step
        rank, world_size = 0, 1

        def all_reduce_sum(self, value: Any) -> Any:
            return value

        def wrap_model(self, m: Any) -> Any:
            return m

        def on_progress(self, event: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter())

        def on_checkpoint(self, *args: Any) -> None:
            return None

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times.append(time.perf_counter())
    run_loop(model, units, [], cfg, pad_id=0, callbacks=Timing(), device=device)  # type: ignore[arg-type]
    peak = int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None
    del model
    return _rate(times, batch * seq), peak


def run_plain(path: Path, method: str, data: list[Any], device: Any, lr: float) -> tuple[float, int | None]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    batch, seq = data[0].shape
    on_gpu = device.type == "cuda"
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if on_gpu and method != "full" else torch.float32}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = (
        AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device)
        if method != "qlora"
        else (AutoModelForCausalLM.from_pretrained(path, device_map={"": device}, **kwargs))
    )
    if method != "full":
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    times = [time.perf_counter()]
    for batch_ids in data:
        ids = batch_ids.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    peak = int(torch.cuda.max_memory_allocated()) if on_gpu else None
    del model, optim
    return _rate(times, batch * seq), peak


WARMUP = 2


def _rate(times: list[float], tokens_per_step: int) -> float:
    steps = times[WARMUP:]
    return tokens_per_step * (len(steps) - 1) / (steps[-1] - steps[0])


def main() -> None:
    import torch

    from corral.scheduler import ModelProfile, estimate_training, get_accelerator
    from corral.scheduler._estimate import training_flops_per_token

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default=None, help="default: 7b on a GPU, tiny on CPU")
    parser.add_argument("--methods", default=None, help="comma-separated; default lora,qlora,full on a GPU")
    parser.add_argument("--steps", type=int, default=8, help=f"optimizer steps (the first {WARMUP} not timed)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--accelerator", default="nvidia-h200", help="Corral accelerator name for the MFU peak")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    shape = args.shape or ("7b" if on_gpu else "tiny")
    methods = (args.methods or ("lora,qlora,full" if on_gpu else "lora,full")).split(",")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    acc = get_accelerator(args.accelerator)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = build(Path(tmp), shape, args.seq, device)
        profile = ModelProfile.from_hf_config(config)
        data = batches(config["vocab_size"], args.steps, args.batch, args.seq)
        for method in methods:
            lr = 1e-5 if method == "full" else 1e-4
            trainable = profile.params if method == "full" else profile.lora_params(16)
            flops = training_flops_per_token(profile, method=method, trainable=trainable, seq_len=args.seq,
                                             recompute=False)  # fmt: skip
            est = estimate_training(profile, method=method, micro_batch_size=args.batch, max_seq_len=args.seq,
                                    gpus_per_worker=1 if on_gpu else 0, accelerator=acc, lora_rank=16)  # fmt: skip
            for name, fn in (("corral", run_corral), ("plain", run_plain)):
                rate, peak = fn(Path(tmp), method, data, device, lr)
                if on_gpu:
                    torch.cuda.empty_cache()
                mfu = rate * flops / (acc.peak_tflops * 1e12) if on_gpu else None
                hours = ALPACA_TOKENS / rate / 3600
                rows.append({
                    "method": method, "loop": name, "tok_per_s": round(rate, 1),
                    "mfu": round(mfu, 4) if mfu is not None else None,
                    "peak_gib": round(peak / 2**30, 2) if peak else None,
                    "estimate_gib": round(est.memory_per_gpu / 2**30, 2),
                    "peak_over_estimate": round(peak / est.memory_per_gpu, 3) if peak else None,
                    "alpaca_hours": round(hours, 2), "alpaca_usd": round(hours * PRICE_PER_GPU_HOUR, 2),
                })  # fmt: skip
    print(f"\n{shape} on {device.type} ({acc.name}: {acc.peak_tflops} TFLOP/s), batch {args.batch} x seq {args.seq}")
    head = ("method", "loop", "tok/s", "MFU", "peak GiB", "est GiB", "peak/est", "Alpaca h")
    print(f"{head[0]:<7}{head[1]:<8}" + "".join(f"{h:>10}" for h in head[2:]))
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"{r['method']:<7}{r['loop']:<8}{r['tok_per_s']:>10.1f}{mfu:>10}{r['peak_gib'] or '-':>10}"
              f"{r['estimate_gib']:>10}{r['peak_over_estimate'] or '-':>10}{r['alpaca_hours']:>10}")  # fmt: skip
    ratios = {
        m: round(next(r["tok_per_s"] for r in rows if r["method"] == m and r["loop"] == "corral")
                 / next(r["tok_per_s"] for r in rows if r["method"] == m and r["loop"] == "plain"), 3)
        for m in methods
    }  # fmt: skip
    print("corral / plain tokens/s:", ratios)
    result = {
        "benchmark": "gpu_train",
        "settings": {"shape": shape, "device": device.type, "batch": args.batch, "seq": args.seq,
                     "steps": args.steps, "warmup": WARMUP, "accelerator": acc.name,
                     "gpu": torch.cuda.get_device_name() if on_gpu else None,
                     "load_average": [round(x, 2) for x in os.getloadavg()]},
        "rows": rows,
        "corral_over_plain": ratios,
        "goals": {"lora_7b_mfu": 0.40, "full_1b_mfu": 0.35, "corral_over_plain": 1.0, "peak_within_estimate": 0.15},
    }  # fmt: skip
    out = ROOT / "bench" / "results" / ("gpu_train.json" if on_gpu else "gpu_train_cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
