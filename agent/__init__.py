"""The SynthesizeMe method: typed records, the pairwise judge, persona synthesis, evaluation, and the
offline personal reward model. No LangGraph wiring, no storage, no settings (those are `graphs`,
`memory` and `persona_agent`).

The public names are importable from here (``from agent import SynthesizeMe, PersonaJudge``); each
is loaded from its module on first use, so importing one record does not import the whole method.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.conversation import as_turns, turn_messages
    from agent.demo_sets import merge_demos
    from agent.drafting import draft_candidates
    from agent.embedding import CachedEmbedder, Embedder
    from agent.errors import (
        BudgetExceeded,
        ConfigurationError,
        Forbidden,
        InvalidPreference,
        ModelOutputError,
        NotEnoughPreferences,
        NotFound,
        PersonaAgentError,
        PersonaRejected,
        UnknownUser,
    )
    from agent.evaluation import AccuracyReport, evaluate, judge_agreement, run_judges
    from agent.features import FeatureExtractor
    from agent.fit_stages import SynthesisResult
    from agent.formats import pair_from_record, pair_to_record, pairs_from_records, read_pairs
    from agent.judge import DefaultJudge, LLMJudge, PairwiseJudge, PersonaJudge, combine_orders
    from agent.offline_judge import HybridJudge, OfflineJudge
    from agent.offline_persona import OfflinePersonaWriter
    from agent.records import (
        DEFAULT_LIMITS,
        Demo,
        Limits,
        Persona,
        PreferencePair,
        RankedCandidate,
        Ranking,
        Reasoning,
        Turn,
        Verdict,
    )
    from agent.reference_search import ReferenceSearch
    from agent.reward_model import RewardModel
    from agent.shared_tastes import SharedTastes
    from agent.splits import UserSplit, split_train_val, user_splits
    from agent.structured import StructuredCaller
    from agent.synthesis import PersonaSynthesizer, SynthesizeMe
    from agent.usage import CallBudget, UsageReport, UsageTracker

_HOMES: dict[str, str] = {
    "DEFAULT_LIMITS": "agent.records",
    "Demo": "agent.records",
    "Limits": "agent.records",
    "Persona": "agent.records",
    "PreferencePair": "agent.records",
    "RankedCandidate": "agent.records",
    "Ranking": "agent.records",
    "Reasoning": "agent.records",
    "Turn": "agent.records",
    "Verdict": "agent.records",
    "BudgetExceeded": "agent.errors",
    "ConfigurationError": "agent.errors",
    "Forbidden": "agent.errors",
    "InvalidPreference": "agent.errors",
    "ModelOutputError": "agent.errors",
    "NotEnoughPreferences": "agent.errors",
    "NotFound": "agent.errors",
    "PersonaAgentError": "agent.errors",
    "PersonaRejected": "agent.errors",
    "UnknownUser": "agent.errors",
    "pair_from_record": "agent.formats",
    "pair_to_record": "agent.formats",
    "pairs_from_records": "agent.formats",
    "read_pairs": "agent.formats",
    "as_turns": "agent.conversation",
    "turn_messages": "agent.conversation",
    "DefaultJudge": "agent.judge",
    "LLMJudge": "agent.judge",
    "PairwiseJudge": "agent.judge",
    "PersonaJudge": "agent.judge",
    "combine_orders": "agent.judge",
    "StructuredCaller": "agent.structured",
    "draft_candidates": "agent.drafting",
    "PersonaSynthesizer": "agent.synthesis",
    "SynthesizeMe": "agent.synthesis",
    "SynthesisResult": "agent.fit_stages",
    "merge_demos": "agent.demo_sets",
    "ReferenceSearch": "agent.reference_search",
    "UserSplit": "agent.splits",
    "split_train_val": "agent.splits",
    "user_splits": "agent.splits",
    "AccuracyReport": "agent.evaluation",
    "evaluate": "agent.evaluation",
    "judge_agreement": "agent.evaluation",
    "run_judges": "agent.evaluation",
    "CachedEmbedder": "agent.embedding",
    "Embedder": "agent.embedding",
    "FeatureExtractor": "agent.features",
    "RewardModel": "agent.reward_model",
    "HybridJudge": "agent.offline_judge",
    "OfflineJudge": "agent.offline_judge",
    "OfflinePersonaWriter": "agent.offline_persona",
    "SharedTastes": "agent.shared_tastes",
    "CallBudget": "agent.usage",
    "UsageReport": "agent.usage",
    "UsageTracker": "agent.usage",
}

__all__ = [
    "DEFAULT_LIMITS",
    "AccuracyReport",
    "BudgetExceeded",
    "CachedEmbedder",
    "CallBudget",
    "ConfigurationError",
    "DefaultJudge",
    "Demo",
    "Embedder",
    "FeatureExtractor",
    "Forbidden",
    "HybridJudge",
    "InvalidPreference",
    "LLMJudge",
    "Limits",
    "ModelOutputError",
    "NotEnoughPreferences",
    "NotFound",
    "OfflineJudge",
    "OfflinePersonaWriter",
    "PairwiseJudge",
    "Persona",
    "PersonaAgentError",
    "PersonaJudge",
    "PersonaRejected",
    "PersonaSynthesizer",
    "PreferencePair",
    "RankedCandidate",
    "Ranking",
    "Reasoning",
    "ReferenceSearch",
    "RewardModel",
    "SharedTastes",
    "StructuredCaller",
    "SynthesisResult",
    "SynthesizeMe",
    "Turn",
    "UnknownUser",
    "UsageReport",
    "UsageTracker",
    "UserSplit",
    "Verdict",
    "as_turns",
    "combine_orders",
    "draft_candidates",
    "evaluate",
    "judge_agreement",
    "merge_demos",
    "pair_from_record",
    "pair_to_record",
    "pairs_from_records",
    "read_pairs",
    "run_judges",
    "split_train_val",
    "turn_messages",
    "user_splits",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its module the first time it is asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
