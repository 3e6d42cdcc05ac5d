"""Plant simulated users with other clear tastes over real MT-Bench answers, to test learning in general.

    python scripts/plant_tastes.py --out .bench-cache/planted_more
    python scripts/eval_offline.py --planted .bench-cache/planted_more
    python scripts/plant_tastes.py --out .bench-cache/planted_fresh --first 3 --users 6

`../shared/data/planted/` holds five visible tastes; other planted users, with tastes that are
not shown, are run on the landed code. This script plants more, with the same protocol, so a
change can be judged on tastes it was not shaped on: each user picks between two real answers
to a real MT-Bench question by one clear taste, measured here by plain text counts of its own
(not `agent.features`), on pairs that clearly differ on it; 5% of picks are flipped; train, val
and test questions are distinct. It writes `visible_n5.jsonl`, `visible_n10.jsonl` and
`visible_n20.jsonl` (the layout of `../shared/data/planted/`, so `eval_offline.py --planted` and
`persona-agent bench accuracy --data` read them), 3 users per taste. Each user's draws are seeded
by their taste and number, so `--first 3` plants users none of the default set shares: a second
sample to confirm a change chosen on the first.

`--drafts K` plants users who pick as the chat asks them to: one of K answers to each train
question (the chat drafts 3 candidates a turn), stored as the K-1 pairs a ``choice`` feedback
stores, the chosen answer against each other one. The files' sizes count picks, so
`visible_n5.jsonl` holds 5 picks (5 * (K-1) pairs). The val and test pairs, and the questions,
are those of the same users planted without `--drafts`, so the two modes compare on the same test
pairs. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_WORD = re.compile(r"[A-Za-z0-9']+")
# a sentence ends at . ! ? or a line break (a list item or a heading is one)
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)|\n")
TECHNICAL = frozenset({"coding", "math", "reasoning", "stem", "extraction"})
SIZES = (5, 10, 20)
VAL_PAIRS, TEST_PAIRS = 5, 20
HELD_OUT = VAL_PAIRS + TEST_PAIRS
# each train pick, val and test pair is on a question of its own
MAX_QUESTIONS = SIZES[-1] + HELD_OUT
# a user is planted with 10 train picks or more
MIN_QUESTIONS = SIZES[1] + HELD_OUT


def words(text: str) -> float:
    return float(len(_WORD.findall(text)))


def list_lines(text: str) -> float:
    return float(len(re.findall(r"^\s*(?:[-*•]|\d+[.)])\s", text, re.MULTILINE)))


def digits_per_100(text: str) -> float:
    tokens = _WORD.findall(text)
    return 100.0 * sum(any(ch.isdigit() for ch in token) for token in tokens) / max(len(tokens), 1)


def sentences(text: str) -> float:
    return float(len([part for part in _SENTENCE_END.split(text) if _WORD.search(part)]))


def words_per_sentence(text: str) -> float:
    return words(text) / max(sentences(text), 1.0)


def letters_per_word(text: str) -> float:
    tokens = [token for token in _WORD.findall(text) if token.isalpha()]
    return sum(map(len, tokens)) / max(len(tokens), 1)


def blocks(text: str) -> float:
    return float(len([block for block in re.split(r"\n\s*\n", text) if block.strip()]))


def opening_words(text: str) -> float:
    return words(_SENTENCE_END.split(text.strip(), maxsplit=1)[0])


# hedges as a plain word list of this script's own (not `agent.features`' list)
_HEDGES = frozenset(
    {
        "however", "may", "might", "perhaps", "likely", "possibly", "probably", "maybe", "could",
        "generally", "typically", "usually", "often", "sometimes",
    }
)  # fmt: skip


def _per_100(text: str, counted: Callable[[str], bool]) -> float:
    """Return how many of the text's words (code included) are `counted`, per 100 words."""
    tokens = _WORD.findall(text)
    return 100.0 * sum(map(counted, tokens)) / max(len(tokens), 1)


def _in(vocabulary: frozenset[str]) -> Callable[[str], bool]:
    """Return whether a word, in any case, is one of `vocabulary` (lower case)."""
    return lambda token: token.lower() in vocabulary


def hedges_per_100(text: str) -> float:
    return _per_100(text, _in(_HEDGES))


# contractions, not possessives: "don't", "we'll", "it's", never "the dog's"
_CONTRACTION = re.compile(
    r"\b(?:\w+n't|\w+'(?:re|ve|ll|m|d)|(?:it|that|there|here|what|let|he|she|who)'s)\b", re.IGNORECASE
)


def contractions_per_100(text: str) -> float:
    return 100.0 * len(_CONTRACTION.findall(text.replace("\u2019", "'"))) / max(words(text), 1.0)


_I = frozenset({"I", "I'm", "I've", "I'd", "I'll"})


def you_per_100(text: str) -> float:
    return _per_100(text, _in(frozenset({"you", "your", "you're"})))


def first_person_per_100(text: str) -> float:
    """Return "I", "me", "my" per 100 words; "I" by its capital, so a program's `i` is no speaker."""
    me = _in(frozenset({"me", "my"}))
    return _per_100(text, lambda token: token in _I or me(token))


def parentheses(text: str) -> float:
    return float(text.count("("))


def colons(text: str) -> float:
    return float(text.count(":"))


@dataclass(frozen=True)
class PlantedTaste:
    """Pick the reply with more (`direction` 1) or less (-1) of `measure`, when they clearly differ.

    `relative`: the difference must be at least this share of the larger value (0: any
    difference). `conditional`: the direction flips on open-ended (non-technical) questions.
    """

    measure: Callable[[str], float]
    direction: int
    relative: float = 0.0
    conditional: bool = False

    def clear(self, first: str, second: str) -> bool:
        a, b = self.measure(first), self.measure(second)
        return a != b and abs(a - b) >= self.relative * max(abs(a), abs(b))

    def prefers_first(self, first: str, second: str, category: str) -> bool:
        sign = self.direction
        if self.conditional and category not in TECHNICAL:
            sign = -sign
        return sign * (self.measure(first) - self.measure(second)) > 0


TASTES = {
    "long": PlantedTaste(words, 1, relative=0.25),
    "prose": PlantedTaste(list_lines, -1),
    "numbers": PlantedTaste(digits_per_100, 1, relative=0.25),
    "compact": PlantedTaste(blocks, -1),
    "long_words": PlantedTaste(letters_per_word, 1, relative=0.05),
    "short_sentences": PlantedTaste(words_per_sentence, -1, relative=0.2),
    "plain_words": PlantedTaste(letters_per_word, -1, relative=0.05),
    "paragraphs": PlantedTaste(blocks, 1),
    "lists_on_stem_prose_on_writing": PlantedTaste(list_lines, 1, conditional=True),
    "long_opening": PlantedTaste(opening_words, 1, relative=0.25),
    "long_sentences": PlantedTaste(words_per_sentence, 1, relative=0.2),
    "few_numbers": PlantedTaste(digits_per_100, -1, relative=0.25),
    "long_on_stem_short_on_writing": PlantedTaste(words, 1, relative=0.25, conditional=True),
    "prose_on_stem_lists_on_writing": PlantedTaste(list_lines, -1, conditional=True),
    "hedged": PlantedTaste(hedges_per_100, 1, relative=0.25),
    "casual": PlantedTaste(contractions_per_100, 1, relative=0.25),
    "formal": PlantedTaste(contractions_per_100, -1, relative=0.25),
    "speaks_to_reader": PlantedTaste(you_per_100, 1, relative=0.25),
    "impersonal": PlantedTaste(you_per_100, -1, relative=0.25),
    "first_person": PlantedTaste(first_person_per_100, 1, relative=0.25),
    "no_first_person": PlantedTaste(first_person_per_100, -1, relative=0.25),
    "few_sentences": PlantedTaste(sentences, -1, relative=0.25),
    "parentheses": PlantedTaste(parentheses, 1),
    "colons": PlantedTaste(colons, 1),
}


def answers_by_question(path: Path) -> dict[int, tuple[list[dict[str, str]], str, list[str]]]:
    """Return, per MT-Bench question asked in one turn: its context, category and distinct answers."""
    found: dict[int, tuple[list[dict[str, str]], str, set[str]]] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if len(record["context"]) != 1:
                continue
            texts = {record[side]["content"] for side in ("chosen", "rejected")} - {""}
            question = int(record["question_id"])
            entry = found.setdefault(question, (record["context"], record["category"], set()))
            entry[2].update(texts)
    return {qid: (context, category, sorted(texts)) for qid, (context, category, texts) in found.items()}


def pick_among(
    texts: list[str], taste: PlantedTaste, category: str, drafts: int, rng: random.Random, flip: float
) -> tuple[str, list[str]] | None:
    """Return one pick among `drafts` of the answers (chosen, the others), or None if none can be made.

    The taste picks the draft it clearly prefers to every other one (up to 20 draws of drafts
    are tried); a `flip` share of picks goes to another draft at random.
    """
    if len(texts) < drafts:
        return None
    for _ in range(20):
        shown = rng.sample(texts, drafts)
        best = [
            a
            for a in shown
            if all(taste.clear(a, b) and taste.prefers_first(a, b, category) for b in shown if b is not a)
        ]
        if best:
            chosen = best[0] if rng.random() >= flip else rng.choice([a for a in shown if a is not best[0]])
            return chosen, [a for a in shown if a is not chosen]
    return None


def plant(
    questions: dict[int, tuple[list[dict[str, str]], str, list[str]]],
    name: str,
    taste: PlantedTaste,
    user: int,
    *,
    flip: float = 0.05,
    drafts: int = 2,
) -> list[dict[str, object]]:
    """Return one simulated user's records: up to 20 train picks, 5 val and 20 test pairs, distinct questions.

    With `drafts` over 2 each train pick is one among that many answers, as `drafts - 1` pairs
    (a question whose answers allow no clear pick keeps the pair a plain pick makes there). Returns
    nothing when fewer than `MIN_QUESTIONS` questions have answers that clearly differ on the
    taste; between that and `MAX_QUESTIONS`, the user has fewer train picks (as the visible
    `no_hedging` users have 14), and the larger files hold all of them.
    """
    rng = random.Random(f"{name}-{user}")
    usable = []
    for qid in sorted(questions):
        context, category, texts = questions[qid]
        pairs = [(a, b) for i, a in enumerate(texts) for b in texts[i + 1 :] if taste.clear(a, b)]
        if pairs:
            usable.append((qid, context, category, pairs))
    if len(usable) < MIN_QUESTIONS:
        return []
    train_picks = min(len(usable), MAX_QUESTIONS) - HELD_OUT
    rng.shuffle(usable)
    # the picks among drafts draw from their own generator, so val and test match the plain mode's
    choices = random.Random(f"{name}-{user}-drafts-{drafts}")
    records = []
    for index, (qid, context, category, pairs) in enumerate(usable[:MAX_QUESTIONS]):
        split = "train" if index < train_picks else "val" if index < train_picks + VAL_PAIRS else "test"
        first, second = rng.choice(pairs)
        keep = taste.prefers_first(first, second, category) != (rng.random() < flip)
        chosen, rejected = (first, second) if keep else (second, first)
        pick = chosen, [rejected]
        if split == "train" and drafts > 2:
            pick = pick_among(questions[qid][2], taste, category, drafts, choices, flip) or pick
        for other in pick[1]:
            records.append(
                {
                    "user_id": f"planted_{name}_{user}",
                    "split": split,
                    "question_id": qid,
                    "category": category,
                    "context": context,
                    "chosen": {"role": "assistant", "content": pick[0]},
                    "rejected": {"role": "assistant", "content": other},
                }
            )
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mt_bench_human/pairs.jsonl"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--users", type=int, default=3, help="simulated users per taste")
    parser.add_argument("--first", type=int, default=0, help="number of each taste's first user")
    parser.add_argument(
        "--drafts", type=int, default=2, help="answers each train pick is made among (the chat drafts 3)"
    )
    args = parser.parse_args(argv)
    if args.drafts < 2:
        parser.error(f"--drafts: a pick needs at least 2 answers, got {args.drafts}")
    questions = answers_by_question(args.data)
    numbers = range(args.first, args.first + args.users)
    users = [
        plant(questions, name, taste, k, drafts=args.drafts)
        for name, taste in TASTES.items()
        for k in numbers
    ]
    if skipped := sorted({name for name, taste in TASTES.items() if not plant(questions, name, taste, 0)}):
        print(f"too few questions with clear differences for: {', '.join(skipped)}")
    users = [records for records in users if records]
    args.out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = defaultdict(int)
    for size in SIZES:
        lines = []
        for records in users:
            picks = list(dict.fromkeys(r["question_id"] for r in records if r["split"] == "train"))
            train = [r for r in records if r["split"] == "train" and r["question_id"] in picks[:size]]
            lines += [json.dumps(r) for r in train + [r for r in records if r["split"] != "train"]]
        (args.out / f"visible_n{size}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for records in users:
        counts[str(records[0]["user_id"])] = sum(r["split"] == "test" for r in records)
    print(f"wrote {len(users)} users to {args.out}; test pairs per user: {sorted(set(counts.values()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
