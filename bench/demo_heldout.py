"""Held-out accuracy of the demo: does the support-bot adapter answer reworded questions?

Fine-tunes ``examples/support-bot`` exactly as ``corral demo`` does (an in-process embedded
control plane with its own data dir; or, with ``--reuse``, the demo already running behind
the current ``corral`` context), then asks every trained phrasing (``facts.yaml`` ``train``)
and every held-out phrasing (``support-faq.heldout.jsonl``, never trained on) of each fact,
to the base model and to the adapter, greedy decoding. Two metrics per split and model:

* exact match: the answer equals the canonical answer;
* key fact: the answer contains the fact's key token(s) (the words of the answer holding a
  digit, e.g. ``$45``, ``9am``; else its capitalised names), a looser "got the fact" measure.

Prints a table and writes ``bench/results/demo_heldout.json``. A benchmark, not a test:
nothing is asserted.

    OMP_NUM_THREADS=1 .venv/bin/python bench/demo_heldout.py            # own control plane
    OMP_NUM_THREADS=1 .venv/bin/python bench/demo_heldout.py --reuse    # a running `corral demo`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "support-bot"
DATA = EXAMPLES / "data"
OUT = REPO / "bench" / "results" / "demo_heldout.json"
TOKEN = "bench-token-heldout-01"
_STOP = {"We", "Our", "On", "A", "An", "The", "Yes", "No", "You", "It", "Spoke", "Sprocket"}


def key_tokens(answer: str) -> list[str]:
    """The words that carry a fact: those with a digit, else capitalised names (not the first word)."""
    words = [w.strip(".,;:!?()") for w in answer.split()]
    digits = [w for w in words if any(c.isdigit() for c in w)]
    if digits:
        return digits
    names = [w for w in words[1:] if w[:1].isupper() and w not in _STOP]
    return names or [max(words, key=len)]


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip())


def ask(endpoint: str, model: str, system: str, question: str) -> str:
    """One greedy chat completion."""
    body = {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
        "max_tokens": 48,
        "temperature": 0.0,
    }
    response = httpx.post(f"{endpoint.rstrip('/')}/chat/completions", json=body, timeout=120.0)
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"] or "").strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_served(client: Any, timeout: float) -> dict[str, Any]:
    from corral.api.v1alpha1 import FineTuneJob, ModelDeployment

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(FineTuneJob, "support-bot-v1")
        phase = (job.get("status") or {}).get("phase")
        if phase in ("Failed", "Cancelled"):
            raise RuntimeError(f"support-bot-v1 ended {phase}: {job.get('status')}")
        dep = client.get(ModelDeployment, "support-bot")
        status = dep.get("status") or {}
        if status.get("phase") == "Ready" and "support-bot-v1" in (status.get("servedModels") or []):
            return dep
        time.sleep(2.0)
    raise TimeoutError(f"the demo was not served within {timeout:.0f} s")


def measure(endpoint: str) -> dict[str, Any]:
    """Ask every trained and held-out phrasing to the base and the adapter; return the scores."""
    facts = yaml.safe_load((DATA / "facts.yaml").read_text(encoding="utf-8"))
    system = facts["business"]["system"]
    by_answer = {f["answer"]: f for f in facts["facts"]}
    heldout = [json.loads(line) for line in (DATA / "support-faq.heldout.jsonl").read_text().splitlines() if line]
    splits = {
        "trained": [(q, f["answer"]) for f in facts["facts"] for q in f["train"]],
        "heldout": [(r["instruction"], r["output"]) for r in heldout],
    }
    results: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    for model in ("tiny-llama", "support-bot-v1"):
        for split, pairs in splits.items():
            exact = key = 0
            started = time.monotonic()
            for question, expected in pairs:
                answer = ask(endpoint, model, system, question)
                keys = key_tokens(expected)
                hit_exact = _normalise(answer) == _normalise(expected)
                hit_key = all(k in answer for k in keys)
                exact += hit_exact
                key += hit_key
                if split == "heldout" and model == "support-bot-v1":
                    samples.append(
                        {"fact": by_answer[expected]["id"], "question": question, "answer": answer, "exact": hit_exact}
                    )
            results[f"{model}/{split}"] = {
                "model": model,
                "split": split,
                "questions": len(pairs),
                "exact_match": round(exact / len(pairs), 4),
                "key_fact": round(key / len(pairs), 4),
                "seconds": round(time.monotonic() - started, 1),
            }
    return {"scores": list(results.values()), "heldout_samples": samples}


def main() -> None:
    """Run the bench (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", action="store_true", help="Measure the demo behind the current corral context.")
    parser.add_argument("--timeout", type=float, default=1200.0, help="Seconds to wait for training and serving.")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from corral.api import load_documents
    from corral.client import CorralClient

    started = time.monotonic()
    control = None
    if args.reuse:
        client = CorralClient.from_context()
        client.namespace = "support"
    else:
        from corral.embedded import EmbeddedControlPlane

        data_dir = Path(tempfile.mkdtemp(prefix="corral-bench-"))
        tokens = {"tokens": [{"name": "bench", "token": TOKEN, "namespaces": ["support"], "cluster": True}]}
        (data_dir / "tokens.yaml").write_text(yaml.safe_dump(tokens), encoding="utf-8")
        port = _free_port()
        control = EmbeddedControlPlane(data_dir, port=port, num_cpus=4, resync_seconds=1.0).start()
        client = CorralClient(f"http://127.0.0.1:{port}", token=TOKEN, namespace="support")
        time.sleep(1.0)
        for obj in load_documents(EXAMPLES):
            client.apply(obj)
    try:
        dep = _wait_served(client, args.timeout)
        train_seconds = time.monotonic() - started
        measured = measure(dep["status"]["endpoint"])
    finally:
        client.close()
        if control is not None:
            control.stop()
    job = {d.metadata.name: d for d in load_documents(EXAMPLES)}["support-bot-v1"]
    report = {
        "benchmark": "demo_heldout",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "recipe": job.to_dict()["spec"],
        "reused_running_demo": args.reuse,
        "setup_and_train_seconds": round(train_seconds, 1),
        **measured,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{'model':<16} {'split':<8} {'n':>4} {'exact':>7} {'key fact':>9} {'s':>7}")
    for row in measured["scores"]:
        print(
            f"{row['model']:<16} {row['split']:<8} {row['questions']:>4} {row['exact_match']:>7.1%} "
            f"{row['key_fact']:>9.1%} {row['seconds']:>7.1f}"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
