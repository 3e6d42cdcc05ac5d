"""The stages of one SynthesizeMe fit, sharing one call budget, usage tracker and limiter.

`FitRun` runs what `agent.synthesis` describes: bootstrap reasoning (`bootstrap_reasoning`),
persona induction (`induce_persona`), corrected misses (`correct_misses`), and the scoring of
demo sets and the gate (`choose`), which builds the `SynthesisResult`.
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

from agent.demo_sets import CANDIDATE_SETS, CandidateScore, demo_ids, others, select_best
from agent.errors import BudgetExceeded, ModelOutputError, PersonaRejected
from agent.evaluation import evaluate
from agent.judge import LLMJudge, PersonaJudge
from agent.prompts import (
    MAX_PERSONA_CHARS,
    InductionExample,
    JudgePurpose,
    in_chosen_terms,
    induction_messages,
)
from agent.records import Demo, Persona, PreferencePair, Reasoning, Verdict, check_persona_text
from agent.sections import clip
from agent.structured import StructuredCaller
from agent.usage import CallBudget, UsageReport, UsageTracker

logger = logging.getLogger(__name__)

StageReporter = Callable[[str, str], None]
UNVERIFIED_INDUCTION_PAIRS = 5
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


class FitSettings(Protocol):
    """The settings of a fit that its stages read (`agent.synthesis.SynthesizeMe` has them)."""

    judge_model: BaseChatModel
    structured_method: str
    attempts: int
    concurrency: int
    seed: int
    max_demos: int
    labelled_demos: int
    induction_max_tokens: int


def most_telling(pairs: Sequence[PreferencePair], count: int) -> list[PreferencePair]:
    """Keep `count` pairs: stated picks before inferred ones (`PreferencePair.weight`), then the newest."""
    ordered = sorted(pairs, key=lambda pair: (pair.weight, pair.created_at))
    return sorted(ordered[-count:], key=lambda pair: pair.created_at) if count > 0 else []


def no_report(stage: str, detail: str) -> None:
    """Report nothing: the default when no progress display listens."""


def _model_name(model: BaseChatModel) -> str:
    for attribute in ("model_name", "model", "model_path"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return model._llm_type


class FitRun:
    """The shared budget, usage tracker and concurrency limit of one fit."""

    def __init__(
        self,
        owner: FitSettings,
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
                for p in most_telling(train, UNVERIFIED_INDUCTION_PAIRS)
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
        return CandidateScore(name=name, demo_pair_ids=demo_ids(demos), val_accuracy=report.macro_accuracy)

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
            scores = [CandidateScore(name=name, demo_pair_ids=demo_ids(chosen_demos), val_accuracy=None)]
            new_accuracy = None
            accepted = current is None or not val  # an untested persona never replaces a gated one
        reasoning = [trace.reasoning for trace in traces]
        persona = Persona(
            user_id=user_id,
            text=persona_text,
            version=0,
            model=_model_name(self.owner.judge_model),
            pair_ids=tuple(pair.id for pair in [*train, *val]),
            demo_pair_ids=demo_ids(chosen_demos),
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
