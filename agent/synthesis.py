"""SynthesizeMe: induce a persona and pick demos for one user from their preference pairs.

A fit runs three stages, each counted under its own usage stage:

1. ``bootstrap``: the default judge (no persona) explains every train pair with up to
   `labelled_demos` (4) of the same user's other train pairs in context, labelled with the reply
   they chose (the reference's labelled teacher). The reply order is drawn per pair from the seed.
   Reasoning is *verified* when its prediction holds in both orders: a second call with the
   replies swapped, unless the first answer's token log-probabilities already give the user's
   choice a margin of `CONFIDENT_MARGIN`. Verified reasoning is re-written in terms of the chosen
   and rejected reply (`in_chosen_terms`), as demos and stored pairs show them; the rest is kept
   on record but never used further.
2. ``induce``: the judge model (deterministic) turns the verified choices, each with its whole
   conversation within `induction_max_tokens`, into a short persona. When no reasoning was
   verified, the most recent choices are shown without reasoning instead.
3. ``demos``: the persona judge re-reasons about up to `max_demos` pairs the default judge got
   wrong (kept as demos when it now gets them right). The candidate demo sets are none, the
   labelled pairs of stage 1 (no reasoning), and the verified ones (corrected misses first, then
   the most recent verified pairs, up to `max_demos`); they are scored on the val pairs with the
   persona judge, the best wins and, on a tie, the one with fewer demos. With no val pairs there
   is no search: the verified set is used, else none. `random_sets` > 0 adds that many more
   candidates, each a seeded random draw of 1 to `max_demos` demos from the verified ones.

The gate: when a current persona is given, it is scored with its demos on the same val pairs, and
the new one is ``accepted`` only if its val accuracy is at least as high. With no val pairs the
new persona is accepted (it has read more choices) and both accuracies stay None.

Cost: ``plan_calls`` = 2 * train + 1 + min(max_demos, train) + 2 * val * (candidates + 1 if a
current persona is scored), with candidates = 3 + `random_sets` (an upper bound: the second
order of a pair is asked only when the first was right, duplicate sets are dropped). Val accuracy
counts both reply orders with two calls per pair (the judge caches single-order answers). Before
any call, val and then train are trimmed to the most recent pairs until the plan fits
`max_calls`; if even 2 train pairs and 1 val pair do not fit, `BudgetExceeded`. Retries of
malformed output are charged to the same budget; when they spend it, the fit ends with what it
has (pairs not yet explained are skipped, unscored candidates drop out, the best scored one wins;
``budget_exhausted`` says so), and a gate that could not be scored keeps the current persona.
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
from agent.judge import LLMJudge, PersonaJudge
from agent.prompts import (
    DEFAULT_INDUCTION_TOKENS,
    MAX_PERSONA_CHARS,
    InductionExample,
    JudgePurpose,
    in_chosen_terms,
    induction_messages,
)
from agent.records import Demo, Persona, PreferencePair, Reasoning, Verdict, check_persona_text
from agent.sections import clip
from agent.splits import demos_without
from agent.structured import StructuredCaller
from agent.usage import CallBudget, UsageReport, UsageTracker

logger = logging.getLogger(__name__)

CANDIDATE_SETS = ("persona only", "labelled", "verified")
StageReporter = Callable[[str, str], None]
UNVERIFIED_INDUCTION_PAIRS = 5
LABELLED_DEMOS = 4
# P(the user's choice) at or above 0.5 + this margin, read from token log-probabilities, verifies
# a reasoning without asking the swapped order.
CONFIDENT_MARGIN = 0.25
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
    budget_exhausted: bool = Field(
        False, description="Retries spent the call budget: the fit ended with the best it had."
    )
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
class Trace:
    """The default judge's reasoning about one train pair, in chosen/rejected terms."""

    pair: PreferencePair
    chosen_first: bool
    reasoning: Reasoning

    @property
    def as_demo(self) -> Demo:
        return Demo(
            pair=self.pair,
            reasoning=self.reasoning.text,
            why="the default judge's reasoning predicted this choice",
        )

    @property
    def as_induction_example(self) -> InductionExample:
        return InductionExample(
            self.pair.context, self.pair.chosen, self.pair.rejected, True, self.reasoning.text
        )


def labelled_demo(pair: PreferencePair) -> Demo:
    """Show a past choice with its label only: which reply the user chose."""
    return Demo(pair=pair, why="a labelled choice of this user")


def labelled_pool(train: Sequence[PreferencePair], count: int, seed: int) -> list[PreferencePair]:
    """Draw `count` + 1 train pairs (seeded): any pair's `count` others come from them."""
    return random.Random(f"{seed}:labelled").sample(list(train), min(len(train), count + 1))


def others(pool: Sequence[PreferencePair], pair: PreferencePair, count: int) -> list[Demo]:
    """Return up to `count` labelled demos from `pool`, never the pair itself or a sibling of it."""
    return demos_without(pair, [labelled_demo(other) for other in pool])[:count]


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
        labelled_demos: int = LABELLED_DEMOS,
        induction_max_tokens: int = DEFAULT_INDUCTION_TOKENS,
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
        self.labelled_demos = labelled_demos
        self.induction_max_tokens = induction_max_tokens

    def plan_calls(self, n_train: int, n_val: int, *, has_current: bool = False) -> int:
        """Return the model calls a fit of this size makes when no output needs a retry."""
        scored_sets = len(CANDIDATE_SETS) + self.random_sets + (1 if has_current else 0) if n_val else 0
        return 2 * n_train + 1 + min(self.max_demos, n_train) + 2 * n_val * scored_sets

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

    def _start(
        self, train: Sequence[PreferencePair], val: Sequence[PreferencePair], *, has_current: bool
    ) -> tuple[str, list[PreferencePair], list[PreferencePair], FitRun]:
        """Check that the pairs are one user's and enough, trim them to the budget, open the run."""
        if len(train) < 2:
            raise NotEnoughPreferences(f"a persona needs at least 2 train pairs, got {len(train)}")
        users = {pair.user_id for pair in [*train, *val]}
        if len(users) != 1:
            raise InvalidPreference(f"a fit reads one user's pairs, got users {sorted(users)}")
        kept_train, kept_val = self.trim(train, val, has_current=has_current)
        planned = self.plan_calls(len(kept_train), len(kept_val), has_current=has_current)
        budget = CallBudget(self.max_calls)
        run = FitRun(self, budget, UsageTracker(), asyncio.Semaphore(self.concurrency), planned=planned)
        return users.pop(), kept_train, kept_val, run

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
        report = on_stage or no_report
        user_id, train, val, run = self._start(train, val, has_current=current is not None)

        report("bootstrap", f"the default judge reasons about {len(train)} of your pairs")
        pool = labelled_pool(train, self.labelled_demos, self.seed)
        traces, skipped = await run.bootstrap_reasoning(train, pool)
        verified = [trace for trace in traces if trace.reasoning.verified]
        report("induce", f"writing the persona from {len(verified) or len(train)} pairs")
        persona_text = await run.induce_persona([t.as_induction_example for t in verified], train)
        missed = [trace for trace in traces if not trace.reasoning.verified]
        report("demos", f"re-checking {min(len(missed), self.max_demos)} missed pairs with the persona")
        corrected = await run.correct_misses(persona_text, missed)

        options = _candidate_sets(
            [labelled_demo(pair) for pair in pool[: self.labelled_demos]],
            [*corrected, *_newest([t.as_demo for t in verified], self.max_demos)][: self.max_demos],
        )
        if val and self.random_sets:
            draws = [*corrected, *(t.as_demo for t in verified)]
            options.update(_random_sets(draws, options, self.random_sets, self.max_demos, self.seed))
        return await run.choose(
            user_id,
            persona_text,
            options,
            train=train,
            val=val,
            current=current,
            current_demos=current_demos,
            traces=traces,
            skipped=skipped,
            fallback_order=CANDIDATE_SETS[::-1],
            report=report,
        )


def merge_demos(selected: Sequence[Demo], retrieved: Sequence[Demo]) -> list[Demo]:
    """Return the val-selected demos, then the retrieved ones that show other pairs."""
    shown = {demo.pair.id for demo in selected}
    return [*selected, *(demo for demo in retrieved if demo.pair.id not in shown)]


def no_report(stage: str, detail: str) -> None:
    """Report nothing: the default when no progress display listens."""


def _ids(demos: Sequence[Demo]) -> tuple[str, ...]:
    return tuple(demo.pair.id for demo in demos)


def _model_name(model: BaseChatModel) -> str:
    for attribute in ("model_name", "model", "model_path"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return model._llm_type


def _newest(demos: Sequence[Demo], count: int) -> list[Demo]:
    return sorted(demos, key=lambda demo: demo.pair.created_at)[-count:] if count > 0 else []


def _candidate_sets(labelled: list[Demo], verified: list[Demo]) -> dict[str, list[Demo]]:
    """Build the candidate demo sets, dropping empty and duplicate ones (none is always kept)."""
    options: dict[str, list[Demo]] = {CANDIDATE_SETS[0]: []}
    seen: set[tuple[tuple[str, bool], ...]] = {()}
    for name, demos in zip(CANDIDATE_SETS[1:], (labelled, verified), strict=True):
        if _set_key(demos) not in seen:
            seen.add(_set_key(demos))
            options[name] = demos
    return options


def _set_key(demos: Sequence[Demo]) -> tuple[tuple[str, bool], ...]:
    """Identify a demo set by its pairs and whether each shows reasoning."""
    return tuple((demo.pair.id, bool(demo.reasoning)) for demo in demos)


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


class FitRun:
    """The shared budget, usage tracker and concurrency limit of one fit."""

    def __init__(
        self,
        owner: SynthesizeMe,
        budget: CallBudget,
        tracker: UsageTracker,
        limiter: asyncio.Semaphore,
        *,
        planned: int = 0,
    ) -> None:
        self.owner = owner
        self.planned = planned
        self.budget = budget
        self.tracker = tracker
        self.limiter = limiter
        self.fallbacks = 0
        self.exhausted = False

    def judge_options(self, stage: str) -> dict[str, Any]:
        """The options every model call of this fit shares: retries, usage stage, budget, limiter."""
        return {
            "structured_method": self.owner.structured_method,
            "attempts": self.owner.attempts,
            "stage": stage,
            "callbacks": [self.tracker],
            "budget": self.budget,
            "limiter": self.limiter,
        }

    def spent(self, stage: str, pair_id: str | None = None) -> None:
        """Note that the call budget ran out; the fit goes on with what it has."""
        if not self.exhausted:
            logger.warning("%s: call budget spent (pair %s); ending with the best so far", stage, pair_id)
        self.exhausted = True

    def order_of(self, pair: PreferencePair) -> bool:
        """Say (seeded, per pair) whether the chosen reply is shown first."""
        return random.Random(f"{self.owner.seed}:{pair.id}").random() < 0.5

    async def explain(
        self, judge: LLMJudge, pair: PreferencePair, chosen_first: bool, *, both_orders: bool
    ) -> Reasoning:
        """Have `judge` explain one pair; with `both_orders`, verified only if the swap agrees."""
        first, second = (pair.chosen, pair.rejected) if chosen_first else (pair.rejected, pair.chosen)
        verdict = await judge.judge_once(pair.context, first, second)
        reasoning = _reasoning_of(pair.id, verdict, chosen_first)
        if not both_orders or not reasoning.verified or _confident(verdict, chosen_first):
            return reasoning
        swapped = await judge.judge_once(pair.context, second, first)
        if _reasoning_of(pair.id, swapped, not chosen_first).verified:
            return reasoning
        return reasoning.model_copy(update={"predicted": "tie"})  # it follows the position

    async def bootstrap_reasoning(
        self, train: Sequence[PreferencePair], pool: Sequence[PreferencePair]
    ) -> tuple[list[Trace], list[str]]:
        """Have the default judge, shown labelled pairs from `pool`, explain each train pair."""

        async def reason(pair: PreferencePair) -> Trace | None:
            judge = LLMJudge(
                self.owner.judge_model,
                demos=others(pool, pair, self.owner.labelled_demos),
                purpose="bootstrap",
                **self.judge_options("bootstrap"),
            )
            chosen_first = self.order_of(pair)
            try:
                reasoning = await self.explain(judge, pair, chosen_first, both_orders=True)
            except ModelOutputError as exc:
                logger.warning("bootstrap: skipped pair %s after unusable output: %s", pair.id, exc)
                return None
            except BudgetExceeded:
                self.spent("bootstrap", pair.id)
                return None
            return Trace(pair, chosen_first, reasoning)

        results = await asyncio.gather(*(reason(pair) for pair in train))
        traces = [trace for trace in results if trace is not None]
        skipped = [pair.id for pair, trace in zip(train, results, strict=True) if trace is None]
        return traces, skipped

    async def induce_persona(
        self, examples: Sequence[InductionExample], train: Sequence[PreferencePair]
    ) -> str:
        """Write the persona at temperature 0 from `examples` (recent bare choices when there are none)."""
        if not examples:
            examples = [
                InductionExample(p.context, p.chosen, p.rejected, True, None)
                for p in _most_recent(train, UNVERIFIED_INDUCTION_PAIRS)
            ]
        caller = StructuredCaller(self.owner.judge_model, InducedPersona, **self.judge_options("induce"))
        messages = induction_messages(examples, max_tokens=self.owner.induction_max_tokens)
        try:
            answer, _ = await caller(messages)
        except ModelOutputError as exc:
            # The call's own retries are spent; fitting again from scratch would repeat the
            # bootstrap for the same verdict, so the fit ends here and the current persona stays.
            raise PersonaRejected(f"the model wrote no usable persona: {_persona_problem_of(exc)}") from exc
        return clip(answer.persona, MAX_PERSONA_CHARS)

    async def correct_misses(self, persona: str, missed: Sequence[Trace]) -> list[Demo]:
        """Re-reason about recent misses with the persona; keep those it now predicts right."""
        chosen = sorted(missed, key=lambda t: t.pair.created_at, reverse=True)[: self.owner.max_demos]
        judge = PersonaJudge(
            self.owner.judge_model, persona, purpose="bootstrap", **self.judge_options("demos")
        )

        async def retry(trace: Trace) -> Demo | None:
            try:
                reasoning = await self.explain(judge, trace.pair, trace.chosen_first, both_orders=False)
            except ModelOutputError as exc:
                logger.warning("demos: no corrected reasoning for pair %s: %s", trace.pair.id, exc)
                return None
            except BudgetExceeded:
                self.spent("demos", trace.pair.id)
                return None
            if not reasoning.verified:
                return None
            return Demo(
                pair=trace.pair,
                reasoning=reasoning.text,
                why="missed by the default judge; predicted with the persona",
            )

        results = await asyncio.gather(*(retry(trace) for trace in chosen))
        return [demo for demo in results if demo is not None]

    async def score(
        self,
        name: str,
        persona: str | None,
        demos: Sequence[Demo],
        val: Sequence[PreferencePair],
        *,
        stage: str = "select",
        purpose: JudgePurpose = "judge",
    ) -> CandidateScore | None:
        """Score a persona with a demo set on the val pairs (both orders, ties wrong).

        None when the call budget ran out before the score was complete.
        """
        judge = PersonaJudge(
            self.owner.judge_model, persona, demos, purpose=purpose, **self.judge_options(stage)
        )
        try:
            report = await evaluate(judge, val, concurrency=max(1, self.owner.concurrency))
        except BudgetExceeded:
            self.spent(stage)
            return None
        finally:
            self.fallbacks += judge.fallbacks
        return CandidateScore(name=name, demo_pair_ids=_ids(demos), val_accuracy=report.macro_accuracy)

    async def choose(
        self,
        user_id: str,
        persona_text: str,
        options: dict[str, list[Demo]],
        *,
        train: Sequence[PreferencePair],
        val: Sequence[PreferencePair],
        current: Persona | None,
        current_demos: Sequence[Demo],
        traces: Sequence[Trace],
        skipped: list[str],
        fallback_order: Sequence[str],
        pick: Callable[[Sequence[CandidateScore]], CandidateScore] | None = None,
        report: StageReporter | None = None,
    ) -> SynthesisResult:
        """Score the candidate demo sets on val, gate the best against `current`, build the result.

        Sets are scored one after another (each with the judge's own concurrency), so the
        result does not depend on how concurrent calls interleave.

        `pick` chooses among the scored sets (`select_best` by default); `fallback_order` names the
        set to use, first non-empty one, when nothing could be scored.
        """
        report = report or no_report
        scored: list[CandidateScore] = []
        baseline_accuracy: float | None = None
        gated = True
        if val:
            # One after another, the gate first: when retries spend the budget, the sets scored
            # so far still compete and the gate is not the part left out.
            if current is not None:
                report("gate", f"scoring the current persona v{current.version} on the same pairs")
                baseline = await self.score("current", current.text, current_demos, val, stage="gate")
                gated = baseline is not None
                baseline_accuracy = baseline.val_accuracy if baseline else None
            report("select", f"scoring {len(options)} demo sets on {len(val)} held-out pairs")
            for name, demos in options.items():
                score = await self.score(name, persona_text, demos, val) if not self.exhausted else None
                if score is not None:
                    scored.append(score)
        if scored:
            best = (pick or select_best)(scored)
            chosen_demos = options[best.name]
            new_accuracy = best.val_accuracy
            accepted = gated and (baseline_accuracy is None or (new_accuracy or 0.0) >= baseline_accuracy)
            scores = scored
        else:
            name = next((n for n in fallback_order if options.get(n)), CANDIDATE_SETS[0])
            chosen_demos = options.get(name, [])
            scores = [CandidateScore(name=name, demo_pair_ids=_ids(chosen_demos), val_accuracy=None)]
            new_accuracy = None
            accepted = current is None or not val  # an untested persona never replaces a gated one
        reasoning = [trace.reasoning for trace in traces]
        persona = Persona(
            user_id=user_id,
            text=persona_text,
            version=0,
            model=_model_name(self.owner.judge_model),
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
            usage=self.tracker.report(),
            candidates=scores,
            baseline_val_accuracy=baseline_accuracy,
            skipped_pair_ids=skipped,
            judge_fallbacks=self.fallbacks,
            planned_calls=self.planned,
            train_pair_ids=[pair.id for pair in train],
            val_pair_ids=[pair.id for pair in val],
            budget_exhausted=self.exhausted,
        )


def _confident(verdict: Verdict, chosen_first: bool) -> bool:
    """True when token log-probabilities give the user's choice at least `CONFIDENT_MARGIN`."""
    if verdict.source != "logprobs":
        return False
    prob_chosen = verdict.prob_first if chosen_first else 1.0 - verdict.prob_first
    return prob_chosen >= 0.5 + CONFIDENT_MARGIN


def _persona_problem_of(error: BaseException) -> str:
    """Return why the last persona answer was refused, as the validator worded it."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ValidationError):
            return "; ".join(item["msg"].removeprefix("Value error, ") for item in cause.errors())
        cause = cause.__cause__ or cause.__context__
    return str(error)


def _reasoning_of(pair_id: str, verdict: Verdict, chosen_first: bool) -> Reasoning:
    """Record what a single-order verdict predicted about the user's real choice, in chosen/rejected terms."""
    predicted: Literal["chosen", "rejected", "tie"]
    if verdict.preferred == "tie":
        predicted = "tie"
    elif (verdict.preferred == "first") == chosen_first:
        predicted = "chosen"
    else:
        predicted = "rejected"
    text = in_chosen_terms(verdict.reasoning, chosen_first) if verdict.reasoning else "(no reasoning given)"
    return Reasoning(pair_id=pair_id, text=text, predicted=predicted)
