"""Persona synthesis over fakes: a judge with a known taste and pairs it can tell apart.

- `taste_responder`: judges right (shorter wins) unless the prompt carries the `BAD` persona.
- `liked_pairs`: pairs whose chosen reply says 'liked', and `pick`, a verdict by that word.
- `store_pairs` and `synthesis_graph`: a user's pairs in a store, and the synthesis graph over it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from agent.records import PreferencePair, Turn
from agent.synthesis import SynthesizeMe
from graphs.synthesis import build_graph
from memory.store import PreferenceStore
from tests.fakes.models import (
    CountingChatModel,
    persona_message,
    persona_of,
    replies_of,
    task_of,
    verdict_message,
)
from tests.fakes.stores import T0, make_pair

GOOD = "Prefers short, direct replies."
BAD = "Prefers long, rambling replies."


def taste_responder(induced: str) -> Callable[[list[BaseMessage]], AIMessage]:
    """Judge right (shorter wins) unless the prompt carries the BAD persona; induce `induced`."""

    def respond(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message(induced)
        first, second = replies_of(messages)
        shorter_first = len(first) <= len(second)
        wrong = persona_of(messages) == BAD
        return verdict_message("First" if shorter_first != wrong else "Second", "length")

    return respond


def store_pairs(memory: PreferenceStore, user: str, count: int) -> list[str]:
    pairs = [
        make_pair(
            user,
            f"{user} question {n} about soup",
            chosen=f"Short {n}.",
            rejected=f"A long reply {n} " * 5,
            minutes=n,
        )
        for n in range(count)
    ]
    return memory.add_pairs(user, pairs)


def synthesis_graph(memory: PreferenceStore, model: CountingChatModel, **options: Any) -> Any:
    return build_graph(
        synthesizer=SynthesizeMe(model, max_pairs=options.pop("max_pairs", 40)), memory=memory, **options
    )


def liked_pairs(
    count: int, *, user: str = "u1", offset: int = 0, shorter_chosen_every: int = 2
) -> list[PreferencePair]:
    """Pairs whose chosen reply says 'liked'; every `shorter_chosen_every`-th one is also shorter."""
    pairs = []
    for n in range(offset, offset + count):
        chosen_short = n % shorter_chosen_every == 0
        liked = f"liked answer {n}" if chosen_short else f"liked answer {n} with many extra words added"
        other = f"other reply {n} padded out with words" if chosen_short else f"other {n}"
        pairs.append(
            PreferencePair(
                user_id=user,
                context=(Turn(role="user", content=f"question {n}"),),
                chosen=liked,
                rejected=other,
                created_at=T0 + timedelta(minutes=n),
            )
        )
    return pairs


def pick(messages: list[BaseMessage], *, liked: bool, reasoning: str = "because") -> AIMessage:
    """Answer a judge prompt with the reply that does (or does not) say 'liked'."""
    first, _ = replies_of(messages)
    first_liked = "liked" in first
    return verdict_message("First" if first_liked == liked else "Second", reasoning)
