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
from collections.abc import Sequence
from typing import Protocol

from langchain_core.language_models import BaseChatModel

from agent.demo_sets import (
    CANDIDATE_SETS,
    candidate_sets,
    labelled_demo,
    labelled_pool,
    newest_demos,
    random_sets,
)
from agent.errors import BudgetExceeded, InvalidPreference, NotEnoughPreferences
from agent.fit_stages import FitRun, StageReporter, SynthesisResult, most_telling, no_report
from agent.prompts import DEFAULT_INDUCTION_TOKENS
from agent.records import Demo, Persona, PreferencePair
from agent.usage import CallBudget, UsageTracker

LABELLED_DEMOS = 4


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
        """Keep pairs within `max_pairs` and the call budget (stated picks first, then the newest).

        Raises `BudgetExceeded` when even the smallest fit is over the budget.
        """
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
        return most_telling(train, n_train), most_telling(val, n_val)

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

        options = candidate_sets(
            [labelled_demo(pair) for pair in pool[: self.labelled_demos]],
            [*corrected, *newest_demos([t.as_demo for t in verified], self.max_demos)][: self.max_demos],
        )
        if val and self.random_sets:
            draws = [*corrected, *(t.as_demo for t in verified)]
            options.update(random_sets(draws, options, self.random_sets, self.max_demos, self.seed))
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
