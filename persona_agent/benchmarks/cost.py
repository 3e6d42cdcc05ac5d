"""What one persona fit and one chat turn cost in LLM calls and tokens, on an instant counting fake.

The fake (`ScriptedPreferenceModel`) names the user's real choice with probability `p` (seeded
per prompt), so the fit takes the same branches a real judge of that accuracy would. Calls and
tokens come from the fit's own `UsageReport` (by stage) and are checked against the fake's
record of every call. Prompt tokens are `count_tokens_approximately` (about characters / 4, as
the reference figures).

Pairs: the MT-Bench human judge with the most votes (each fit draws its train and val pairs from
that judge's votes, seeded); without the data directory, synthetic pairs of the same shape.
A chat turn: `PersonaJudge.rank` over 2, 4 or 8 candidates, with the persona of the 10 + 5 fit
and `demo_k` demos, as a turn after synthesis judges.

Beside the default fit, the 10 + 5 fit is also run with ``--search full`` and with ``--search
reference`` (`agent.reference_search.ReferenceSearch`: the reference library's search in our code),
so the table shows what each search costs on the same pairs and fake.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel

from agent.fit_stages import SynthesisResult
from agent.judge import PersonaJudge
from agent.records import Demo, PreferencePair, Turn
from agent.synthesis import SynthesizeMe
from agent.usage import UsageReport, UsageTracker
from persona_agent.benchmarks.scripted_model import DEFAULT_REASONING, ScriptedPreferenceModel

if TYPE_CHECKING:
    from persona_agent.settings import Settings

FIT_SIZES: tuple[tuple[int, int], ...] = ((5, 3), (10, 5), (15, 7), (25, 11))
TURN_CANDIDATES: tuple[int, ...] = (2, 4, 8)
# SynthesizeMe library (DSPy 2.6.27), instant scripted model, per fit: (low, high).
REFERENCE: dict[int, dict[str, tuple[int, int]]] = {
    5: {"val": (3, 3), "calls": (146, 172), "prompt_tokens": (240_000, 310_000)},
    10: {"val": (5, 5), "calls": (260, 346), "prompt_tokens": (380_000, 680_000)},
    15: {"val": (7, 7), "calls": (366, 457), "prompt_tokens": (950_000, 1_300_000)},
    25: {"val": (11, 11), "calls": (544, 703), "prompt_tokens": (2_200_000, 2_700_000)},
}
TARGET_CALLS_10 = 60
TARGET_TOKEN_SHARE_10 = 0.2


@dataclass(frozen=True)
class CostPairs:
    """The pairs the cost suite runs on, and where they come from."""

    user_id: str
    pairs: list[PreferencePair]
    source: str


def load_cost_pairs(data: Path | None, *, needed: int = 36, seed: int = 0) -> CostPairs:
    """Return the votes of the judge with the most votes in `data`, or synthetic pairs without it."""
    if data is not None and data.is_file():
        from agent.formats import read_pairs

        pairs = read_pairs(data, skip_invalid=True)
        votes = Counter(pair.user_id for pair in pairs)
        user, count = votes.most_common(1)[0]
        own = sorted((pair for pair in pairs if pair.user_id == user), key=lambda pair: pair.id)
        random.Random(seed).shuffle(own)
        return CostPairs(user, own, f"{data} (judge {user}, {count} votes)")
    return CostPairs("synthetic", synthetic_pairs(needed, seed=seed), "synthetic pairs (no data file)")


def synthetic_pairs(count: int, *, seed: int = 0) -> list[PreferencePair]:
    """Make `count` pairs shaped like MT-Bench votes: a question and two replies of about 1,000 chars."""
    rng = random.Random(seed)
    words = [
        "plan",
        "budget",
        "travel",
        "recipe",
        "code",
        "proof",
        "history",
        "poem",
        "physics",
        "email",
        "market",
        "garden",
        "story",
    ]
    pairs = []
    for index in range(count):
        topic = " ".join(rng.sample(words, 3))
        question = f"Question {index}: please help me with {topic} and explain your reasoning."

        def reply(kind: str, topic: str = topic) -> str:
            sentence = f"This {kind} answer covers {topic} with a point and an example. "
            return sentence * rng.randint(10, 22)

        pairs.append(
            PreferencePair(
                user_id="synthetic",
                context=(Turn(role="user", content=question),),
                chosen=reply("preferred"),
                rejected=reply("other"),
            )
        )
    return pairs


def usage_document(report: UsageReport) -> dict[str, Any]:
    """Return calls and tokens, in all and by stage."""
    total = report.total
    return {
        "calls": total.calls,
        "failed_calls": total.failed_calls,
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "by_stage": {
            stage: {
                "calls": usage.calls,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            }
            for stage, usage in report.stages.items()
        },
    }


def fake_model(pairs: Sequence[PreferencePair], *, p: float, seed: int) -> ScriptedPreferenceModel:
    """Return the instant fake that knows the user's choices in `pairs`."""
    return ScriptedPreferenceModel(p_correct=p, seed=seed, keep_messages=False).known_pairs(pairs)


async def measure_fit(
    fitter: SynthesizeMe, train: Sequence[PreferencePair], val: Sequence[PreferencePair]
) -> tuple[SynthesisResult, dict[str, Any]]:
    """Fit once and return the result with its cost document."""
    result = await fitter.fit(train, val)
    document = usage_document(result.usage)
    document.update(
        n_train=len(train),
        n_val=len(val),
        n_train_used=len(result.train_pair_ids),
        n_val_used=len(result.val_pair_ids),
        planned_calls=result.planned_calls,
        candidate_sets=len(result.candidates),
        demos=len(result.demos),
    )
    return result, document


async def measure_turn(
    model: BaseChatModel,
    persona: str,
    demos: Sequence[Demo],
    context: Sequence[Turn],
    candidates: Sequence[str],
) -> dict[str, Any]:
    """Rank `candidates` once with the persona judge; return its calls and tokens."""
    tracker = UsageTracker()
    judge = PersonaJudge(model, persona, demos, stage="turn", callbacks=[tracker])
    ranking = await judge.rank(context, candidates)
    document = usage_document(tracker.report())
    document.update(candidates=len(candidates), demos=len(demos), judge_calls=ranking.judge_calls)
    return document


def turn_demos(pairs: Sequence[PreferencePair], k: int) -> list[Demo]:
    """Return `k` demos with reasoning, as retrieval gives a turn after synthesis."""
    return [Demo(pair=pair, reasoning=DEFAULT_REASONING) for pair in pairs[:k]]


def turn_candidates(pairs: Sequence[PreferencePair], count: int) -> list[str]:
    """Return `count` distinct replies from `pairs` to rank."""
    replies = list(dict.fromkeys(text for pair in pairs for text in (pair.chosen, pair.rejected)))
    if len(replies) < count:
        raise ValueError(f"need {count} distinct replies, the pairs have {len(replies)}")
    return replies[:count]


async def run_cost_async(
    source: CostPairs,
    *,
    p: float = 0.6,
    seed: int = 0,
    max_calls: int = 80,
    max_pairs: int = 40,
    demo_k: int = 3,
    sizes: Sequence[tuple[int, int]] = FIT_SIZES,
    candidates: Sequence[int] = TURN_CANDIDATES,
) -> dict[str, Any]:
    """Measure each fit size and each turn size on the instant fake."""
    pairs = source.pairs
    fits: dict[str, Any] = {}
    persona_fit: SynthesisResult | None = None
    for n_train, n_val in sizes:
        if n_train + n_val > len(pairs):
            raise ValueError(f"{n_train} + {n_val} pairs needed, {source.user_id} has {len(pairs)}")
        model = fake_model(pairs, p=p, seed=seed)
        fitter = SynthesizeMe(model, max_calls=max_calls, max_pairs=max_pairs, seed=seed)
        train, val = pairs[:n_train], pairs[n_train : n_train + n_val]
        result, document = await measure_fit(fitter, train, val)
        if document["calls"] != len(model.calls):
            raise RuntimeError(f"usage counted {document['calls']} calls, the model saw {len(model.calls)}")
        fits[str(n_train)] = document
        if n_train == 10:
            persona_fit = result
    full: dict[str, Any] = {}
    reference: dict[str, Any] = {}
    if len(pairs) >= 15:
        from persona_agent.benchmarks.accuracy import SEARCHES, Search

        searches: tuple[tuple[Search, dict[str, Any]], ...] = (("full", full), ("reference", reference))
        for search, found in searches:
            model = fake_model(pairs, p=p, seed=seed)
            kind, arguments = SEARCHES[search]  # on the fake with the library's defaults, as the fits above
            fitter = kind(model, seed=seed, **(arguments or {}))
            _, found["10"] = await measure_fit(fitter, pairs[:10], pairs[10:15])
            counted, seen = found["10"]["calls"], len(model.calls)
            if counted != seen:
                raise RuntimeError(f"{search} search: usage counted {counted} calls, the model saw {seen}")
    persona = persona_fit.persona.text if persona_fit else fake_model(pairs, p=p, seed=seed).persona_text
    turn_pairs = pairs[-max(8, demo_k) :]
    demos = turn_demos(pairs[:10], demo_k)
    turns: dict[str, Any] = {}
    for count in candidates:
        model = fake_model(pairs, p=p, seed=seed)
        turns[str(count)] = await measure_turn(
            model, persona, demos, turn_pairs[0].context, turn_candidates(turn_pairs, count)
        )
    reference_10 = REFERENCE[10]
    at_10 = fits.get("10")
    return {
        "suite": "cost",
        "model": f"instant scripted fake, right with p={p}",
        "pairs": source.source,
        "seed": seed,
        "budget": {"max_calls": max_calls, "max_pairs": max_pairs},
        "fit": fits,
        "fit_full_search": full,
        "fit_reference_search": reference,
        "turn": turns,
        "reference": {str(n): values for n, values in REFERENCE.items()},
        "targets": {
            "calls_at_10": TARGET_CALLS_10,
            "prompt_tokens_at_10": int(reference_10["prompt_tokens"][0] * TARGET_TOKEN_SHARE_10),
            "met": bool(
                at_10
                and at_10["calls"] <= TARGET_CALLS_10
                and at_10["prompt_tokens"] <= reference_10["prompt_tokens"][0] * TARGET_TOKEN_SHARE_10
            ),
        },
    }


def run_cost(source: CostPairs, **options: Any) -> dict[str, Any]:
    """Run `run_cost_async` to completion."""
    return asyncio.run(run_cost_async(source, **options))


async def time_embedded_fit(
    settings: Settings,
    chat_model: BaseChatModel,
    judge_model: BaseChatModel,
    pairs: Sequence[PreferencePair],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Time one 10 + 5 fit with real models, configured as the product's; return seconds, calls and tokens."""
    from persona_agent.factory import build_synthesize_me

    fitter = build_synthesize_me(settings, chat_model, judge_model, seed=seed)
    started = time.perf_counter()
    _, document = await measure_fit(fitter, pairs[:10], pairs[10:15])
    document["seconds"] = round(time.perf_counter() - started, 1)
    return document
