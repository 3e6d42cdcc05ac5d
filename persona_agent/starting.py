"""A new user's start, for every front door (CLI, chat, the server's route): archetypes and the quiz.

`start_from_archetype` is the one way a choice is made: the key is checked against the shipped
archetypes (an unknown one stores nothing), the archetype's persona is saved as the user's next
version, then the choice is recorded for the offline judge (`agent.starting`). `starting_view`
is what the front doors list: the archetypes, the user's choice, whether a start is still
offered (fewer pairs than the first synthesis needs), and the quiz's questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.starting import archetype_persona, find_archetype, is_archetype_persona, load_quiz

if TYPE_CHECKING:
    from agent.archetypes import Archetype
    from agent.records import Persona
    from memory.starts import StartChoice
    from memory.store import PreferenceStore


def shipped_archetypes() -> tuple[Archetype, ...]:
    """Return the archetypes shipped with the offline reward model's prior."""
    from agent.archetypes import load_archetypes

    return load_archetypes()


def start_from_archetype(
    store: PreferenceStore, user_id: str, key: str, archetypes: Sequence[Archetype] | None = None
) -> tuple[Persona, StartChoice]:
    """Give the user the archetype's persona at once and start their offline model from it.

    Raises `InvalidPreference` naming the known keys for an unknown one; nothing is stored then.
    """
    archetype = find_archetype(key, shipped_archetypes() if archetypes is None else archetypes)
    store.starting_choice(user_id)  # a bad user id fails here, before anything is written
    persona = store.save_persona(archetype_persona(user_id, archetype))
    return persona, store.record_start(user_id, archetype.key, persona.created_at)


def start_offered(store: PreferenceStore, user_id: str, first_synthesis_at: int) -> bool:
    """True while the user has no persona learnt from pairs and fewer pairs than the first synthesis needs."""
    counts = store.pair_counts(user_id)
    learnt = counts.persona is not None and not is_archetype_persona(counts.persona)
    return not learnt and counts.total < first_synthesis_at


def starting_view(
    store: PreferenceStore,
    user_id: str,
    first_synthesis_at: int,
    archetypes: Sequence[Archetype] | None = None,
) -> dict[str, Any]:
    """Return the archetypes, the user's choice, whether a start is offered, and the quiz, as JSON."""
    choice = store.starting_choice(user_id)
    return {
        "user_id": user_id,
        "offered": start_offered(store, user_id, first_synthesis_at),
        "chosen": choice.to_json() if choice else None,
        "archetypes": [
            {"key": item.key, "title": item.title, "statements": list(item.statements), "users": item.users}
            for item in (shipped_archetypes() if archetypes is None else archetypes)
        ],
        "quiz": [
            {"key": q.key, "taste": q.taste, "question": q.question, "replies": list(q.replies)}
            for q in load_quiz()
        ],
    }
