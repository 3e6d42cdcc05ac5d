"""Feedback on the previous turn of the chat graph: the pairs it gives and how it changes the thread.

One kind of feedback per input (`graphs.state.Feedback`); `record_feedback` applies it:

- ``choice`` (a pick among the turn's candidates), ``chosen`` + ``rejected`` (one pair) and
  ``quiz`` (an answer to the starting quiz, `agent.starting`) are stated preferences, stored at
  once with source ``explicit``. A pick becomes the turn's reply.
- ``edited``: the user rewrote the previous reply. The reply becomes their text and one pair
  (chosen = their text, rejected = the original reply, source ``edit``) is stored at once.
- ``regenerate`` (true): the user asked for another reply to the same message. The reply is
  taken back (removed from ``messages``) and remembered in ``redone``; the graph then answers the
  same message again through the usual load_persona -> draft -> judge path, dropping drafts that
  repeat a reply the user turned down. Nothing is stored yet. When the user sends their next
  message, they kept the newest reply: it is paired against every reply they asked to redo for
  that turn (source ``regenerate``). A pick or an edit of the new reply settles the turn with its
  own pairs instead, and a reply that is an apology for a failed model is never paired.

Stored pairs weigh in every fit by their source (`agent.records.SOURCE_WEIGHTS`). Feedback that
cannot apply (no previous reply, an empty edit, an unknown key, two kinds at once) raises
`InvalidPreference` naming the problem, before anything is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, RemoveMessage
from pydantic import ValidationError

from agent.errors import InvalidPreference
from agent.formats import describe_validation_error
from agent.records import Limits, MetadataValue, PairSource, PreferencePair
from agent.starting import quiz_answer
from graphs.state import ChatState, Feedback, RedoneView, awaits_reply, turns_from

logger = logging.getLogger(__name__)

# The keys each kind of feedback may carry; `context` belongs to an explicit pair.
FEEDBACK_KINDS: dict[str, frozenset[str]] = {
    "choice": frozenset({"choice"}),
    "pair": frozenset({"chosen", "rejected", "context"}),
    "regenerate": frozenset({"regenerate"}),
    "edited": frozenset({"edited"}),
    "quiz": frozenset({"quiz"}),
}
_ONE_KIND = (
    "give either 'choice', both 'chosen' and 'rejected', 'quiz', 'regenerate' or 'edited' (one per input)"
)


@dataclass(frozen=True)
class FeedbackEffect:
    """What one input's feedback does: the pairs to store and the changes to the thread's state."""

    pairs: list[PreferencePair] = field(default_factory=list)
    update: dict[str, Any] = field(default_factory=dict)
    answers_again: bool = False  # the previous reply was taken back: the same message is answered anew


def apply_feedback(state: ChatState, user_id: str, limits: Limits) -> FeedbackEffect:
    """Check this input's feedback against the thread; return the pairs it gives and the state changes."""
    feedback = state.get("feedback") or {}
    kind = feedback_kind(feedback) if feedback else None
    persona = state.get("persona")
    metadata: dict[str, MetadataValue] = {"persona_version": persona["version"] if persona else 0}
    if kind == "regenerate":
        return FeedbackEffect(update=retract_reply(feedback, state), answers_again=True)
    pairs: list[PreferencePair] = []
    update: dict[str, Any] = {}
    if kind == "edited":
        pairs, update = edit_reply(feedback, state, user_id, limits, metadata)
    elif kind == "quiz":
        pairs = [quiz_answer(feedback, user_id, limits)]
    elif kind is not None:
        pairs, picked = stated_pairs(feedback, state, user_id, limits, metadata)
        if picked is not None:
            ranking = state.get("ranking") or []
            shown = ranking[0]["content"] if ranking else None
            update = {"messages": _replace_reply(state.get("messages") or [], shown, picked), "redone": None}
    if awaits_reply(state):  # the user goes on: any reply they had asked to redo is settled now
        if kind not in ("choice", "edited"):
            pairs = pairs + kept_reply_pairs(state, user_id, limits, metadata)
        update["redone"] = None
    return FeedbackEffect(pairs=pairs, update=update)


def feedback_kind(feedback: Mapping[str, Any]) -> str:
    """Name the one kind of feedback given (see `FEEDBACK_KINDS`); refuse unknown keys and mixtures."""
    unknown = sorted(set(feedback) - set().union(*FEEDBACK_KINDS.values()))
    if unknown:
        raise InvalidPreference(f"feedback: unknown key {unknown[0][:40]!r}; {_ONE_KIND}")
    if feedback.get("quiz") is not None:  # a quiz answer names what else came with it
        return "quiz"
    given = [
        kind for kind, keys in FEEDBACK_KINDS.items() if any(feedback.get(key) is not None for key in keys)
    ]
    if len(given) != 1:
        raise InvalidPreference(f"feedback: {_ONE_KIND}")
    return given[0]


def stated_pairs(
    feedback: Feedback,
    state: ChatState,
    user_id: str,
    limits: Limits,
    metadata: Mapping[str, MetadataValue],
) -> tuple[list[PreferencePair], str | None]:
    """Turn a pick or an explicit pair into pairs; return them and the picked reply (None for a pair)."""
    if feedback.get("choice") is not None:
        candidates = state.get("candidates") or []
        choice = feedback["choice"]
        if not candidates:
            raise InvalidPreference("feedback.choice: the previous turn has no candidates to choose from")
        if not isinstance(choice, int) or not 0 <= choice < len(candidates):
            raise InvalidPreference(f"feedback.choice: must be 0-{len(candidates) - 1}, got {choice!r}")
        rivals = [reply for index, reply in enumerate(candidates) if index != choice]
        if not rivals:
            raise InvalidPreference("feedback.choice: the previous turn had only one candidate")
        ranking = state.get("ranking") or []
        agreed = bool(ranking) and ranking[0]["index"] == choice
        context = state.get("turn_context") or []
        pairs = _pairs(
            user_id,
            context,
            candidates[choice],
            rivals,
            "explicit",
            {**metadata, "judge_agreed": agreed},
            limits,
        )
        return pairs, candidates[choice]
    if not feedback.get("chosen") or not feedback.get("rejected"):
        raise InvalidPreference("feedback: an explicit pair needs both 'chosen' and 'rejected'")
    context = feedback.get("context") or state.get("turn_context") or []
    if not context:
        raise InvalidPreference("feedback.context: required when there is no previous turn")
    return _pairs(
        user_id, context, feedback["chosen"], [feedback["rejected"]], "explicit", metadata, limits
    ), None


def edit_reply(
    feedback: Feedback,
    state: ChatState,
    user_id: str,
    limits: Limits,
    metadata: Mapping[str, MetadataValue],
) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Make the user's rewrite the previous reply; return its pair (edited over original) and the update."""
    edited = feedback["edited"]
    if not isinstance(edited, str) or not edited.strip():
        raise InvalidPreference("feedback.edited: must be the reply's new text, and not empty")
    reply, context = previous_reply(state), state.get("turn_context") or []
    if reply is None or not context:
        raise InvalidPreference("feedback.edited: there is no previous reply to edit")
    if state.get("reply_fallback"):
        raise InvalidPreference("feedback.edited: the previous turn has no reply to edit (the model failed)")
    if edited.strip() == reply.text.strip():
        raise InvalidPreference("feedback.edited: is the same as the previous reply")
    pairs = _pairs(user_id, context, edited, [reply.text], "edit", metadata, limits)
    return pairs, {"messages": [AIMessage(content=edited, id=reply.id)], "redone": None}


def retract_reply(feedback: Feedback, state: ChatState) -> dict[str, Any]:
    """Take the previous reply back for a regenerate and remember it among the replies to redo."""
    if feedback["regenerate"] is not True:
        raise InvalidPreference(f"feedback.regenerate: must be true, got {feedback['regenerate']!r}")
    if awaits_reply(state):
        raise InvalidPreference("feedback.regenerate: send it on its own, without a new message")
    messages = state.get("messages") or []
    reply, context = (messages[-1] if messages else None), state.get("turn_context") or []
    if not isinstance(reply, AIMessage) or not reply.id or not context:
        raise InvalidPreference("feedback.regenerate: there is no previous reply to redo")
    redone = state.get("redone")
    replies = list(redone["replies"]) if redone and redone["context"] == context else []
    if not state.get("reply_fallback") and reply.text not in replies:  # an apology is no reply to pair
        replies.append(reply.text)
    return {
        "messages": [RemoveMessage(id=reply.id)],
        "redone": RedoneView(context=list(context), replies=replies),
    }


def kept_reply_pairs(
    state: ChatState, user_id: str, limits: Limits, metadata: Mapping[str, MetadataValue]
) -> list[PreferencePair]:
    """Pair the reply the user kept after asking to redo a turn against every reply they turned down."""
    redone, reply = state.get("redone"), previous_reply(state)
    if (
        not redone
        or reply is None
        or state.get("reply_fallback")
        or redone["context"] != state.get("turn_context")
    ):
        return []
    rivals = [text for text in redone["replies"] if text.strip() != reply.text.strip()]
    try:
        return _pairs(user_id, redone["context"], reply.text, rivals, "regenerate", metadata, limits)
    except InvalidPreference as exc:  # the user's new message must not fail over an old turn's pair
        logger.warning("regenerate pair not stored: %s", exc)
        return []


def redone_replies(state: ChatState) -> list[str]:
    """Return the replies the user asked to redo for the turn being answered (drafts must not repeat them)."""
    redone = state.get("redone")
    return list(redone["replies"]) if redone else []


def previous_reply(state: ChatState) -> AIMessage | None:
    """Return the reply shown for the previous turn: the last message before this input's new one."""
    messages = list(state.get("messages") or [])
    if awaits_reply(state):
        messages = messages[:-1]
    last = messages[-1] if messages else None
    return last if isinstance(last, AIMessage) and last.id else None


def _pairs(
    user_id: str,
    context: Sequence[Mapping[str, Any]],
    chosen: str,
    rivals: Sequence[str],
    source: PairSource,
    metadata: Mapping[str, MetadataValue],
    limits: Limits,
) -> list[PreferencePair]:
    """Validate one pair per rival of `chosen`; a bad one fails all with a message naming the field."""
    try:
        turns = turns_from(context)
        return [
            PreferencePair.model_validate(
                {
                    "user_id": user_id,
                    "context": turns,
                    "chosen": chosen,
                    "rejected": rival,
                    "source": source,
                    "metadata": dict(metadata),
                },
                context={"limits": limits},
            )
            for rival in rivals
        ]
    except ValidationError as exc:
        raise InvalidPreference(f"feedback: {describe_validation_error(exc)}") from None


def _replace_reply(messages: Sequence[AnyMessage], shown: str | None, picked: str) -> list[AnyMessage]:
    """Return the update that swaps the reply shown for the previous turn with the one picked."""
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            if message.text == shown and shown != picked and message.id:
                return [AIMessage(content=picked, id=message.id)]
            break
    return []
