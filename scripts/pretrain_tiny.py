"""Regenerate the tiny base models shipped in ``corral.models.tiny``.

Examples::

    # all three architectures, seed 0, into the package (what ships)
    OMP_NUM_THREADS=1 python scripts/pretrain_tiny.py --arch all
    # one architecture into a directory of your choice
    OMP_NUM_THREADS=1 python scripts/pretrain_tiny.py --arch llama --seed 1 --out /tmp/llama-s1
    # regenerate the synthetic chat corpus (and the docs extract) and the tokenizer first
    python scripts/pretrain_tiny.py --regen-corpus --train-tokenizer --arch none

Same seed, same machine: the same ``model.safetensors`` bytes (one thread, fixed step
count, seeded data order). ``pretrain.json`` next to the weights records the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from corral.models.tiny import (  # noqa: E402
    ARCHITECTURES,
    PACKAGE_DIR,
    SAVED_TOKENIZER,
    TOKENIZER_JSON,
    _corpus,
    _pretrain,
)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arch", default="all", help=f"one of {ARCHITECTURES}, 'all' or 'none'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="output dir (one arch only)")
    ap.add_argument("--steps", type=int, default=None, help="override the step count")
    ap.add_argument("--regen-corpus", action="store_true", help="rewrite data/*.txt")
    ap.add_argument("--train-tokenizer", action="store_true", help="rewrite tokenizer.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    if args.regen_corpus:
        _corpus.write_corpus(docs=True)
    if args.train_tokenizer or not TOKENIZER_JSON.exists():
        _pretrain.train_tokenizer().save(str(TOKENIZER_JSON))
        print(f"wrote {TOKENIZER_JSON}")
    # What tiny.build copies: the tokenizer as save_pretrained writes it (no torch needed to build).
    _pretrain.load_tokenizer(TOKENIZER_JSON).save_pretrained(SAVED_TOKENIZER)
    print(f"wrote {SAVED_TOKENIZER}")
    archs = {"all": ARCHITECTURES, "none": ()}.get(args.arch, (args.arch,))
    if args.out is not None and len(archs) != 1:
        ap.error("--out needs a single --arch")
    for arch in archs:
        steps = args.steps if args.steps is not None else _pretrain.DEFAULT_STEPS[arch]
        cfg = _pretrain.PretrainConfig(steps=steps)
        out = args.out or PACKAGE_DIR / "weights" / arch
        res = _pretrain.pretrain(arch, out, seed=args.seed, cfg=cfg, tokenizer_json=TOKENIZER_JSON)
        print(
            f"{arch}: {res.parameters:,} params, {res.tokens:,} tokens, "
            f"{res.seconds:.0f} s, final loss {res.final_loss:.3f} -> {out}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
