"""What was learnt about a user, in one shape for every display: CLI, chat, demo and the inspector.

* The preference statements of the offline reward model, with the pairs behind each: the current
  persona's own when the offline model wrote it, else measured now on the user's newest pairs
  and labelled as what the offline model measured (shown beside a persona an LLM wrote).
* The live judge agreement: of the user's last picks, how often the judge had ranked the picked
  reply first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from agent.evaluation import JudgeAgreement, judge_agreement
from agent.offline_persona import is_offline_persona, statements_of
from agent.statements import PreferenceStatement, describe_preferences
from agent.taste import fit_user

if TYPE_CHECKING:
    from agent.records import Persona
    from memory.store import PreferenceStore
    from persona_agent.factory import OfflineParts

AGREEMENT_PICKS = 20
# A pick stores a pair per rejected candidate (at most 7): enough pairs for the last picks.
_AGREEMENT_PAIRS = AGREEMENT_PICKS * 7


class Learnt(BaseModel):
    """The statements of what a user prefers, where they come from, and the judge's agreement."""

    model_config = ConfigDict(frozen=True)

    statements: tuple[PreferenceStatement, ...]
    statements_from: Literal["persona", "offline model"]
    n_pairs: int
    judge_agreement: JudgeAgreement

    def to_json(self) -> dict[str, Any]:
        """Return the view as plain JSON types."""
        return self.model_dump(mode="json")


def measure_statements(
    store: PreferenceStore, user_id: str, offline_parts: Callable[[], OfflineParts], max_pairs: int
) -> tuple[list[PreferenceStatement], int]:
    """Fit the offline model on the user's newest pairs; return their departures from most people."""
    pairs = store.newest_pairs(user_id, max_pairs)
    if not pairs:
        return [], 0  # nothing to fit: the model is not even loaded
    parts = offline_parts()
    model = fit_user(parts.prior, parts.extractor, pairs, masses=store.taste_masses(user_id, parts.prior))
    return describe_preferences(model, parts.prior), len(pairs)


def agreement_of(store: PreferenceStore, user_id: str) -> JudgeAgreement:
    """Return the judge agreement over the user's last picks."""
    return judge_agreement(store.newest_pairs(user_id, _AGREEMENT_PAIRS), last=AGREEMENT_PICKS)


def learnt(
    store: PreferenceStore,
    user_id: str,
    persona: Persona | None,
    offline_parts: Callable[[], OfflineParts],
    *,
    max_pairs: int,
) -> Learnt:
    """Return what was learnt about the user; `offline_parts` is called only to measure statements."""
    origin: Literal["persona", "offline model"]
    if persona is not None and is_offline_persona(persona):
        statements, origin, n_pairs = statements_of(persona), "persona", len(persona.pair_ids)
    else:
        measured, n_pairs = measure_statements(store, user_id, offline_parts, max_pairs)
        statements, origin = measured, "offline model"
    return Learnt(
        statements=tuple(statements),
        statements_from=origin,
        n_pairs=n_pairs,
        judge_agreement=agreement_of(store, user_id),
    )


def agreement_line(agreement: JudgeAgreement) -> str:
    """Say in one line how often the judge had ranked the user's pick first."""
    if not agreement.picks:
        return "Judge agreement: no picks yet (/pick N after a reply)."
    return (
        f"Judge agreement: of your last {agreement.picks} picks, the judge had ranked "
        f"{agreement.agreed} first ({agreement.rate or 0.0:.0%})."
    )


def statement_lines(statements: tuple[PreferenceStatement, ...] | list[PreferenceStatement]) -> list[str]:
    """Write each statement with its weight against the population's and the pairs behind it."""
    return [
        f"{'+' if item.direction == 'more' else '-'} {item.text}  "
        f"(weight {item.weight:+.2f}, most people {item.population_weight:+.2f}; {item.n_pairs} pairs)"
        for item in statements
    ]
