"""SynthesizeMe: induce a persona and pick demos for one user from their preference pairs.

A fit runs three stages, each counted under its own usage stage:

1. ``bootstrap``: the default judge (no persona) reasons about every train pair, with the reply
   order drawn per pair from the seed. Reasoning that predicted the user's real choice is
   *verified*; the rest is kept on record but never used further.
2. ``induce``: one call turns the verified reasoning into a short persona. When no reasoning was
   verified, the most recent choices are shown without reasoning instead.
3. ``demos``: the persona judge re-reasons about up to `max_demos` pairs the default judge got
   wrong (``corrected`` demos when it now gets them right), then a few candidate demo sets
   (none, the corrected misses, the most recent verified pairs) are scored on the val pairs with
   the persona judge; the best wins and, on a tie, the one with fewer demos. With no val pairs
   there is no search: the corrected misses are used, else the verified pairs, else none.
   `random_sets` > 0 adds that many more candidates, each a seeded random draw of 1 to
   `max_demos` demos from the corrected and verified ones (the random search over bootstrapped
   demo sets of the original method; off by default because each set costs 2 * val calls).

The gate: when a current persona is given, it is scored with its demos on the same val pairs, and
the new one is ``accepted`` only if its val accuracy is at least as high. With no val pairs the
new persona is accepted (it has read more choices) and both accuracies stay None.

Cost: ``plan_calls`` = train + 1 + min(max_demos, train) + 2 * val * (candidates + 1 if a current
persona is scored), with candidates = 3 + `random_sets` (an upper bound: duplicate sets are
dropped). Val accuracy counts both reply orders with two calls per pair (the judge caches
single-order answers). Before any call, val and then train are trimmed to the most recent pairs
until the plan fits `max_calls`; if even 2 train pairs and 1 val pair do not fit, `BudgetExceeded`.
Retries of malformed output are charged to the same budget.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import (
    BudgetExceeded,
    InvalidPreference,
    ModelOutputError,
    NotEnoughPreferences,
    PersonaRejected,
)
from agent.evaluation import evaluate
from agent.judge import DefaultJudge, PersonaJudge, StructuredCaller
from agent.prompts import MAX_PERSONA_CHARS, InductionExample, clip, induction_messages, order_note
from agent.records import Demo, Persona, PreferencePair, Reasoning, Verdict, check_persona_text
from agent.usage import CallBudget, UsageReport, UsageTracker

logger = logging.getLogger(__name__)

CANDIDATE_SETS = ("persona only", "corrected misses", "verified")
StageReporter = Callable[[str, str], None]
UNVERIFIED_INDUCTION_PAIRS = 5
# Small models sometimes echo a format hint ("<the statements>") instead of writing a persona.
_PLACEHOLDER = re.compile(r"<[^<>]{0,60}>|\.\.\.|…")


class InducedPersona(BaseModel):
    """Describe what this user values and dislikes in assistant replies, as the choices show."""

    persona: str = Field(
        description="Three to six short statements, one per line, about what this user values and "
        "dislikes in replies. No demographics."
    )

    @field_validator("persona")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if _PLACEHOLDER.fullmatch(value.strip()):
            raise ValueError("is a placeholder, not a description of the user")
        return check_persona_text(value.strip())  # not a taste: retried, then the fit is rejected


class CandidateScore(BaseModel):
    """Val accuracy of one candidate demo set under the new persona."""

    model_config = ConfigDict(frozen=True)

    name: str
    demo_pair_ids: tuple[str, ...]
    val_accuracy: float | None


class PersonaSynthesizer(Protocol):
    """What writes a user's persona from their pairs: `SynthesizeMe`, or the offline reward model's writer."""

    max_pairs: int

    async def fit(
        self,
        train: Sequence[PreferencePair],
        val: Sequence[PreferencePair],
        *,
        current: Persona | None = None,
        current_demos: Sequence[Demo] = (),
        on_stage: StageReporter | None = None,
    ) -> SynthesisResult:
        """Write a persona and demos from `train`, gated against `current` on `val`; report stages."""
        ...


class SynthesisResult(BaseModel):
    """What one fit produced, what it cost and whether it beat the current persona."""

    model_config = ConfigDict(frozen=True)

    persona: Persona
    demos: list[Demo]
    reasoning: list[Reasoning]
    default_judge_correct: dict[str, bool]
    accepted: bool
    usage: UsageReport
    candidates: list[CandidateScore]
    baseline_val_accuracy: float | None = None
    skipped_pair_ids: list[str] = Field(default_factory=list, description="Pairs whose reasoning failed.")
    judge_fallbacks: int = Field(0, description="Val comparisons answered with a fallback tie.")
    planned_calls: int = 0
    train_pair_ids: list[str] = Field(default_factory=list)
    val_pair_ids: list[str] = Field(default_factory=list)
    rejected_because: str | None = Field(
        None, description="Why the persona was not accepted, when not for a lower val accuracy."
    )

    def pair_annotations(self) -> dict[str, dict[str, Any]]:
        """Return what the memory store records per train pair: judge correctness, verified reasoning.

        A pair the default judge got right has verified reasoning; when the new persona is
        accepted, a pair it corrected counts as verified too, with the persona judge's reasoning.
        """
        notes: dict[str, dict[str, Any]] = {
            pair_id: {"default_judge_correct": correct, "has_verified_reasoning": correct}
            for pair_id, correct in self.default_judge_correct.items()
        }
        for reasoning in self.reasoning:
            if reasoning.verified and reasoning.pair_id in notes:
                notes[reasoning.pair_id]["reasoning"] = reasoning.text
        if self.accepted:
            for demo in self.demos:
                if demo.reasoning and demo.pair.id in notes:
                    notes[demo.pair.id].update(has_verified_reasoning=True, reasoning=demo.reasoning)
        return notes


@dataclass(frozen=True)
class _Trace:
    """The default judge's reasoning about one train pair."""

    pair: PreferencePair
    chosen_first: bool
    reasoning: Reasoning

    @property
    def as_demo(self) -> Demo:
        return Demo(
            pair=self.pair,
            reasoning=order_note(self.chosen_first) + self.reasoning.text,
            why="the default judge's reasoning predicted this choice",
        )


def _most_recent(pairs: Sequence[PreferencePair], count: int) -> list[PreferencePair]:
    ordered = sorted(pairs, key=lambda pair: pair.created_at)
    return ordered[-count:] if count > 0 else []


def select_best(scores: Sequence[CandidateScore]) -> CandidateScore:
    """Pick the highest val accuracy; on a tie the fewest demos, then the earlier candidate."""
    if not scores:
        raise ValueError("no candidate demo sets to choose from")
    ranked = sorted(
        enumerate(scores),
        key=lambda item: (-(item[1].val_accuracy or 0.0), len(item[1].demo_pair_ids), item[0]),
    )
    return ranked[0][1]


class SynthesizeMe:
    """Fit a persona and demos for one user from train and val preference pairs."""

    def __init__(
        self,
        model: BaseChatModel,
        *,
        judge_model: BaseChatModel | None = None,
        structured_method: str = "json_schema",
        concurrency: int = 1,
        max_calls: int = 80,
        max_pairs: int = 40,
        max_demos: int = 3,
        attempts: int = 3,
        seed: int = 0,
        random_sets: int = 0,
    ) -> None:
        if max_pairs < 2:
            raise ValueError("max_pairs must be at least 2")
        if random_sets < 0:
            raise ValueError("random_sets must not be negative")
        self.model = model
        self.judge_model = judge_model or model
        self.structured_method = structured_method
        self.concurrency = concurrency
        self.max_calls = max_calls
        self.max_pairs = max_pairs
        self.max_demos = max_demos
        self.attempts = attempts
        self.seed = seed
        self.random_sets = random_sets

    def plan_calls(self, n_train: int, n_val: int, *, has_current: bool = False) -> int:
        """Return the model calls a fit of this size makes when no output needs a retry."""
        scored_sets = len(CANDIDATE_SETS) + self.random_sets + (1 if has_current else 0) if n_val else 0
        return n_train + 1 + min(self.max_demos, n_train) + 2 * n_val * scored_sets

    def trim(
        self, train: Sequence[PreferencePair], val: Sequence[PreferencePair], *, has_current: bool = False
    ) -> tuple[list[PreferencePair], list[PreferencePair]]:
        """Keep the most recent pairs within `max_pairs` and the call budget, or raise `BudgetExceeded`."""
        n_val = min(len(val), max(1, self.max_pairs // 4)) if val else 0
        n_train = min(len(train), self.max_pairs - n_val)
        while self.plan_calls(n_train, n_val, has_current=has_current) > self.max_calls and n_val > 1:
            n_val -= 1
        while self.plan_calls(n_train, n_val, has_current=has_current) > self.max_calls and n_train > 2:
            n_train -= 1
        planned = self.plan_calls(n_train, n_val, has_current=has_current)
        if planned > self.max_calls:
            raise BudgetExceeded(
                f"a fit needs at least {planned} LLM calls, over the budget of {self.max_calls}"
            )
        return _most_recent(train, n_train), _most_recent(val, n_val)

    async def fit(
        self,
        train: Sequence[PreferencePair],
        val: Sequence[PreferencePair],
        *,
        current: Persona | None = None,
        current_demos: Sequence[Demo] = (),
        on_stage: StageReporter | None = None,
    ) -> SynthesisResult:
        """Synthesize a persona and demos from `train`, choose and gate them on `val`.

        `on_stage(stage, detail)` is told when each stage starts (bootstrap, induce, demos,
        select, gate), for a progress display.
        """
        report = on_stage or _no_report
        if len(train) < 2:
            raise NotEnoughPreferences(f"a persona needs at least 2 train pairs, got {len(train)}")
        users = {pair.user_id for pair in [*train, *val]}
        if len(users) != 1:
            raise InvalidPreference(f"a fit reads one user's pairs, got users {sorted(users)}")
        user_id = users.pop()
        train, val = self.trim(train, val, has_current=current is not None)
        planned = self.plan_calls(len(train), len(val), has_current=current is not None)
        run = _FitRun(self, CallBudget(self.max_calls), UsageTracker(), asyncio.Semaphore(self.concurrency))

        report("bootstrap", f"the default judge reasons about {len(train)} of your pairs")
        traces, skipped = await run.bootstrap_reasoning(train)
        verified = [trace for trace in traces if trace.reasoning.verified]
        report("induce", f"writing the persona from {len(verified) or len(train)} pairs")
        persona_text = await run.induce_persona(verified, train)
        missed = [trace for trace in traces if not trace.reasoning.verified]
        report("demos", f"re-checking {min(len(missed), self.max_demos)} missed pairs with the persona")
        corrected = await run.correct_misses(persona_text, missed)

        options = _candidate_sets(corrected, [t.as_demo for t in verified], self.max_demos)
        if val and self.random_sets:
            pool = [*corrected, *(t.as_demo for t in verified)]
            options.update(_random_sets(pool, options, self.random_sets, self.max_demos, self.seed))
        if val:
            report("select", f"scoring {len(options)} demo sets on {len(val)} held-out pairs")
            scores = await asyncio.gather(
                *(run.score(name, persona_text, demos, val) for name, demos in options.items())
            )
            best = select_best(scores)
            chosen_demos = options[best.name]
            if current:
                report("gate", f"scoring the current persona v{current.version} on the same pairs")
            baseline = (
                await run.score("current", current.text, current_demos, val, stage="gate")
                if current
                else None
            )
            baseline_accuracy = baseline.val_accuracy if baseline else None
            new_accuracy = best.val_accuracy
            accepted = baseline_accuracy is None or (new_accuracy or 0.0) >= baseline_accuracy
        else:
            default = next((name for name in CANDIDATE_SETS[1:] if options.get(name)), CANDIDATE_SETS[0])
            chosen_demos = options.get(default, [])
            scores = [CandidateScore(name=default, demo_pair_ids=_ids(chosen_demos), val_accuracy=None)]
            baseline_accuracy, new_accuracy, accepted = None, None, True

        reasoning = [trace.reasoning for trace in traces]
        persona = Persona(
            user_id=user_id,
            text=persona_text,
            version=0,
            model=_model_name(self.model),
            pair_ids=tuple(pair.id for pair in [*train, *val]),
            demo_pair_ids=_ids(chosen_demos),
            val_accuracy=new_accuracy,
            baseline_val_accuracy=baseline_accuracy,
            reasoning=tuple(reasoning),
        )
        return SynthesisResult(
            persona=persona,
            demos=list(chosen_demos),
            reasoning=reasoning,
            default_judge_correct={t.pair.id: t.reasoning.verified for t in traces},
            accepted=accepted,
            usage=run.tracker.report(),
            candidates=list(scores),
            baseline_val_accuracy=baseline_accuracy,
            skipped_pair_ids=skipped,
            judge_fallbacks=run.fallbacks,
            planned_calls=planned,
            train_pair_ids=[pair.id for pair in train],
            val_pair_ids=[pair.id for pair in val],
        )


def _no_report(stage: str, detail: str) -> None:
    """Report nothing: the default when no progress display listens."""


def _ids(demos: Sequence[Demo]) -> tuple[str, ...]:
    return tuple(demo.pair.id for demo in demos)


def _model_name(model: BaseChatModel) -> str:
    for attribute in ("model_name", "model", "model_path"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return model._llm_type


def _candidate_sets(corrected: list[Demo], verified: list[Demo], max_demos: int) -> dict[str, list[Demo]]:
    """Build the candidate demo sets, dropping empty and duplicate ones (none is always kept)."""
    newest_verified = (
        sorted(verified, key=lambda demo: demo.pair.created_at)[-max_demos:] if max_demos else []
    )
    options: dict[str, list[Demo]] = {CANDIDATE_SETS[0]: []}
    seen: set[tuple[str, ...]] = {()}
    for name, demos in zip(CANDIDATE_SETS[1:], (corrected[:max_demos], newest_verified), strict=True):
        if _ids(demos) not in seen:
            seen.add(_ids(demos))
            options[name] = demos
    return options


def _random_sets(
    demos: Sequence[Demo], options: dict[str, list[Demo]], count: int, max_demos: int, seed: int
) -> dict[str, list[Demo]]:
    """Draw up to `count` demo sets from `demos` (first copy of a pair wins), skipping sets in `options`."""
    pool: list[Demo] = []
    for demo in demos:
        if demo.pair.id not in {kept.pair.id for kept in pool}:
            pool.append(demo)
    if not pool or max_demos < 1:
        return {}
    rng = random.Random(f"{seed}:demo-sets")
    seen = {frozenset(_ids(existing)) for existing in options.values()}
    drawn: dict[str, list[Demo]] = {}
    for number in range(1, count + 1):
        sample = rng.sample(pool, rng.randint(1, min(max_demos, len(pool))))
        if frozenset(_ids(sample)) not in seen:
            seen.add(frozenset(_ids(sample)))
            drawn[f"random {number}"] = sample
    return drawn


class _FitRun:
    """The shared budget, usage tracker and concurrency limit of one fit."""

    def __init__(
        self, owner: SynthesizeMe, budget: CallBudget, tracker: UsageTracker, limiter: asyncio.Semaphore
    ) -> None:
        self.owner = owner
        self.budget = budget
        self.tracker = tracker
        self.limiter = limiter
        self.fallbacks = 0

    def _options(self, stage: str) -> dict[str, Any]:
        return {
            "structured_method": self.owner.structured_method,
            "attempts": self.owner.attempts,
            "stage": stage,
            "callbacks": [self.tracker],
            "budget": self.budget,
            "limiter": self.limiter,
        }

    async def bootstrap_reasoning(self, train: Sequence[PreferencePair]) -> tuple[list[_Trace], list[str]]:
        """Have the default judge reason about each pair in a seeded random order; keep the outcome."""
        judge = DefaultJudge(self.owner.judge_model, purpose="bootstrap", **self._options("bootstrap"))

        async def reason(pair: PreferencePair) -> _Trace | None:
            chosen_first = random.Random(f"{self.owner.seed}:{pair.id}").random() < 0.5
            first, second = (pair.chosen, pair.rejected) if chosen_first else (pair.rejected, pair.chosen)
            try:
                verdict = await judge.judge_once(pair.context, first, second)
            except ModelOutputError as exc:
                logger.warning("bootstrap: skipped pair %s after unusable output: %s", pair.id, exc)
                return None
            return _Trace(pair, chosen_first, _reasoning_of(pair.id, verdict, chosen_first))

        results = await asyncio.gather(*(reason(pair) for pair in train))
        traces = [trace for trace in results if trace is not None]
        skipped = [pair.id for pair, trace in zip(train, results, strict=True) if trace is None]
        return traces, skipped

    async def induce_persona(self, verified: Sequence[_Trace], train: Sequence[PreferencePair]) -> str:
        """Write the persona from verified reasoning only (recent bare choices when none verified)."""
        if verified:
            examples = [
                InductionExample(
                    query=t.pair.query,
                    first=t.pair.chosen if t.chosen_first else t.pair.rejected,
                    second=t.pair.rejected if t.chosen_first else t.pair.chosen,
                    chosen_first=t.chosen_first,
                    reasoning=t.reasoning.text,
                )
                for t in verified
            ]
        else:
            examples = [
                InductionExample(
                    query=p.query, first=p.chosen, second=p.rejected, chosen_first=True, reasoning=None
                )
                for p in _most_recent(train, UNVERIFIED_INDUCTION_PAIRS)
            ]
        caller = StructuredCaller(
            self.owner.model,
            InducedPersona,
            structured_method=self.owner.structured_method,
            attempts=self.owner.attempts,
            stage="induce",
            callbacks=[self.tracker],
            budget=self.budget,
            limiter=self.limiter,
        )
        try:
            answer, _ = await caller(induction_messages(examples))
        except ModelOutputError as exc:
            # The call's own retries are spent; fitting again from scratch would repeat the
            # bootstrap for the same verdict, so the fit ends here and the current persona stays.
            raise PersonaRejected(f"the model wrote no usable persona: {_persona_problem_of(exc)}") from exc
        return clip(answer.persona, MAX_PERSONA_CHARS)

    async def correct_misses(self, persona: str, missed: Sequence[_Trace]) -> list[Demo]:
        """Re-reason about recent misses with the persona; keep those it now predicts right."""
        chosen = sorted(missed, key=lambda t: t.pair.created_at, reverse=True)[: self.owner.max_demos]
        judge = PersonaJudge(self.owner.judge_model, persona, purpose="bootstrap", **self._options("demos"))

        async def retry(trace: _Trace) -> Demo | None:
            pair = trace.pair
            first, second = (
                (pair.chosen, pair.rejected) if trace.chosen_first else (pair.rejected, pair.chosen)
            )
            try:
                verdict = await judge.judge_once(pair.context, first, second)
            except ModelOutputError as exc:
                logger.warning("demos: no corrected reasoning for pair %s: %s", pair.id, exc)
                return None
            reasoning = _reasoning_of(pair.id, verdict, trace.chosen_first)
            if not reasoning.verified:
                return None
            return Demo(
                pair=pair,
                reasoning=order_note(trace.chosen_first) + reasoning.text,
                why="missed by the default judge; predicted with the persona",
            )

        results = await asyncio.gather(*(retry(trace) for trace in chosen))
        return [demo for demo in results if demo is not None]

    async def score(
        self,
        name: str,
        persona: str,
        demos: Sequence[Demo],
        val: Sequence[PreferencePair],
        *,
        stage: str = "select",
    ) -> CandidateScore:
        """Score a persona with a demo set on the val pairs (both orders, ties wrong)."""
        judge = PersonaJudge(self.owner.judge_model, persona, demos, **self._options(stage))
        report = await evaluate(judge, val, concurrency=max(1, self.owner.concurrency))
        self.fallbacks += judge.fallbacks
        return CandidateScore(name=name, demo_pair_ids=_ids(demos), val_accuracy=report.macro_accuracy)


def _persona_problem_of(error: BaseException) -> str:
    """Return why the last persona answer was refused, as the validator worded it."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ValidationError):
            return "; ".join(item["msg"].removeprefix("Value error, ") for item in cause.errors())
        cause = cause.__cause__ or cause.__context__
    return str(error)


def _reasoning_of(pair_id: str, verdict: Verdict, chosen_first: bool) -> Reasoning:
    """Record what a single-order verdict predicted about the user's real choice."""
    predicted: Literal["chosen", "rejected", "tie"]
    if verdict.preferred == "tie":
        predicted = "tie"
    elif (verdict.preferred == "first") == chosen_first:
        predicted = "chosen"
    else:
        predicted = "rejected"
    return Reasoning(pair_id=pair_id, text=verdict.reasoning or "(no reasoning given)", predicted=predicted)
