"""Benchmark: can LoRA steer the tiny base models? (plain PyTorch + PEFT, no Ray)

For each architecture: the pre-training record of the shipped weights (parameters,
tokens, seconds, final loss), then a LoRA fine-tune on 64 question/answer pairs of
made-up facts absent from the pre-training corpus, with greedy exact-match accuracy
before and after. Baseline in the same run: the same LoRA recipe on a randomly
initialised model of the same architecture (what a previous session found LoRA cannot
steer). ``--ablations`` adds recipes that show why the default recipe is what it is.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=platform python bench/tiny_lora.py [--arch llama] [--ablations]

Prints a table and writes ``bench/results/tiny_lora.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform as py_platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

import torch  # noqa: E402

from corral.models import tiny  # noqa: E402
from corral.models.tiny._configs import make_config  # noqa: E402
from corral.models.tiny._corpus import qa_facts  # noqa: E402
from corral.models.tiny._finetune import LoraRecipe, lora_finetune  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "tiny_lora.json"

_ATTN_ONLY = {
    "llama": ["q_proj", "v_proj"],
    "glm": ["q_proj", "v_proj"],
    "gpt_neox": ["query_key_value"],
}


def _random_base(arch: str, built: Path, out: Path) -> Path:
    """Same architecture and tokenizer as ``built``, weights freshly initialised."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(make_config(arch), dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(built).save_pretrained(out)
    return out


def _recipes(arch: str, ablations: bool) -> list[tuple[str, str, LoraRecipe]]:
    """(name, base, recipe) rows; base is ``pretrained`` or ``random``."""
    main = LoraRecipe()
    rows = [("lora-all-linear-r16", "pretrained", main), ("lora-all-linear-r16", "random", main)]
    if ablations:
        rows += [
            ("lora-all-linear-r16-lr2e-4", "pretrained", dataclasses.replace(main, lr=2e-4)),
            (
                "lora-attn-only-r16",
                "pretrained",
                dataclasses.replace(main, target_modules=_ATTN_ONLY[arch]),
            ),
            ("lora-all-linear-r4", "pretrained", dataclasses.replace(main, r=4, alpha=8)),
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", action="append", choices=tiny.ARCHITECTURES)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    archs = args.arch or list(tiny.ARCHITECTURES)
    pairs = qa_facts(args.pairs)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            built = tiny.build(arch, Path(tmp) / arch)
            pre = json.loads((tiny.PACKAGE_DIR / "weights" / arch / "pretrain.json").read_text())
            random_dir = _random_base(arch, built, Path(tmp) / f"{arch}-random")
            needed = LoraRecipe().max_epochs
            for name, base, recipe in _recipes(arch, args.ablations):
                if base == "random":
                    # Same budget as the pre-trained base needed (or its cap), not more.
                    recipe = dataclasses.replace(recipe, max_epochs=needed)  # noqa: PLW2901
                res, _ = lora_finetune(built if base == "pretrained" else random_dir, pairs, recipe)
                if base == "pretrained" and name == "lora-all-linear-r16":
                    needed = res.epochs
                row = {
                    "arch": arch,
                    "base": base,
                    "recipe": name,
                    "parameters": res.total_parameters - res.trainable_parameters,
                    "pretrain_tokens": pre["tokens"] if base == "pretrained" else 0,
                    "pretrain_seconds": pre["seconds"] if base == "pretrained" else 0.0,
                    "pretrain_final_loss": pre["final_loss"] if base == "pretrained" else None,
                    "lora": {
                        "r": recipe.r,
                        "alpha": recipe.alpha,
                        "target_modules": recipe.target_modules,
                        "lr": recipe.lr,
                        "batch_size": recipe.batch_size,
                        "max_epochs": recipe.max_epochs,
                    },
                    "trainable_parameters": res.trainable_parameters,
                    "epochs": res.epochs,
                    "seconds": res.seconds,
                    "final_train_loss": res.final_loss,
                    "exact_match_before": res.before,
                    "exact_match_after": res.after,
                    "history": res.history,
                }
                rows.append(row)
                print(
                    f"{arch:9} {base:10} {name:28} em {res.before:.2f} -> {res.after:.2f} "
                    f"in {res.epochs} ep, {res.seconds:.0f}s",
                    flush=True,
                )

    if args.out.exists() and args.arch:  # keep the other architectures' rows
        previous = json.loads(args.out.read_text()).get("rows", [])
        rows = [r for r in previous if r["arch"] not in archs] + rows
        rows.sort(key=lambda r: tiny.ARCHITECTURES.index(r["arch"]))
    hdr = (
        f"{'arch':9} {'base':10} {'recipe':28} {'params':>9} {'pt tokens':>9} {'pt s':>5} "
        f"{'pt loss':>7} {'trainable':>9} {'epochs':>6} {'lora s':>6} {'EM before':>9} {'EM after':>8}"
    )
    print()
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        loss = f"{r['pretrain_final_loss']:.3f}" if r["pretrain_final_loss"] is not None else "-"
        print(
            f"{r['arch']:9} {r['base']:10} {r['recipe']:28} {r['parameters']:>9,} "
            f"{r['pretrain_tokens']:>9,} {r['pretrain_seconds']:>5.0f} {loss:>7} "
            f"{r['trainable_parameters']:>9,} {r['epochs']:>6} {r['seconds']:>6.0f} "
            f"{r['exact_match_before']:>9.3f} {r['exact_match_after']:>8.3f}"
        )
    result = {
        "benchmark": "tiny_lora",
        "pairs": len(pairs),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": py_platform.machine(),
        "processor": py_platform.processor() or py_platform.machine(),
        "cpu_count": os.cpu_count(),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
