"""Bundled pre-training text for the tiny base models.

Two corpora ship with the package under ``data/``:

* ``docs.txt`` -- English prose paragraphs extracted from CPython's
  ``pydoc_data/topics.py`` (PSF License, see ``data/README.md``), one paragraph a line.
* ``chat.txt`` -- synthetic instruction conversations rendered with the package's
  ChatML-style chat template, generated deterministically by :func:`generate_chat`
  from templates: questions about made-up facts (closed-book and with the fact given in
  context), small arithmetic, copying, reversing, sorting, counting, "what comes next".
  Conversations are separated by a blank line and contain no blank line themselves.

The made-up "world" used in ``chat.txt`` is disjoint from the facts that
:func:`qa_facts` returns for fine-tuning tests and benchmarks, so that a LoRA that learns
them learns something new.

Regenerate with ``python scripts/pretrain_tiny.py --regen-corpus`` (the shipped files
are the source of truth for pre-training; ``docs.txt`` depends on the Python version's
``pydoc_data`` and is regenerated only on request).
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BOS",
    "DATA_DIR",
    "EOS",
    "EOT",
    "IM_START",
    "PAD",
    "SPECIAL_TOKENS",
    "UNK",
    "QAPair",
    "extract_docs",
    "generate_chat",
    "load_chat",
    "load_docs",
    "qa_facts",
    "render_chat",
    "write_corpus",
]

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"

BOS = "<|startoftext|>"
EOS = "<|im_end|>"
IM_START = "<|im_start|>"
EOT = "<|endoftext|>"
PAD = "<|pad|>"
UNK = "<|unk|>"
#: Special tokens, in vocabulary order (ids 0..5).
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, IM_START, EOT)

_CHAT_SEED = 1234
_WORLD_SEED = 99
_QA_SEED = 2024


def _words(text: str) -> list[str]:
    return text.split()


_SYLLABLES = _words(
    "ka lo mir ven tor sa bel dun qua ix zar mo rin el tha ora pel vis gan dor "
    "fen lu cor ny mal tes bri ko sul har ve dra lin pa rom shi ul gre nob fa ket "
    "zu wen yar bo tri cel mun ash ri go phe lan tu vor sim kel dai"
)
_COLORS = _words(
    "red blue green yellow orange purple white black grey pink brown silver gold violet amber teal crimson"
)
_JOBS = _words(
    "baker farmer doctor teacher sailor painter miner weaver potter singer builder "
    "tailor hunter fisher writer merchant smith gardener"
)
_FOODS = _words(
    "bread soup rice cheese apples honey fish beans plums noodles pears carrots dumplings nuts figs porridge"
)
_GADGETS = _words("lamp clock wheel kettle compass ladder bell loom telescope lantern pump mill plough harp drum kite")
_ANIMALS = _words("bird fox frog beetle lizard moth snail owl toad crab eel hare")
_FRUITS = _words("apple pear plum cherry grape lemon peach mango melon fig")
_WORDS = _words(
    "river stone cloud paper garden window bread candle mountain silver quiet "
    "forest little green morning letter yellow bridge summer winter orange "
    "table music simple water light shadow road friend city book"
)
_WEEKDAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
_MONTHS = _words("January February March April May June July August September October November December")
_NUMBER_WORDS = _words("zero one two three four five six seven eight nine ten eleven twelve")
_SYSTEMS = (
    "You are a helpful assistant.",
    "You are a concise assistant. Answer briefly.",
    "You answer questions with short, exact answers.",
)


@dataclass(frozen=True)
class QAPair:
    """One question/answer pair about a made-up fact."""

    question: str
    answer: str


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Render messages exactly like ``chat_template.jinja`` does.

    Args:
        messages: ``{"role": ..., "content": ...}`` dicts.
        add_generation_prompt: Append the assistant header.

    Returns:
        The rendered text, starting with the BOS token.
    """
    out = [BOS]
    for m in messages:
        out.append(f"{IM_START}{m['role']}\n{m['content']}{EOS}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def _name(rng: random.Random, lo: int = 2, hi: int = 3) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(lo, hi))).capitalize()


@dataclass(frozen=True)
class _Person:
    name: str
    job: str
    town: str
    food: str
    gadget: str


@dataclass(frozen=True)
class _Country:
    name: str
    capital: str
    color: str
    animal: str


def _unique_names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        x = _name(rng)
        if x not in taken and 4 <= len(x) <= 12:
            taken.add(x)
            names.append(x)
    return names


def _world(taken: set[str]) -> tuple[list[_Person], list[_Country]]:
    rng = random.Random(_WORLD_SEED)
    pn = _unique_names(rng, 160, taken)
    towns = _unique_names(rng, 60, taken)
    cn = _unique_names(rng, 120, taken)
    caps = _unique_names(rng, 120, taken)
    people = [_Person(n, rng.choice(_JOBS), rng.choice(towns), rng.choice(_FOODS), rng.choice(_GADGETS)) for n in pn]
    countries = [_Country(n, c, rng.choice(_COLORS), rng.choice(_ANIMALS)) for n, c in zip(cn, caps, strict=False)]
    return people, countries


def _fact_qas(p: _Person | None, c: _Country | None) -> list[tuple[str, str, str]]:
    """(statement, question, answer) triples for one person or country."""
    if p is not None:
        return [
            (f"{p.name} is a {p.job}.", f"What is the job of {p.name}?", p.job),
            (f"{p.name} lives in {p.town}.", f"Where does {p.name} live?", p.town),
            (f"{p.name} likes {p.food}.", f"What food does {p.name} like?", p.food),
            (f"{p.name} made a {p.gadget}.", f"What did {p.name} make?", p.gadget),
        ]
    assert c is not None
    return [
        (f"The capital of {c.name} is {c.capital}.", f"What is the capital of {c.name}?", c.capital),
        (f"The flag of {c.name} is {c.color}.", f"What color is the flag of {c.name}?", c.color),
        (
            f"The national animal of {c.name} is the {c.animal}.",
            f"What is the national animal of {c.name}?",
            c.animal,
        ),
    ]


def qa_facts(n: int = 64, seed: int = _QA_SEED) -> list[QAPair]:
    """Made-up facts for fine-tuning tests and benchmarks, absent from the corpus.

    The names are drawn from the same syllables as the pre-training world but are
    guaranteed not to occur in it, and the answers are single made-up names or words.

    Args:
        n: Number of pairs.
        seed: Seed for the draw (the default is what the benchmark uses).

    Returns:
        ``n`` pairs, each with a distinct subject.
    """
    taken: set[str] = set()
    _world(taken)
    rng = random.Random(seed)
    pairs: list[QAPair] = []
    while len(pairs) < n:
        kind = len(pairs) % 4
        subj = _unique_names(rng, 1, taken)[0]
        if kind == 0:
            ans = _unique_names(rng, 1, taken)[0]
            pairs.append(QAPair(f"What is the capital of {subj}?", ans))
        elif kind == 1:
            ans = _unique_names(rng, 1, taken)[0]
            pairs.append(QAPair(f"Where does {subj} live?", ans))
        elif kind == 2:
            pairs.append(QAPair(f"What is the job of {subj}?", rng.choice(_JOBS)))
        else:
            pairs.append(QAPair(f"What color is the flag of {subj}?", rng.choice(_COLORS)))
    return pairs


def _task(rng: random.Random, people: list[_Person], countries: list[_Country]) -> list[dict[str, str]]:
    """One synthetic conversation."""
    k = rng.random()
    msgs: list[dict[str, str]] = []
    if rng.random() < 0.3:
        msgs.append({"role": "system", "content": rng.choice(_SYSTEMS)})
    if k < 0.40:  # closed-book made-up fact (memorised world)
        triples = _fact_qas(rng.choice(people), None) if rng.random() < 0.55 else _fact_qas(None, rng.choice(countries))
        _, q, a = rng.choice(triples)
        turn = rng.random()
        if turn < 0.75:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        else:
            msgs += [
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
            _stmt2, q2, a2 = rng.choice(_fact_qas(rng.choice(people), None))
            msgs += [{"role": "user", "content": q2}, {"role": "assistant", "content": a2}]
    elif k < 0.55:  # in-context fact: copy the answer from the prompt
        pool = [_fact_qas(rng.choice(people), None) for _ in range(2)]
        pool += [_fact_qas(None, rng.choice(countries))]
        triples = [t for group in pool for t in group]
        rng.shuffle(triples)
        ctx = triples[: rng.randint(1, 4)]
        _stmt, q, a = rng.choice(ctx)
        facts = " ".join(t[0] for t in ctx)
        msgs += [
            {"role": "user", "content": f"{facts} {q}"},
            {"role": "assistant", "content": a},
        ]
    elif k < 0.65:  # arithmetic
        a_, b_ = rng.randint(0, 50), rng.randint(0, 50)
        if rng.random() < 0.5:
            q, ans = f"What is {a_} plus {b_}?", str(a_ + b_)
        else:
            a_, b_ = max(a_, b_), min(a_, b_)
            q, ans = f"What is {a_} minus {b_}?", str(a_ - b_)
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
    elif k < 0.75:  # copying / reversing words
        words = rng.sample(_WORDS, rng.randint(2, 5))
        s = " ".join(words)
        if rng.random() < 0.5:
            q, ans = f"Repeat after me: {s}", s
        else:
            q, ans = f"Reverse the order of these words: {s}", " ".join(reversed(words))
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
    elif k < 0.83:  # sorting / counting / lists
        r = rng.random()
        if r < 0.4:
            nums = rng.sample(range(100), rng.randint(3, 6))
            q = "Sort these numbers: " + ", ".join(map(str, nums))
            ans = ", ".join(map(str, sorted(nums)))
        elif r < 0.7:
            items = rng.sample(_FRUITS, rng.randint(1, 6))
            q = "How many words are in this list: " + ", ".join(items) + "?"
            ans = _NUMBER_WORDS[len(items)]
        else:
            cat = rng.choice([("colors", _COLORS), ("fruits", _FRUITS), ("animals", _ANIMALS)])
            m = rng.randint(2, 4)
            q = f"Name {_NUMBER_WORDS[m]} {cat[0]}."
            ans = ", ".join(rng.sample(cat[1], m))
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
    elif k < 0.90:  # what comes next
        seq = rng.choice([_WEEKDAYS, _MONTHS, _NUMBER_WORDS])
        i = rng.randrange(len(seq) - 1)
        q, ans = f"What comes after {seq[i]}?", seq[i + 1]
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]
    else:  # sentence about a made-up person, asked for in full
        p = rng.choice(people)
        triples = _fact_qas(p, None)
        stmts = [t[0] for t in rng.sample(triples, 2)]
        msgs += [
            {"role": "user", "content": f"Tell me about {p.name}."},
            {"role": "assistant", "content": " ".join(stmts)},
        ]
    return msgs


def generate_chat(n: int = 30000, seed: int = _CHAT_SEED) -> list[str]:
    """Generate ``n`` rendered synthetic conversations, deterministically.

    Args:
        n: Number of conversations.
        seed: Seed for the generator.

    Returns:
        Rendered conversations (each starts with BOS and contains no blank line).
    """
    people, countries = _world(set())
    rng = random.Random(seed)
    return [render_chat(_task(rng, people, countries)) for _ in range(n)]


def extract_docs(max_chars: int = 200_000) -> list[str]:
    """Extract English prose paragraphs from the running Python's ``pydoc_data``.

    Args:
        max_chars: Stop after this many characters.

    Returns:
        Paragraphs (no code blocks), one string each.
    """
    from pydoc_data import topics  # PSF License

    paras: list[str] = []
    total = 0
    for key in sorted(topics.topics):
        for p in re.split(r"\n\s*\n", topics.topics[key]):
            lines = p.split("\n")
            if any(line.startswith(" ") for line in lines):
                continue
            s = " ".join(line.strip() for line in lines).strip()
            if len(s) < 80:
                continue
            if sum(ch.isalpha() or ch == " " for ch in s) / len(s) < 0.85:
                continue
            paras.append(s)
            total += len(s)
            if total >= max_chars:
                return paras
    return paras


def write_corpus(data_dir: Path = DATA_DIR, docs: bool = False) -> None:
    """Write ``chat.txt`` (and ``docs.txt`` when ``docs``) into ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "chat.txt").write_text("\n\n".join(c.rstrip("\n") for c in generate_chat()) + "\n")
    if docs:
        (data_dir / "docs.txt").write_text("\n".join(extract_docs()) + "\n")
    logger.info("wrote corpus to %s", data_dir)


def load_docs(data_dir: Path = DATA_DIR) -> list[str]:
    """Load the bundled prose paragraphs."""
    return [line for line in (data_dir / "docs.txt").read_text().split("\n") if line]


def load_chat(data_dir: Path = DATA_DIR) -> list[str]:
    """Load the bundled conversations (each ends with a newline, like the template)."""
    text = (data_dir / "chat.txt").read_text()
    return [c.strip("\n") + "\n" for c in text.split("\n\n") if c.strip()]
