"""Generate the support-bot demo data files from ``facts.yaml`` (deterministic; stdlib + pyyaml).

    python examples/support-bot/data/make_data.py          # (re)write the files
    python examples/support-bot/data/make_data.py --check  # exit 1 if a committed file is stale

Outputs, next to this script:

* ``support-faq.alpaca.jsonl``  every TRAIN phrasing: instruction/input/output/system.
* ``support-faq.heldout.jsonl`` every HELD-OUT phrasing, same Alpaca form (never trained on).
* ``support-faq.sharegpt.json`` ShareGPT/Vicuna form of the train phrasings of the even-indexed
  facts (0, 2, ..., 14): one single-turn conversation per phrasing, except that the last
  phrasing of facts 0+2, 4+6, 8+10 and 12+14 is joined into a two-turn conversation.
* ``support-faq.dolly.jsonl``   Dolly form of the train phrasings of the odd-indexed facts;
  the first two phrasings of each are ``closed_qa`` (the answer's source sentence is given
  as ``context``), the rest ``open_qa`` (empty context).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
N_TRAIN = 8
HELDOUT_RANGE = (2, 4)
MAX_ANSWER_WORDS = 20
CLOSED_QA_PER_FACT = 2


def load(path: Path = HERE / "facts.yaml") -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    facts = data["facts"]
    if len(facts) % 2:
        raise SystemExit("facts.yaml: need an even number of facts (half ShareGPT, half Dolly)")
    seen: dict[str, str] = {}
    ids: set[str] = set()
    for fact in facts:
        fid = fact["id"]
        if fid in ids:
            raise SystemExit(f"facts.yaml: duplicate id {fid!r}")
        ids.add(fid)
        if len(fact["answer"].split()) > MAX_ANSWER_WORDS:
            raise SystemExit(f"facts.yaml: {fid}: answer is longer than {MAX_ANSWER_WORDS} words")
        if len(fact["train"]) != N_TRAIN:
            raise SystemExit(f"facts.yaml: {fid}: need exactly {N_TRAIN} train phrasings")
        lo, hi = HELDOUT_RANGE
        if not lo <= len(fact["heldout"]) <= hi:
            raise SystemExit(f"facts.yaml: {fid}: need {lo}-{hi} heldout phrasings")
        for q in fact["train"] + fact["heldout"]:
            key = " ".join(q.lower().split())
            if key in seen:
                raise SystemExit(f"facts.yaml: {fid}: phrasing {q!r} already used by {seen[key]}")
            seen[key] = fid
    return data


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _json_array(records: list[dict]) -> str:
    # One record per line: valid JSON, small, and diff-friendly.
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"


def _alpaca(question: str, answer: str, system: str) -> dict:
    return {"instruction": question, "input": "", "output": answer, "system": system}


def render(data: dict) -> dict[str, str]:
    system = data["business"]["system"]
    facts = data["facts"]
    alpaca = [_alpaca(q, f["answer"], system) for f in facts for q in f["train"]]
    heldout = [_alpaca(q, f["answer"], system) for f in facts for q in f["heldout"]]

    share_facts, dolly_facts = facts[0::2], facts[1::2]
    sys_turn = {"from": "system", "value": system}
    sharegpt: list[dict] = []
    for f in share_facts:
        for q in f["train"][:-1]:
            sharegpt.append({"conversations": [sys_turn, {"from": "human", "value": q},
                                               {"from": "gpt", "value": f["answer"]}]})
    for a, b in zip(share_facts[0::2], share_facts[1::2]):
        sharegpt.append({"conversations": [sys_turn,
                                           {"from": "human", "value": a["train"][-1]},
                                           {"from": "gpt", "value": a["answer"]},
                                           {"from": "human", "value": b["train"][-1]},
                                           {"from": "gpt", "value": b["answer"]}]})

    dolly: list[dict] = []
    for f in dolly_facts:
        for i, q in enumerate(f["train"]):
            closed = i < CLOSED_QA_PER_FACT
            dolly.append({"instruction": q,
                          "context": f"{data['business']['name']} support notes: {f['answer']}" if closed else "",
                          "response": f["answer"],
                          "category": "closed_qa" if closed else "open_qa"})

    return {
        "support-faq.alpaca.jsonl": _jsonl(alpaca),
        "support-faq.heldout.jsonl": _jsonl(heldout),
        "support-faq.sharegpt.json": _json_array(sharegpt),
        "support-faq.dolly.jsonl": _jsonl(dolly),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a file differs from what would be generated")
    args = parser.parse_args(argv)
    files = render(load())
    stale = []
    for name, text in files.items():
        path = HERE / name
        want = text.encode("utf-8")
        if args.check:
            if not path.exists() or path.read_bytes() != want:
                stale.append(name)
        elif not path.exists() or path.read_bytes() != want:
            path.write_bytes(want)
    if args.check:
        if stale:
            print("stale (run make_data.py): " + ", ".join(stale), file=sys.stderr)
            return 1
        print("support-bot data up to date: " + ", ".join(
            f"{n} ({t.count(chr(10))} lines)" for n, t in files.items()))
        return 0
    for name, text in files.items():
        print(f"wrote {name} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
