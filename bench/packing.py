"""Benchmark: sample packing against padding (forward + backward of a small Llama, 1 CPU thread).

The examples follow a realistic length mix: log-normal token counts like Alpaca's
(median ~150 tokens, long right tail), capped at ``--max-seq-len``. The same examples
(same tokens, same loss mask) go through three batchings:

* ``padding (shuffled)``: the usual baseline, ``--pad-batch`` examples per step in random
  order, right-padded to the longest in the step (:func:`corral.data.collate_padded`);
* ``padding (length-grouped)``: the stronger baseline, examples sorted by length first;
* ``packing``: :func:`corral.data.pack` into ``--max-seq-len`` sequences, ``--pack-batch``
  sequences per step, with the 4D block-diagonal mask (:func:`corral.data.collate_packed`);
* ``packing (position_ids)``: the same without a mask, transformers building it from the
  resetting position ids.

Real tokens/s counts only non-padding tokens per second of process CPU time (one thread,
so CPU time is the work done and other load on a shared machine does not skew it; wall
time is recorded too); waste is the share of padding positions.

Usage::

    OMP_NUM_THREADS=1 python bench/packing.py [--examples 96] [--max-seq-len 512]

Prints a table and writes ``bench/results/packing.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform as py_platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

import torch  # noqa: E402

from corral.data import IGNORE_INDEX, Example, collate_packed, collate_padded, pack  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "packing.json"
VOCAB = 2048


def length_mix(n: int, max_seq_len: int, seed: int) -> list[int]:
    """Log-normal lengths like Alpaca's tokenized examples (median 150, sigma 0.7)."""
    rng = random.Random(seed)
    return [max(16, min(max_seq_len, round(rng.lognormvariate(math.log(150), 0.7)))) for _ in range(n)]


def make_examples(lengths: Sequence[int], seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for k, n in enumerate(lengths):
        ids = [rng.randrange(4, VOCAB) for _ in range(n)]
        prompt = max(1, int(n * rng.uniform(0.2, 0.6)))  # loss on the answer only
        out.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:], source_line=k + 1, original_length=n))
    return out


def make_model(max_seq_len: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=max_seq_len,
        pad_token_id=0,
        use_cache=False,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).train()


Batch = tuple[dict[str, Any], int]  # model inputs, real (non-padding) tokens


def batches_padded(examples: list[Example], size: int, grouped: bool, seed: int) -> list[Batch]:
    order = list(examples)
    random.Random(seed).shuffle(order)
    if grouped:
        order.sort(key=lambda e: len(e.input_ids))
    groups = [order[i : i + size] for i in range(0, len(order), size)]
    if grouped:
        random.Random(seed + 1).shuffle(groups)
    return [(collate_padded(g, pad_token_id=0), sum(len(e.input_ids) for e in g)) for g in groups]


def batches_packed(examples: list[Example], max_seq_len: int, size: int, mask: bool, seed: int) -> list[Batch]:
    seqs = pack(examples, max_seq_len)
    random.Random(seed).shuffle(seqs)
    groups = [seqs[i : i + size] for i in range(0, len(seqs), size)]
    return [(collate_packed(g, pad_token_id=0, mask=mask), sum(len(s) for s in g)) for g in groups]


def run(model: Any, batches: list[Batch]) -> dict[str, Any]:
    real = sum(n for _, n in batches)
    positions = sum(int(b["input_ids"].numel()) for b, _ in batches)
    model(**batches[0][0]).loss.backward()  # warm-up
    model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    for batch, _ in batches:
        model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # One thread: process CPU time is the work done, robust to other load on a shared machine.
    seconds = cpu
    return {
        "steps": len(batches),
        "batch_shape": list(batches[0][0]["input_ids"].shape),
        "seconds": round(seconds, 3),
        "wall_seconds": round(wall, 3),
        "real_tokens": real,
        "positions": positions,
        "padding_waste": round(1 - real / positions, 4),
        "tokens_per_s": round(real / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--pad-batch", type=int, default=8)
    ap.add_argument("--pack-batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    lengths = length_mix(args.examples, args.max_seq_len, args.seed)
    examples = make_examples(lengths, args.seed)
    model = make_model(args.max_seq_len)
    methods: dict[str, Callable[[], list[Batch]]] = {
        "padding (shuffled)": lambda: batches_padded(examples, args.pad_batch, False, args.seed),
        "padding (length-grouped)": lambda: batches_padded(examples, args.pad_batch, True, args.seed),
        "packing (4D mask)": lambda: batches_packed(examples, args.max_seq_len, args.pack_batch, True, args.seed),
        "packing (position_ids)": lambda: batches_packed(examples, args.max_seq_len, args.pack_batch, False, args.seed),
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, build in methods.items():
        rows[name] = run(model, build())
    base = rows["padding (shuffled)"]["tokens_per_s"]
    for row in rows.values():
        row["speedup_vs_shuffled_padding"] = round(row["tokens_per_s"] / base, 2)

    s = sorted(lengths)
    mix = {
        "examples": len(s),
        "min": s[0],
        "median": s[len(s) // 2],
        "p95": s[int(0.95 * len(s)) - 1],
        "max": s[-1],
        "mean": round(sum(s) / len(s), 1),
        "total_tokens": sum(s),
    }
    print(f"length mix: {mix}")
    hdr = f"{'method':26} {'steps':>5} {'shape':>10} {'waste':>7} {'tokens/s':>9} {'speedup':>8} {'cpu s':>8}"
    print(hdr)
    print("-" * len(hdr))
    for name, r in rows.items():
        shape = "x".join(str(v) for v in r["batch_shape"])
        print(
            f"{name:26} {r['steps']:>5} {shape:>10} {r['padding_waste']:>7.1%} {r['tokens_per_s']:>9.0f} "
            f"{r['speedup_vs_shuffled_padding']:>7.2f}x {r['seconds']:>8.1f}"
        )
    result = {
        "benchmark": "packing",
        "model": "LlamaForCausalLM hidden 512, intermediate 1376, 2 layers, 8 heads, vocab 2048, sdpa, fp32",
        "work": "forward + backward per step, 1 CPU thread",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "length_mix": mix,
        "results": rows,
        "environment": {
            "python": py_platform.python_version(),
            "torch": torch.__version__,
            "machine": py_platform.machine(),
            "threads": torch.get_num_threads(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
