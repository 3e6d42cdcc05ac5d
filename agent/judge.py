"""The pairwise judge: which of two replies would this user prefer, with or without a persona.

One model call judges one order of two replies and returns a structured answer (reasoning first,
then First or Second). When the raw message carries token log-probabilities, the probability
mass of the choice token (First against Second) gives a calibrated probability; otherwise the
structured choice is used as 1 or 0. `compare` judges both orders and averages them, so a judge
that always names the same position produces ties rather than wins. Single-order answers are
cached per judge, so asking `compare(a, b)` and then `compare(b, a)`, or `judge_order` in each order
(as the evaluation does, `agent.evaluation`), spends two calls, not four.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any, Literal, Protocol, runtime_checkable

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, Field

from agent.conversation import as_turns
from agent.errors import ModelOutputError
from agent.prompts import JudgePurpose, judge_messages
from agent.records import Demo, RankedCandidate, Ranking, Turn, Verdict
from agent.structured import StructuredCaller
from agent.usage import CallBudget

logger = logging.getLogger(__name__)

MAX_RANK_CANDIDATES = 8
ROUND_ROBIN_MAX = 4
_REASON_CHARS = 400


class JudgeAnswer(BaseModel):
    """Predict which of two replies this user would choose: reason first, then choose."""

    reasoning: str = Field(description="What this user wants here and how each reply meets it.")
    choice: Literal["First", "Second"] = Field(description="The reply this user would choose.")


class PairwiseJudge(Protocol):
    """Predicts which of two replies a user prefers, and orders drafted replies for them.

    The evaluation measures `compare`; the chat graph ranks its drafts with `rank`.
    """

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Judge `first` against `second` as replies to `context`."""
        ...

    async def rank(self, context: Sequence[Turn], candidates: Sequence[str]) -> Ranking:
        """Order `candidates` best first for this user."""
        ...


def compares(judge: object) -> bool:
    """Return whether `judge` can be evaluated: it has an async `compare` (`rank` is not needed)."""
    return callable(getattr(judge, "compare", None))


@runtime_checkable
class OrderJudge(Protocol):
    """A judge that can also judge one reply order alone (`LLMJudge`), one model call per order."""

    async def judge_order(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Judge `first` against `second` in this order only."""
        ...


def choice_probability(raw: BaseMessage, *, key: str = "choice") -> float | None:
    """Read P(First) from the log-probabilities of the token that starts the choice value.

    The tokens of the answer are joined, the value of ``"<key>": "`` is located, and the
    alternatives of the token covering its first character are split into First and Second mass.
    Return None when the message has no usable log-probabilities.
    """
    logprobs = raw.response_metadata.get("logprobs") if raw.response_metadata else None
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not content:
        return None
    texts = [str(entry.get("token", "")) for entry in content]
    found = list(re.finditer(rf'"{re.escape(key)}"\s*:\s*"', "".join(texts)))
    if not found:
        return None
    value_start, position, index = found[-1].end(), 0, 0
    while index < len(texts) and position + len(texts[index]) <= value_start:
        position += len(texts[index])
        index += 1
    if index == len(texts):
        return None
    entry, text = content[index], texts[index]
    prefix = text[: value_start - position]
    alternatives = list(entry.get("top_logprobs") or [])
    if not any(alt.get("token") == entry.get("token") for alt in alternatives):
        alternatives.append({"token": entry.get("token", ""), "logprob": entry.get("logprob", -math.inf)})
    mass = {"first": 0.0, "second": 0.0}
    for alt in alternatives:
        token = str(alt.get("token", ""))
        if not token.startswith(prefix):
            continue
        rest = token[len(prefix) :].strip().strip('"}').strip().lower()
        if not rest:
            continue
        for label in mass:
            if label.startswith(rest) or rest.startswith(label):
                mass[label] += math.exp(float(alt.get("logprob", -math.inf)))
    total = mass["first"] + mass["second"]
    return mass["first"] / total if total > 0 else None


def verdict_of(answer: JudgeAnswer, raw: BaseMessage) -> Verdict:
    """Turn one single-order answer into a verdict, preferring token probabilities."""
    probability = choice_probability(raw)
    if probability is None:
        first = answer.choice == "First"
        return Verdict(
            preferred="first" if first else "second",
            prob_first=1.0 if first else 0.0,
            reasoning=answer.reasoning,
            source="structured",
        )
    return Verdict(
        preferred=_preference(probability),
        prob_first=probability,
        reasoning=answer.reasoning,
        source="logprobs",
    )


def _preference(prob_first: float) -> Literal["first", "second", "tie"]:
    if prob_first > 0.5 + 1e-9:
        return "first"
    if prob_first < 0.5 - 1e-9:
        return "second"
    return "tie"


def combine_orders(as_given: Verdict, swapped: Verdict) -> Verdict:
    """Average a verdict with the verdict on the swapped order; disagreement without odds is a tie."""
    if "fallback" in (as_given.source, swapped.source):
        return fallback_verdict("one order of the comparison failed")
    probability = (as_given.prob_first + (1.0 - swapped.prob_first)) / 2
    reasoning = f"As shown: {as_given.reasoning} | Swapped (First and Second exchanged): {swapped.reasoning}"
    return Verdict(
        preferred=_preference(probability), prob_first=probability, reasoning=reasoning, source="combined"
    )


def fallback_verdict(why: str) -> Verdict:
    """Return the tie a judge answers with when the model gave nothing usable."""
    return Verdict(preferred="tie", prob_first=0.5, reasoning=f"no verdict: {why}", source="fallback")


def _cache_key(context: Sequence[Turn], first: str, second: str) -> str:
    canonical = json.dumps([[[t.role, t.content] for t in context], first, second], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class LLMJudge:
    """A pairwise judge backed by a chat model, optionally conditioned on a persona and demos."""

    def __init__(
        self,
        model: BaseChatModel,
        *,
        persona: str | None = None,
        demos: Sequence[Demo] = (),
        structured_method: str = "json_schema",
        concurrency: int = 1,
        attempts: int = 3,
        stage: str = "judge",
        callbacks: Sequence[BaseCallbackHandler] = (),
        budget: CallBudget | None = None,
        limiter: asyncio.Semaphore | None = None,
        purpose: JudgePurpose = "judge",
        cache_size: int = 1_024,
    ) -> None:
        self.persona = persona
        self.demos = tuple(demos)
        self.purpose = purpose
        self.fallbacks = 0
        self._caller = StructuredCaller(
            model,
            JudgeAnswer,
            structured_method=structured_method,
            attempts=attempts,
            stage=stage,
            callbacks=callbacks,
            budget=budget,
            limiter=limiter,
            concurrency=concurrency,
        )
        self._cache: OrderedDict[str, Verdict] = OrderedDict()
        self._cache_size = cache_size
        self._inflight: dict[str, asyncio.Task[Verdict]] = {}

    async def judge_once(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Judge one order with one model call (cached); raise `ModelOutputError` after retries."""
        key = _cache_key(context, first, second)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        task = self._inflight.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._ask(context, first, second))
            self._inflight[key] = task
        try:
            verdict = await asyncio.shield(task)
        finally:
            if task.done():
                self._inflight.pop(key, None)
        self._cache[key] = verdict
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return verdict

    async def _ask(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        messages = judge_messages(
            context, first, second, persona=self.persona, demos=self.demos, purpose=self.purpose
        )
        answer, raw = await self._caller(messages)
        return verdict_of(answer, raw)

    async def judge_order(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Judge this order alone (one call, cached); a tie with source "fallback" on failure."""
        try:
            return await self.judge_once(as_turns(context), first, second)
        except ModelOutputError as exc:
            return self._fall_back(exc)

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Judge both orders (two calls) and combine them; a tie with source "fallback" on failure."""
        turns = as_turns(context)
        try:
            as_given, swapped = await asyncio.gather(
                self.judge_once(turns, first, second), self.judge_once(turns, second, first)
            )
        except ModelOutputError as exc:
            return self._fall_back(exc)
        return combine_orders(as_given, swapped)

    def _fall_back(self, error: Exception) -> Verdict:
        self.fallbacks += 1
        if self.fallbacks == 1:
            logger.warning("judge answered with a tie after unusable model output: %s", error)
        else:
            logger.debug("judge fallback %d: %s", self.fallbacks, error)
        return fallback_verdict(str(error))

    async def rank(self, context: Sequence[Turn], candidates: Sequence[str]) -> Ranking:
        """Order up to 8 candidates best first for this user.

        Every comparison judges both orders (2 calls). For N <= 4 candidates every pair meets once
        (round robin): N(N-1) calls, at most 12. For 5 <= N <= 8 a knockout (byes for odd rounds,
        a tie advances the earlier candidate): 2(N-1) calls, at most 14. `Ranking.judge_calls`
        counts these single-order judgements (cached ones included). A candidate's score is its
        mean probability of winning its comparisons (0.5 with none); round robin orders by score,
        then wins; knockout by rounds won, then score; the earlier candidate wins any remaining tie.
        """
        if not candidates:
            raise ValueError("rank needs at least one candidate")
        if len(candidates) > MAX_RANK_CANDIDATES:
            raise ValueError(f"rank takes at most {MAX_RANK_CANDIDATES} candidates, got {len(candidates)}")
        turns = as_turns(context)
        count = len(candidates)
        probs: list[list[float]] = [[] for _ in range(count)]
        wins = [0] * count
        rounds_won = [0] * count
        reasons: list[list[str]] = [[] for _ in range(count)]
        calls = 0

        async def play(i: int, j: int) -> int:
            verdict = await self.compare(turns, candidates[i], candidates[j])
            probs[i].append(verdict.prob_first)
            probs[j].append(1.0 - verdict.prob_first)
            winner = j if verdict.preferred == "second" else i
            if verdict.preferred != "tie":
                wins[winner] += 1
            note = verdict.reasoning[:_REASON_CHARS]
            reasons[i].append(f"vs #{j}: {note}")
            reasons[j].append(f"vs #{i}: {note}")
            return winner

        if count <= ROUND_ROBIN_MAX:
            matches = list(combinations(range(count), 2))
            calls = 2 * len(matches)
            await asyncio.gather(*(play(i, j) for i, j in matches))
        else:
            alive = list(range(count))
            while len(alive) > 1:
                pairs = [(alive[k], alive[k + 1]) for k in range(0, len(alive) - 1, 2)]
                calls += 2 * len(pairs)
                winners = await asyncio.gather(*(play(i, j) for i, j in pairs))
                for winner in winners:
                    rounds_won[winner] += 1
                alive = list(winners) + ([alive[-1]] if len(alive) % 2 else [])

        scores = [sum(p) / len(p) if p else 0.5 for p in probs]
        if count <= ROUND_ROBIN_MAX:
            order = sorted(range(count), key=lambda i: (-scores[i], -wins[i], i))
        else:
            order = sorted(range(count), key=lambda i: (-rounds_won[i], -scores[i], i))
        ranked = tuple(
            RankedCandidate(
                index=i, content=candidates[i], score=scores[i], wins=wins[i], reasons=tuple(reasons[i])
            )
            for i in order
        )
        return Ranking(candidates=ranked, judge_calls=calls)


class DefaultJudge(LLMJudge):
    """The judge without a persona: what a generic LLM judge expects any user to prefer."""

    def __init__(self, model: BaseChatModel, **options: Any) -> None:
        super().__init__(model, persona=None, demos=(), **options)


class PersonaJudge(LLMJudge):
    """The judge conditioned on one user's persona and demos (SynthesizeMe's personalized reward)."""

    def __init__(
        self, model: BaseChatModel, persona: str | None, demos: Sequence[Demo] = (), **options: Any
    ) -> None:
        super().__init__(model, persona=persona, demos=demos, **options)
