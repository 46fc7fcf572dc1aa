"""Benchmark: the serving engine vs static-batch ``model.generate``, and mixed multi-LoRA batches vs base-only.

* **engine vs generate**: at each concurrency c, c requests of the same prompt (``--prompt``
  tokens) each generating exactly ``--tokens`` tokens (``ignore_eos``), through
  :class:`corral.serving.TransformersEngine` (continuous batching), and the same c prompts as one
  static batch through ``model.generate(max_new_tokens=min_new_tokens=N, do_sample=False)``.
  Output tokens/s of each and their ratio (goal: engine >= 1.0x generate at every c).
* **multi-LoRA**: at the highest concurrency, the engine with 8 adapters (r=16, q/k/v/o) and
  requests round-robin over them vs the same engine with base-only requests (goal >= 0.8x).

Model: on a GPU a random-init LLaMA-7B shape in bf16 (``--shape 7b``); on CPU the ~60M llama the
other serving benchmarks use (float32, one thread). Each measurement runs ``--rounds`` times
(paired: engine and generate back to back) and reports medians.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/gpu_serving.py                 # CPU, quick
    python bench/gpu_serving.py --shape 7b --levels 1,8,32,64 --tokens 128   # on a GPU

Prints a table and writes ``bench/results/gpu_serving.json`` (``gpu_serving_cpu.json`` on CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "bench"))
ADAPTERS = 8


def build(root: Path, shape: str, device: Any) -> Path:
    import torch
    from _models import build_llama_60m, save_random_adapters
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from corral.models import tiny

    small = tiny.build("llama", root / "tiny")
    base = root / "base"
    if shape == "60m":
        build_llama_60m(base, small)
    else:
        cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)  # fmt: skip
        torch.manual_seed(0)
        with torch.device(device.type):
            AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(base)
        AutoTokenizer.from_pretrained(small).save_pretrained(base)
    folders = [root / f"adapter-{i}" for i in range(ADAPTERS)]
    save_random_adapters(base, folders, rank=16, targets=["q_proj", "k_proj", "v_proj", "o_proj"], seed=100)
    return base


def load(base: Path, device: Any) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(base)


def prompt_ids(vocab: int, length: int) -> tuple[int, ...]:
    import torch

    g = torch.Generator().manual_seed(7)
    return tuple(int(t) for t in torch.randint(4, vocab, (length,), generator=g))


async def engine_rate(engine: Any, ids: tuple[int, ...], c: int, tokens: int, adapters: list[str | None]) -> float:
    from corral.serving import GenerationRequest, SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)

    async def one(i: int) -> int:
        n = 0
        async for chunk in engine.generate(GenerationRequest(ids, params, adapter=adapters[i % len(adapters)])):
            n = chunk.completion_tokens
        if n != tokens:
            raise RuntimeError(f"a request generated {n} tokens instead of {tokens}")
        return n

    start = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(c)))
    return sum(done) / (time.perf_counter() - start)


def generate_rate(model: Any, ids: tuple[int, ...], c: int, tokens: int) -> float:
    import torch

    batch = torch.tensor([list(ids)] * c, device=model.device)
    mask = torch.ones_like(batch)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=batch, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
        )
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert out.shape[1] - batch.shape[1] == tokens
    return c * tokens / seconds


async def measure(args: argparse.Namespace, base: Path, root: Path, device: Any) -> dict[str, Any]:
    import torch

    from corral.serving import TransformersEngine

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    model, tok = load(base, device)
    ids = prompt_ids(model.config.vocab_size, args.prompt)
    names = [f"adapter-{i}" for i in range(ADAPTERS)]
    levels = [int(x) for x in args.levels.split(",")]
    engine = TransformersEngine(
        model,
        tok,
        adapters={n: f"file://{root / n}" for n in names},
        max_adapters=ADAPTERS,
        max_batch_size=max(levels),
        max_waiting=4 * max(levels),
    )
    await engine_rate(engine, ids, 2, 4, [None])  # warm-up
    rows = []
    for c in levels:
        eng, gen = [], []
        for _ in range(args.rounds):
            eng.append(await engine_rate(engine, ids, c, args.tokens, [None]))
            gen.append(await asyncio.to_thread(generate_rate, model, ids, c, args.tokens))
        ratio = statistics.median(e / g for e, g in zip(eng, gen, strict=True))
        rows.append({"concurrency": c, "engine_tok_s": round(statistics.median(eng), 1),
                     "generate_tok_s": round(statistics.median(gen), 1),
                     "engine_over_generate": round(ratio, 3)})  # fmt: skip
    for n in names:
        await engine.load_adapter(n)
    c = max(levels)
    base_only, mixed = [], []
    for _ in range(args.rounds):
        base_only.append(await engine_rate(engine, ids, c, args.tokens, [None]))
        mixed.append(await engine_rate(engine, ids, c, args.tokens, list(names)))
    await engine.close()
    multilora = {
        "concurrency": c,
        "adapters": ADAPTERS,
        "base_tok_s": round(statistics.median(base_only), 1),
        "mixed_tok_s": round(statistics.median(mixed), 1),
        "mixed_over_base": round(statistics.median(m / b for m, b in zip(mixed, base_only, strict=True)), 3),
        "batched_lora": engine.adapters.batched is not None,
    }
    return {"levels": rows, "multilora": multilora}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["60m", "7b"], default=None, help="default: 7b on a GPU, 60m on CPU")
    parser.add_argument("--levels", default=None, help="concurrencies; default 1,8,32,64 on a GPU, 1,4,8 on CPU")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per answer (128 GPU, 16 CPU)")
    parser.add_argument("--prompt", type=int, default=None, help="prompt tokens (128 GPU, 32 CPU)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    shape = args.shape or ("7b" if on_gpu else "60m")
    args.levels = args.levels or ("1,8,32,64" if on_gpu else "1,4,8")
    args.tokens = args.tokens or (128 if on_gpu else 16)
    args.prompt = args.prompt or (128 if on_gpu else 32)
    with tempfile.TemporaryDirectory() as tmp:
        base = build(Path(tmp), shape, device)
        result = asyncio.run(measure(args, base, Path(tmp), device))
    print(f"\n{shape} on {device.type}: prompt {args.prompt} tokens, {args.tokens} out, {args.rounds} rounds (medians)")
    print(f"{'c':>4}{'engine tok/s':>14}{'generate tok/s':>16}{'engine/generate':>17}")
    for r in result["levels"]:
        print(f"{r['concurrency']:>4}{r['engine_tok_s']:>14}{r['generate_tok_s']:>16}{r['engine_over_generate']:>17}")
    m = result["multilora"]
    print(f"multi-LoRA at c={m['concurrency']}: {m['adapters']} adapters mixed {m['mixed_tok_s']} tok/s vs base "
          f"{m['base_tok_s']} tok/s = {m['mixed_over_base']}x (batched LoRA: {m['batched_lora']})")  # fmt: skip
    out = ROOT / "bench" / "results" / ("gpu_serving.json" if on_gpu else "gpu_serving_cpu.json")
    payload = {
        "benchmark": "gpu_serving",
        "settings": {"shape": shape, "device": device.type, "prompt": args.prompt, "tokens": args.tokens,
                     "rounds": args.rounds, "gpu": torch.cuda.get_device_name() if on_gpu else None,
                     "load_average": [round(x, 2) for x in os.getloadavg()]},
        **result,
        "goals": {"engine_over_generate_min": 1.0, "mixed_over_base_min": 0.8},
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
