"""Which judge picks a chat turn's reply: the LLM judge, the offline reward model, or both pooled.

A `JudgeFactory` is called once per turn with the user's current persona and the demos retrieved
for the turn, and returns a judge (anything with ``compare`` and ``rank``) with a label the state
records. `LLMJudges` gives the default judge before the user has a persona and the persona judge
after. `OfflineJudges` fits the user's reward model on their newest stored pairs, starting from
the population prior, or from the archetype the user chose to start from (`agent.starting`),
with the taste prior the deployment's users share when one was learnt (`agent.shared_tastes`).
`HybridJudges` pools the two with the fixed weights of `agent.offline_judge` (fitting the stack
needs validation pairs judged by the LLM, too costly per turn).
The offline model is held to the directions of the statements the user pinned (`agent.persona_edits`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from langchain_core.language_models import BaseChatModel

from agent.judge import DefaultJudge, LLMJudge, PairwiseJudge, PersonaJudge
from agent.records import Demo, Persona
from agent.starting import starting_prior

if TYPE_CHECKING:
    from agent.archetypes import Archetype
    from agent.features import FeatureExtractor
    from agent.persona_edits import StatementEdit
    from agent.reward_model import RewardModel
    from agent.shared_tastes import SharedTastes
    from memory.starts import StartChoice
    from memory.store import PreferenceStore


class JudgeFactory(Protocol):
    """Build the judge of one turn for one user."""

    async def __call__(
        self, user_id: str, persona: Persona | None, demos: Sequence[Demo]
    ) -> tuple[PairwiseJudge, str]:
        """Return the judge and its label ("default", "persona", "offline", "hybrid ...")."""
        ...


@dataclass(frozen=True)
class LLMJudges:
    """The language-model judge: default before a persona exists, persona-conditioned after."""

    model: BaseChatModel
    structured_method: str = "json_schema"
    concurrency: int = 1
    attempts: int = 3

    def build(self, persona: Persona | None, demos: Sequence[Demo]) -> tuple[LLMJudge, str]:
        """Return the judge for this persona (or none) and its label."""
        options = {
            "structured_method": self.structured_method,
            "concurrency": self.concurrency,
            "attempts": self.attempts,
        }
        if persona is None:
            return DefaultJudge(self.model, **options), "default"
        return PersonaJudge(self.model, persona.text, demos, **options), "persona"

    async def __call__(
        self, user_id: str, persona: Persona | None, demos: Sequence[Demo]
    ) -> tuple[PairwiseJudge, str]:
        """Return the default or persona judge."""
        return self.build(persona, demos)


@dataclass(frozen=True)
class OfflineJudges:
    """The offline reward model, fitted per turn on the user's newest stored pairs.

    The fit starts from `prior` moved to the user's chosen starting archetype (one of
    `archetypes`), or from `prior` itself when they chose none.
    """

    memory: PreferenceStore
    prior: RewardModel
    extractor: FeatureExtractor
    max_pairs: int = 40
    archetypes: tuple[Archetype, ...] = ()

    def _prior(self, start: StartChoice | None, edits: Sequence[StatementEdit]) -> RewardModel:
        """Return the prior a user's model is fitted from: their start, held to their pins."""
        from agent.archetypes import with_pinned
        from agent.persona_edits import pins_of

        prior = starting_prior(self.prior, self.archetypes, start.archetype if start else None)
        return with_pinned(prior, pins_of(edits))

    def prior_of(self, user_id: str) -> RewardModel:
        """Return the prior the user's model is fitted from (their start, held to their pins)."""
        return self._prior(self.memory.starting_choice(user_id), self.memory.statement_edits(user_id))

    async def __call__(
        self, user_id: str, persona: Persona | None, demos: Sequence[Demo]
    ) -> tuple[PairwiseJudge, str]:
        """Fit the user's reward model (no language model call), held to their pinned statements."""
        from agent.offline_judge import OfflineJudge

        pairs, start, edits, tastes = await asyncio.gather(
            asyncio.to_thread(self.memory.newest_pairs, user_id, self.max_pairs),
            asyncio.to_thread(self.memory.starting_choice, user_id),
            asyncio.to_thread(self.memory.statement_edits, user_id),
            asyncio.to_thread(self.memory.usable_shared_tastes),
        )
        prior = self._prior(start, edits)
        masses = tastes.masses_for(user_id, prior) if tastes is not None and pairs else None
        judge = await asyncio.to_thread(OfflineJudge.for_user, prior, self.extractor, pairs, masses=masses)
        return judge, "offline"

    def learn_shared_tastes(self) -> SharedTastes:
        """Learn the tastes the store's users share from the fits their turns make (same pairs, priors)."""
        from agent.shared_tastes import SharedTastes

        pairs = {user: self.memory.newest_pairs(user, self.max_pairs) for user in self.memory.user_ids()}
        self.extractor.pair_differences([pair for own in pairs.values() for pair in own])  # one batched pass
        return SharedTastes.learn(self.prior_of, self.extractor, pairs)


@dataclass(frozen=True)
class HybridJudges:
    """The LLM judge and the offline reward model, pooled in log-odds space."""

    llm: LLMJudges
    offline: OfflineJudges

    async def __call__(
        self, user_id: str, persona: Persona | None, demos: Sequence[Demo]
    ) -> tuple[PairwiseJudge, str]:
        """Return the pooled judge; its label names the LLM judge's kind."""
        from agent.offline_judge import HybridJudge

        llm_judge, label = self.llm.build(persona, demos)
        offline_judge, _ = await self.offline(user_id, persona, demos)
        return HybridJudge(llm_judge, offline_judge), f"hybrid ({label} + offline)"
