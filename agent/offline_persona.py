"""The persona the offline reward model writes: its preference statements, as a stored persona version.

`OfflinePersonaWriter.fit` answers the same call as `SynthesizeMe.fit` (train and val pairs, the
current persona as the gate's baseline) without any language-model call:

1. The user's model fitted on the train pairs is scored on the val pairs (both reply orders, as
   every judge is): that is the persona's validation accuracy.
2. The persona's statements come from the model fitted on all the pairs it read, the same fit
   the offline judge makes for this user, so the persona a user sees is the one the judge uses.
   `persona_text` writes them one per line, the way they condition drafting.
3. The gate: when the current persona was written by this writer too, the same method on the
   train pairs it had read is scored on the same val pairs, and the new persona is accepted when
   it scores at least as well. A persona of another source was scored by another judge, so the
   two accuracies are not comparable and the new one is accepted. A model that departs from the
   population nowhere has nothing to say: it is not accepted (``rejected_because`` says why).
4. Per train pair, the population prior (the default judge before anything is learnt) says
   whether it predicted the user's choice, with its reasons; the pairs it missed and the user's
   model predicts become the demos, as SynthesizeMe's corrected misses do.

`explain_pick` says which statements made the user's model pick one reply over another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from agent.demo_sets import CandidateScore
from agent.evaluation import evaluate
from agent.features import INTERPRETABLE_NAMES, FeatureExtractor
from agent.fit_stages import StageReporter, SynthesisResult
from agent.offline_judge import OfflineJudge
from agent.records import Demo, Persona, PreferencePair, Reasoning
from agent.reward_model import RewardModel
from agent.shared_tastes import MassesOf
from agent.statements import PreferenceStatement, describe_preferences
from agent.taste import fit_user
from agent.usage import UsageReport

MODEL_LABEL = "offline reward model"
# What a verdict with the chosen reply shown first predicted about the user's choice.
_PREDICTED: dict[str, Literal["chosen", "rejected", "tie"]] = {
    "first": "chosen",
    "second": "rejected",
    "tie": "tie",
}
NO_DEPARTURE = "the offline reward model finds no departure from most people's taste in these pairs yet"


# What each statement asks of a reply, in words a small drafting model follows ("keep it short").
# A tolerance (of hedging, apologies, refusals, straying from the question's words) asks nothing.
WRITING_HINTS: dict[tuple[str, str], str] = {
    ("length", "more"): "go into detail",
    ("length", "less"): "keep it short",
    ("lists", "more"): "use a bullet list",
    ("lists", "less"): "write prose, not lists",
    ("headings", "more"): "use headings",
    ("headings", "less"): "no headings",
    ("code_blocks", "more"): "show code where it helps",
    ("code_blocks", "less"): "no code blocks",
    ("questions", "more"): "ask them a question back",
    ("questions", "less"): "no questions back",
    ("hedging", "less"): "no hedging",
    ("apologies", "less"): "no apologies",
    ("refusal", "less"): "no refusals or disclaimers",
    ("reading_level", "more"): "write densely",
    ("reading_level", "less"): "use plain words",
    ("emoji", "more"): "add an emoji",
    ("emoji", "less"): "no emoji",
    ("first_person", "more"): "speak in the first person",
    ("first_person", "less"): "no first person",
    ("informality", "more"): "keep the tone casual",
    ("informality", "less"): "keep the tone formal",
    ("query_overlap", "more"): "use the question's own words",
    ("query_similarity", "more"): "stay close to the question",
    ("query_similarity", "less"): "go beyond the literal question",
}


def persona_text(statements: Sequence[PreferenceStatement], n_pairs: int) -> str:
    """Write statements as a short persona: one per line, then what they ask of a reply."""
    lines = [f"Measured on {n_pairs} of this user's choices, compared with most people's:"]
    lines += [f"- {statement.text}" for statement in statements]
    hints = [
        WRITING_HINTS[key]
        for key in ((statement.feature, statement.direction) for statement in statements)
        if key in WRITING_HINTS
    ]
    if hints:
        lines.append(f"Writing for them: {'; '.join(hints)}.")
    return "\n".join(lines)


def statements_of(persona: Persona) -> list[PreferenceStatement]:
    """Return the statements an offline persona renders (none for a persona an LLM wrote)."""
    return [PreferenceStatement.model_validate(item) for item in persona.statements]


def _model_label(extractor: FeatureExtractor) -> str:
    return f"{MODEL_LABEL} (features v{extractor.version})"


def is_offline_persona(persona: Persona | None) -> bool:
    """True when the offline reward model wrote this persona."""
    return persona is not None and persona.source == "offline"


@dataclass(frozen=True)
class PickExplanation:
    """One statement's share of the log-odds that the user's model prefers a reply over another."""

    statement: PreferenceStatement
    contribution: float


def explain_pick(
    user_model: RewardModel,
    prior: RewardModel,
    extractor: FeatureExtractor,
    statements: Sequence[PreferenceStatement],
    query: str,
    picked: str,
    other: str,
) -> list[PickExplanation]:
    """Return the statements that favour `picked` over `other`, largest first.

    A statement's share is the user's departure from the population's weight on its feature times
    the two replies' (standardised) difference on it: what moves this user's choice away from
    the choice most people would make.
    """
    features = extractor.reply_features(query, [picked, other])
    difference = (features[0] - features[1]) / user_model.scale
    departure = user_model.weights - prior.weights
    explained = []
    for statement in statements:
        if statement.feature not in INTERPRETABLE_NAMES:
            continue
        index = INTERPRETABLE_NAMES.index(statement.feature)
        share = float(departure[index] * difference[index])
        if share > 0:
            explained.append(PickExplanation(statement, share))
    return sorted(explained, key=lambda item: -item.contribution)


class OfflinePersonaWriter:
    """Write a user's persona from the offline reward model's statements (no language model)."""

    def __init__(
        self,
        prior: RewardModel,
        extractor: FeatureExtractor,
        *,
        max_pairs: int = 40,
        max_demos: int = 3,
        masses_of: MassesOf | None = None,
    ) -> None:
        """`masses_of(user_id, prior)`: the user's taste-prior masses, as the offline judge reads
        them (`PreferenceStore.taste_masses`); None: the prior's own for everyone."""
        if max_pairs < 2:
            raise ValueError("max_pairs must be at least 2")
        self.prior = prior
        self.extractor = extractor
        self.max_pairs = max_pairs
        self.max_demos = max_demos
        self.masses_of = masses_of

    def fit_user(self, pairs: Sequence[PreferencePair]) -> RewardModel:
        """Fit the user's model on `pairs` (the population prior when there are none)."""
        masses = self.masses_of(pairs[0].user_id, self.prior) if self.masses_of and pairs else None
        return fit_user(self.prior, self.extractor, pairs, masses=masses)

    async def _accuracy(self, model: RewardModel, val: Sequence[PreferencePair]) -> float | None:
        if not val:
            return None
        report = await evaluate(OfflineJudge(model, self.extractor), val)
        return report.macro_accuracy

    async def _baseline(
        self, current: Persona | None, train: Sequence[PreferencePair], val: Sequence[PreferencePair]
    ) -> float | None:
        """Score the current offline persona's method (its train pairs still stored) on `val`."""
        if not val or not is_offline_persona(current):
            return None
        assert current is not None
        read_before = set(current.pair_ids)
        earlier = [pair for pair in train if pair.id in read_before]
        model = await asyncio.to_thread(self.fit_user, earlier)
        return await self._accuracy(model, val)

    async def _population_reasoning(self, train: Sequence[PreferencePair]) -> list[Reasoning]:
        """What the population prior predicted for each train pair, and why."""
        judge = OfflineJudge(self.prior, self.extractor)
        reasoning = []
        for pair in train:
            verdict = await judge.compare(pair.context, pair.chosen, pair.rejected)
            predicted: Literal["chosen", "rejected", "tie"] = _PREDICTED[verdict.preferred]
            text = f"chosen reply shown first; {verdict.reasoning}"
            reasoning.append(Reasoning(pair_id=pair.id, text=text, predicted=predicted))
        return reasoning

    async def _demos(
        self, model: RewardModel, train: Sequence[PreferencePair], reasoning: Sequence[Reasoning]
    ) -> list[Demo]:
        """The newest train pairs the population missed and the user's model predicts."""
        missed = {item.pair_id for item in reasoning if not item.verified}
        judge = OfflineJudge(model, self.extractor)
        demos: list[Demo] = []
        for pair in sorted(train, key=lambda pair: pair.created_at, reverse=True):
            if len(demos) >= self.max_demos:
                break
            if pair.id not in missed:
                continue
            verdict = await judge.compare(pair.context, pair.chosen, pair.rejected)
            if verdict.preferred == "first":
                demos.append(
                    Demo(
                        pair=pair,
                        reasoning=f"chosen reply shown first; {verdict.reasoning}",
                        why="missed by the population model; predicted by this user's model",
                    )
                )
        return demos

    async def fit(
        self,
        train: Sequence[PreferencePair],
        val: Sequence[PreferencePair],
        *,
        current: Persona | None = None,
        current_demos: Sequence[Demo] = (),
        on_stage: StageReporter | None = None,
    ) -> SynthesisResult:
        """Write the persona from the user's model, validated on `val` and gated against `current`."""
        if on_stage is not None:
            on_stage("offline", f"fitting your reward model on {len(train) + len(val)} pairs")
        everything = [*train, *val]
        users = {pair.user_id for pair in everything}
        if len(users) != 1:
            raise ValueError(f"a fit reads one user's pairs, got users {sorted(users)}")
        user_id = users.pop()
        # Features of every reply in one batched embedding pass, off the event loop.
        await asyncio.to_thread(self.extractor.pair_differences, everything)
        on_train, on_everything = await asyncio.gather(
            asyncio.to_thread(self.fit_user, train), asyncio.to_thread(self.fit_user, everything)
        )
        accuracy, baseline = await asyncio.gather(
            self._accuracy(on_train, val), self._baseline(current, train, val)
        )
        statements = describe_preferences(on_everything, self.prior)
        reasoning = await self._population_reasoning(train)
        demos = await self._demos(on_everything, train, reasoning)
        rejected_because = NO_DEPARTURE if not statements else None
        accepted = not rejected_because and (baseline is None or (accuracy or 0.0) >= baseline)
        persona = Persona(
            user_id=user_id,
            text=persona_text(statements, len(everything)) if statements else NO_DEPARTURE,
            model=_model_label(self.extractor),
            pair_ids=tuple(pair.id for pair in everything),
            demo_pair_ids=tuple(demo.pair.id for demo in demos),
            val_accuracy=accuracy,
            baseline_val_accuracy=baseline,
            reasoning=tuple(reasoning),
            source="offline",
            statements=tuple(statement.model_dump(mode="json") for statement in statements),
        )
        return SynthesisResult(
            persona=persona,
            demos=demos,
            reasoning=reasoning,
            default_judge_correct={item.pair_id: item.verified for item in reasoning},
            accepted=accepted,
            usage=UsageReport(),
            candidates=[
                CandidateScore(
                    name="offline model", demo_pair_ids=persona.demo_pair_ids, val_accuracy=accuracy
                )
            ],
            baseline_val_accuracy=baseline,
            train_pair_ids=[pair.id for pair in train],
            val_pair_ids=[pair.id for pair in val],
            rejected_because=rejected_because,
        )
