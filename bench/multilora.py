"""Benchmark: 8 LoRA adapters on one replica vs. 8 separate single-model replicas.

Each setup runs in its own subprocess (so resident memory is measured cleanly) on a
~60M-parameter llama built from config, with 8 random LoRA adapters (r=8 on q/k/v/o):

* ``multi``: one :class:`~corral.serving.TransformersEngine` holding the base once and all
  8 adapters; requests for the 8 adapters share forward passes (batched LoRA: the adapters
  stacked per layer, two batched matmuls per layer for all rows).
* ``multi-peft``: the same with PEFT's per-adapter loop (``adapter_names=``), as before batched LoRA.
* ``separate``: 8 engines, each with its own copy of the model with one adapter merged in
  (what 8 single-model replicas hold), each request going to its adapter's engine.
* ``single``: one engine with the base only (the "one model" memory reference, and the
  throughput a mixed batch is compared with: the same requests without adapters).
* ``many``: one engine holding 64 adapters (r=8 on q/v, the LoRA paper's default), requests
  round-robin over all 64: memory of many adapters on one replica, and their throughput.

Workload: 32 greedy requests (16 with ``--quick``), round-robin over the adapters, 8 in flight,
each generating exactly ``max_tokens=16`` tokens: requests set ``ignore_eos`` (the engine's
vLLM-style option), because the random-weight model would otherwise end most answers after a
token or two and the throughput would measure prefill alone. Every answer's length is checked.
Every setup runs once per round, in its own process, for ``--rounds`` rounds (3); throughput
ratios are the medians of the per-round ratios, so a change in the machine's load between setups
of one round moves one ratio, not the result. Resident memory is the process RSS after loading
and serving; model bytes are the parameter bytes the setup holds. One torch thread per process
(the 8 separate engines run on 8 engine threads, so they may use both cores: the comparison favours ``separate``).

Goals: memory (multi) at most 1.3x one model; throughput (multi) at least 0.8x separate and at
least 0.8x base-only (``single``); 64 adapters (``many``) at most 1.3x one model's memory.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/multilora.py [--quick]

Prints a table and writes ``bench/results/multilora.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

RESULTS = ROOT / "bench" / "results" / "multilora.json"
ADAPTERS = 8
MANY = 64
SETUPS = ("single", "multi", "multi-peft", "separate", "many")
REQUESTS = 32
IN_FLIGHT = 8
MAX_TOKENS = 16
PROMPT = "The Python language reference describes"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found")


def build(root: Path) -> None:
    import torch
    from _models import build_llama_60m, save_random_adapters
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from corral.models import tiny

    small = tiny.build("llama", root / "tiny")
    build_llama_60m(root / "base", small)
    for i in range(ADAPTERS):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_pretrained(root / "base")
        lora = LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
        )
        get_peft_model(model, lora).save_pretrained(root / f"adapter-{i}")
    many = [root / f"many-{i}" for i in range(MANY)]
    save_random_adapters(root / "base", many, rank=8, targets=["q_proj", "v_proj"], seed=1000)


def param_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


async def run_worker(setup: str, root: Path, requests: int) -> dict[str, Any]:
    import torch

    from corral.serving import GenerationRequest, SamplingParams, TransformersEngine
    from corral.serving._loading import load_base
    from corral.serving._prompt import Prompter

    torch.set_num_threads(1)
    rss0 = rss_mb()
    model, tok = load_base(f"file://{root / 'base'}")
    ids = tuple(Prompter(tok).completion(PROMPT))
    names = [f"many-{i}" for i in range(MANY)] if setup == "many" else [f"adapter-{i}" for i in range(ADAPTERS)]
    engines: dict[str | None, TransformersEngine] = {}
    if setup == "single":
        engines[None] = TransformersEngine(model, tok, max_batch_size=16)
    elif setup in ("multi", "multi-peft", "many"):
        engines[None] = TransformersEngine(
            model,
            tok,
            adapters={n: f"file://{root / n}" for n in names},
            max_adapters=len(names),
            max_batch_size=16,
            batched_lora=setup != "multi-peft",
        )
        for n in names:
            await engines[None].load_adapter(n)
    else:
        from peft import PeftModel

        for n in names:
            merged = PeftModel.from_pretrained(copy.deepcopy(model), str(root / n)).merge_and_unload()
            engines[n] = TransformersEngine(merged, tok, max_batch_size=16)
        del model
    held = sum(param_bytes(e.adapters.model) for e in engines.values())

    def route(i: int) -> tuple[TransformersEngine, str | None]:
        name = names[i % len(names)]
        if setup == "single":
            return engines[None], None
        if setup in ("multi", "multi-peft", "many"):
            return engines[None], name
        return engines[name], None

    async def one(i: int) -> int:
        engine, adapter = route(i)
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
        n = 0
        async for c in engine.generate(GenerationRequest(ids, params, adapter=adapter)):
            n = c.completion_tokens
        if n != MAX_TOKENS:
            raise RuntimeError(f"{setup}: a request generated {n} tokens instead of {MAX_TOKENS}")
        return n

    await asyncio.gather(*(one(i) for i in range(min(len(names), 16))))  # warm-up
    queue = list(range(requests))
    tokens = 0

    async def client() -> None:
        nonlocal tokens
        while queue:
            n = await one(queue.pop())  # not `tokens += await ...`: that reads tokens before the await
            tokens += n

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
    seconds = time.perf_counter() - t0
    steps = sum(e.stats().steps for e in engines.values())
    for e in engines.values():
        await e.close()
    return {
        "setup": setup,
        "rss_mb": round(rss_mb(), 1),
        "rss_delta_mb": round(rss_mb() - rss0, 1),
        "model_mb": round(held / 2**20, 1),
        "seconds": round(seconds, 2),
        "requests": requests,
        "req_per_s": round(requests / seconds, 2),
        "tok_per_s": round(tokens / seconds, 1),
        "forward_passes": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{REQUESTS // 2} requests per setup instead of {REQUESTS}"
    )
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (ratios are their medians)")
    parser.add_argument("--requests", type=int, default=REQUESTS, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=list(SETUPS), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(run_worker(args.worker, Path(args.root), args.requests))))
        return
    requests = REQUESTS // 2 if args.quick else REQUESTS
    load_before = [round(x, 2) for x in os.getloadavg()]
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        for _ in range(args.rounds):  # paired rounds: every setup once per round, ratios per round
            one_round = {}
            for setup in SETUPS:
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", setup, "--root", tmp, "--requests", str(requests)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                one_round[setup] = json.loads(out.stdout.strip().splitlines()[-1])
            rounds.append(one_round)
    rows = {s: {**rounds[-1][s], "req_per_s_rounds": [r[s]["req_per_s"] for r in rounds]} for s in SETUPS}

    def ratio(a: str, b: str) -> float:
        """The median over rounds of a/b throughput (the machine's load changes between rounds, not within)."""
        return round(statistics.median(r[a]["req_per_s"] / r[b]["req_per_s"] for r in rounds), 2)

    print(f"\n{'setup':<10} {'RSS MB':>8} {'RSS delta':>10} {'model MB':>9} {'req/s':>7} {'tok/s':>7} {'fwd':>5}")
    for r in rows.values():
        print(
            f"{r['setup']:<10} {r['rss_mb']:>8.1f} {r['rss_delta_mb']:>10.1f} {r['model_mb']:>9.1f} "
            f"{r['req_per_s']:>7.2f} {r['tok_per_s']:>7.1f} {r['forward_passes']:>5}"
        )
    ratios = {
        "memory_multi_over_single_rss": round(rows["multi"]["rss_mb"] / rows["single"]["rss_mb"], 3),
        "memory_multi_over_single_model": round(rows["multi"]["model_mb"] / rows["single"]["model_mb"], 3),
        "memory_separate_over_multi_rss_delta": round(
            rows["separate"]["rss_delta_mb"] / rows["multi"]["rss_delta_mb"], 2
        ),
        "throughput_multi_over_separate": ratio("multi", "separate"),
        "throughput_mixed_over_base": ratio("multi", "single"),
        "throughput_mixed_peft_over_base": ratio("multi-peft", "single"),
        "throughput_batched_over_peft": ratio("multi", "multi-peft"),
        "memory_64_adapters_over_single_model": round(rows["many"]["model_mb"] / rows["single"]["model_mb"], 3),
        "memory_64_adapters_over_single_rss": round(rows["many"]["rss_mb"] / rows["single"]["rss_mb"], 3),
        "throughput_64_mixed_over_base": ratio("many", "single"),
    }
    print("\n" + json.dumps(ratios, indent=1))
    print(
        "goals: memory multi/single <= 1.3; throughput multi/separate >= 0.8; mixed/base >= 0.8; "
        "64 adapters memory/single <= 1.3"
    )
    print(f"load average before {load_before}, after {[round(x, 2) for x in os.getloadavg()]}")
    result = {
        "benchmark": "multilora",
        "settings": {
            "adapters": ADAPTERS,
            "requests": requests,
            "in_flight": IN_FLIGHT,
            "max_tokens": MAX_TOKENS,
            "ignore_eos": True,
            "quick": args.quick,
            "rounds": args.rounds,
            "load_average": load_before,
            "model": "llama ~60M params (hidden 768, 8 layers), float32",
            "lora": "r=8 q/k/v/o (many: 64 adapters r=8 q/v)",
            "torch_threads": 1,
        },
        "rows": rows,
        "ratios": ratios,
        "goals": {"memory_max": 1.3, "throughput_min": 0.8, "mixed_over_base_min": 0.8, "memory_64_max": 1.3},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
