"""The reference library's search (SALT-NLP/SynthesizeMe), run by our judge, prompts and budget.

The product's fit (`agent.synthesis.SynthesizeMe`) spends a few dozen calls; this one follows
the library's `BootstrapFewShotWithRandomSearch` in both of its stages, so a user with an
endpoint can check that the budgeted default loses no accuracy against it (``persona-agent bench
accuracy --search reference``) and see what it costs (``persona-agent bench cost``).

Stage 1 (no persona) scores 12 candidate programs of the default judge on val: the labelled
demos alone (seed -2), then a bootstrap over the train pairs in their given order (seed -1) and
over 10 seeded shuffles (seeds 0-9), each keeping a seeded random number (1 to all) of the
teacher's successes. The teacher is the default judge shown `max_labelled` (4) labelled train
pairs (never the pair it explains); a success is a single-order prediction of the user's choice,
and its reasoning becomes a demo (in chosen/rejected terms). A candidate's demos are its
successes, filled up to `max_labelled` with labelled pairs it did not explain. The persona is
induced from the best Stage-1 candidate's demos (all train pairs when it has none).

Stage 3 scores 13 candidates of the persona judge the same way, with a zero-shot one (seed -3)
first; its teacher is the persona judge with labelled demos. The winner's demos are the fit's.

Selection, as the library's: candidates are taken in seed order, the first strictly higher val
accuracy is the best so far, and the walk stops at the first candidate reaching `stop_at` (0.8).
All candidates are scored (the library evaluates them in parallel before applying the rule);
a demo set identical to one already scored is not asked again, as the library's call cache
would answer it. The gate against a current persona is the product's.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel

from agent.demo_sets import CandidateScore, labelled_demo, others
from agent.errors import BudgetExceeded, ModelOutputError, NotEnoughPreferences
from agent.fit_stages import FitRun, StageReporter, SynthesisResult, Trace, no_report
from agent.judge import LLMJudge
from agent.prompts import InductionExample, JudgePurpose
from agent.records import Demo, Persona, PreferencePair
from agent.synthesis import SynthesizeMe

logger = logging.getLogger(__name__)

ZERO_SHOT, LABELLED_ONLY, UNSHUFFLED = -3, -2, -1
NO_CALL_CAP = 1_000_000


@dataclass(frozen=True)
class Candidate:
    """One candidate program of a search stage: its seed and demos."""

    seed: int
    demos: list[Demo]
    traces: list[Trace] = field(default_factory=list)

    @property
    def name(self) -> str:
        names = {ZERO_SHOT: "zero-shot", LABELLED_ONLY: "labelled only", UNSHUFFLED: "bootstrap, given order"}
        return names.get(self.seed, f"bootstrap, seed {self.seed}")


def pick_with_stop(scores: Sequence[CandidateScore], stop_at: float) -> CandidateScore:
    """Walk `scores` in order: keep the first strictly better one, stop at the first >= `stop_at`."""
    if not scores:
        raise ValueError("no candidate demo sets to choose from")
    best = scores[0]
    for score in scores:
        accuracy = score.val_accuracy or 0.0
        if accuracy > (best.val_accuracy or 0.0):
            best = score
        if accuracy >= stop_at:
            break
    return best


class ReferenceSearch(SynthesizeMe):
    """SynthesizeMe with the reference library's two random searches over bootstrapped demos."""

    def __init__(
        self,
        model: BaseChatModel,
        *,
        num_candidates: int = 10,
        max_labelled: int = 4,
        stop_at: float = 0.8,
        max_calls: int = NO_CALL_CAP,
        max_pairs: int = 200,
        **options: Any,
    ) -> None:
        super().__init__(
            model,
            max_calls=max_calls,
            max_pairs=max_pairs,
            max_demos=max_pairs,
            labelled_demos=max_labelled,
            **options,
        )
        self.num_candidates = num_candidates
        self.stop_at = stop_at

    def seeds(self, *, zero_shot: bool) -> list[int]:
        """The candidate seeds of a stage, in the order the stopping rule walks them."""
        first = ZERO_SHOT if zero_shot else LABELLED_ONLY
        return list(range(first, self.num_candidates))

    def plan_calls(self, n_train: int, n_val: int, *, has_current: bool = False) -> int:
        """Return the most calls a fit makes: every teacher pass and every candidate scored."""
        passes = 2 * (self.num_candidates + 1)  # seed -1 and 0..N-1, in both stages
        candidates = len(self.seeds(zero_shot=False)) + len(self.seeds(zero_shot=True))
        return passes * n_train + 1 + 2 * n_val * (candidates + (1 if has_current else 0))

    async def fit(
        self,
        train: Sequence[PreferencePair],
        val: Sequence[PreferencePair],
        *,
        current: Persona | None = None,
        current_demos: Sequence[Demo] = (),
        on_stage: StageReporter | None = None,
    ) -> SynthesisResult:
        """Run both searches on `val`; gate the winner against `current` as the product does."""
        report = on_stage or no_report
        if not val:  # as the library: every candidate is chosen on val
            raise NotEnoughPreferences("the reference search needs at least 1 val pair")
        user_id, train, val, run = self._start(train, val, has_current=current is not None)

        report("bootstrap", f"{len(self.seeds(zero_shot=False))} default-judge programs on {len(val)} pairs")
        stage1 = await self._candidates(run, None, train, zero_shot=False)
        scores1 = await self._scores(run, None, stage1, val, stage="bootstrap-select", purpose="bootstrap")
        best1 = pick_with_stop(scores1, self.stop_at) if scores1 else None
        demos1 = next((c.demos for c in stage1 if best1 and c.name == best1.name), [])
        examples = [_induction_example(demo) for demo in demos1] or [
            InductionExample(p.context, p.chosen, p.rejected, True, None) for p in train
        ]
        report("induce", f"writing the persona from {len(examples)} pairs")
        persona_text = await run.induce_persona(examples, train)
        report("demos", f"{len(self.seeds(zero_shot=True))} persona-judge programs")

        stage3 = await self._candidates(run, persona_text, train, zero_shot=True)
        traces = next(c.traces for c in stage1 if c.seed == UNSHUFFLED)
        return await run.choose(
            user_id,
            persona_text,
            {candidate.name: candidate.demos for candidate in stage3},
            train=train,
            val=val,
            current=current,
            current_demos=current_demos,
            traces=traces,
            skipped=[],
            fallback_order=[c.name for c in stage3],
            pick=lambda scores: pick_with_stop(scores, self.stop_at),
            report=report,
        )

    async def _candidates(
        self, run: FitRun, persona: str | None, train: list[PreferencePair], *, zero_shot: bool
    ) -> list[Candidate]:
        """Build every candidate program of one stage (teacher passes run side by side)."""
        return list(
            await asyncio.gather(
                *(self._candidate(run, persona, train, seed) for seed in self.seeds(zero_shot=zero_shot))
            )
        )

    async def _candidate(
        self, run: FitRun, persona: str | None, train: list[PreferencePair], seed: int
    ) -> Candidate:
        """Bootstrap one candidate's demos with the labelled teacher, as the library's seed does."""
        if seed == ZERO_SHOT:
            return Candidate(seed, [])
        order = list(train)
        if seed >= 0:
            random.Random(seed).shuffle(order)
        labelled = random.Random(f"{self.seed}:{seed}:labelled").sample(
            order, min(self.labelled_demos, len(order))
        )
        if seed == LABELLED_ONLY:
            return Candidate(seed, [labelled_demo(pair) for pair in labelled])
        wanted = len(order) if seed == UNSHUFFLED else random.Random(seed).randint(1, len(order))
        stage = "bootstrap" if persona is None else "demos"
        successes: list[Demo] = []
        traces: list[Trace] = []
        for pair in order:
            if len(successes) >= wanted:
                break
            teacher = LLMJudge(
                self.judge_model,
                persona=persona,
                demos=others(labelled, pair, self.labelled_demos),
                purpose="bootstrap",
                **run.judge_options(stage),
            )
            chosen_first = run.order_of(pair)
            try:
                reasoning = await run.explain(teacher, pair, chosen_first, both_orders=False)
            except ModelOutputError as exc:  # the library counts a failed example and goes on
                logger.warning("%s: seed %d skipped pair %s: %s", stage, seed, pair.id, exc)
                continue
            except BudgetExceeded:
                run.spent(stage, pair.id)
                break
            traces.append(Trace(pair, chosen_first, reasoning))
            if reasoning.verified:
                successes.append(Demo(pair=pair, reasoning=reasoning.text, why=f"bootstrapped (seed {seed})"))
        explained = {demo.pair.id for demo in successes}
        fill = [pair for pair in order if pair.id not in explained]
        room = max(0, self.labelled_demos - len(successes))
        raw = random.Random(f"{self.seed}:{seed}:raw").sample(fill, min(room, len(fill)))
        return Candidate(seed, [*successes, *(labelled_demo(pair) for pair in raw)], traces)

    async def _scores(
        self,
        run: FitRun,
        persona: str | None,
        candidates: Sequence[Candidate],
        val: Sequence[PreferencePair],
        *,
        stage: str,
        purpose: JudgePurpose,
    ) -> list[CandidateScore]:
        """Score each distinct demo set once; return the scores in seed order (unscored dropped)."""
        keys = [tuple((d.pair.id, d.reasoning) for d in c.demos) for c in candidates]
        distinct = {key: candidate for key, candidate in zip(keys, candidates, strict=True)}
        scored = await asyncio.gather(
            *(
                run.score(c.name, persona, c.demos, val, stage=stage, purpose=purpose)
                for c in distinct.values()
            )
        )
        by_key = dict(zip(distinct, scored, strict=True))
        scores = []
        for key, candidate in zip(keys, candidates, strict=True):
            found = by_key[key]
            if found is not None:
                scores.append(found.model_copy(update={"name": candidate.name}))
        return scores


def _induction_example(demo: Demo) -> InductionExample:
    pair = demo.pair
    return InductionExample(pair.context, pair.chosen, pair.rejected, True, demo.reasoning)
