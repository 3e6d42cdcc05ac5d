"""State and run context of the graphs, kept JSON-plain so any checkpointer stores them as is.

Records of `agent.records` travel through the state as their JSON dumps (``model_dump(mode="json")``)
and are validated again where a node needs the record. With only plain values and LangChain
messages in the state, checkpoints need no serializer registration (no "Deserializing
unregistered type" warning) and the LangGraph server can show them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage
from langgraph.channels import EphemeralValue
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from agent.conversation import as_turns
from agent.errors import InvalidPreference
from agent.records import STORED_LIMITS, Demo, Persona, PreferencePair, Ranking, Turn

# inline and deferred run the synthesis inside the chat run; "caller" leaves it to the caller.
InRunSynthesisMode = Literal["inline", "deferred"]
SynthesisMode = Literal[InRunSynthesisMode, "caller"]
SynthesisStatus = Literal["accepted", "rejected", "failed", "skipped"]


# --- run context ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatContext:
    """Run inputs of the chat graph; on a server `user_id` comes from the authenticated identity."""

    user_id: str = ""  # required; a default only so that a missing one fails with a clear message
    candidates: int | None = None
    synthesis_mode: SynthesisMode | None = None


@dataclass(frozen=True)
class SynthesisContext:
    """Run inputs of the synthesis graph."""

    user_id: str = ""  # required, as in ChatContext


# --- state pieces -----------------------------------------------------------------------------
class TurnDict(TypedDict):
    """One conversation turn as plain data."""

    role: Literal["system", "user", "assistant"]
    content: str


class QuizAnswer(TypedDict):
    """A pick in the starting quiz: the question's key and the 0-based index of the reply picked."""

    question: str
    choice: int


class Feedback(TypedDict, total=False):
    """The user's verdict on the previous turn; exactly one kind per input.

    ``choice`` is the 0-based index of the preferred reply in the state's ``candidates``; the
    chosen reply is paired against every other candidate. ``chosen`` and ``rejected`` give one
    pair directly; its context is ``context`` when given, else the previous turn's context.
    ``regenerate`` (true) asks for another reply to the same message; ``edited`` is the user's
    rewrite of the previous reply (see `graphs.feedback`).
    ``quiz`` (alone) answers one starting-quiz question (`agent.starting`): its pair is built from
    the quiz, marked as a quiz answer.
    """

    choice: int
    chosen: str
    rejected: str
    context: list[TurnDict]
    regenerate: bool
    edited: str
    quiz: QuizAnswer


class RedoneView(TypedDict):
    """Replies the user asked to have redone for the last turn, awaiting their next message."""

    context: list[TurnDict]
    replies: list[str]


class RankedView(TypedDict):
    """One ranked candidate: its index in ``candidates``, score, wins and the judge's reasons."""

    index: int
    content: str
    score: float
    wins: int
    reasons: list[str]


class PersonaView(TypedDict):
    """The persona a turn was judged with."""

    version: int
    text: str
    created_at: str
    val_accuracy: float | None


class SynthesisOutcome(TypedDict):
    """What one synthesis run did."""

    status: SynthesisStatus
    persona_version: int | None
    val_accuracy: float | None
    baseline_val_accuracy: float | None
    train_pairs: int
    val_pairs: int
    llm_calls: int
    detail: str
    finished_at: str


class ChatState(TypedDict, total=False):
    """The chat graph's state: the conversation plus everything the last turn decided.

    Inputs are ``messages`` (a new user message) and/or ``feedback`` (about the previous turn).
    ``feedback`` is ephemeral: it is read by the first node of the run it came with and never
    lingers, so a rejected feedback cannot break the thread's next run.
    """

    messages: Annotated[list[AnyMessage], add_messages]
    owner: str
    feedback: Annotated[Feedback | None, EphemeralValue]
    candidates: list[str]
    turn_context: list[TurnDict]
    ranking: list[RankedView]
    judge: str
    judge_fallback: str | None
    reply_fallback: str | None
    persona: PersonaView | None
    demos: list[dict[str, Any]]
    pairs_added: list[str]
    pair_count: int
    synthesis_due: SynthesisMode | None
    synthesis: SynthesisOutcome | None
    synthesis_retry_after: int | None
    redone: RedoneView | None


class SynthesisState(TypedDict, total=False):
    """The synthesis graph's state: the split pairs (as JSON), the fit result, the outcome, the lease."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    result: dict[str, Any] | None
    outcome: SynthesisOutcome | None
    lease: dict[str, Any] | None  # the user's synthesis lease while this run holds it (`Lease.as_dict`)


# --- conversions between records and state values ---------------------------------------------
def turns_of(messages: Sequence[BaseMessage]) -> tuple[Turn, ...]:
    """Return the user-visible turns of a conversation (`agent.conversation.as_turns`)."""
    return as_turns(messages)


def turn_dicts(turns: Sequence[Turn]) -> list[TurnDict]:
    """Dump turns to plain data."""
    return [TurnDict(role=turn.role, content=turn.content) for turn in turns]


def turns_from(dicts: Sequence[Mapping[str, Any]]) -> tuple[Turn, ...]:
    """Validate plain turns back into records."""
    return tuple(Turn.model_validate(item) for item in dicts)


def pair_to_state(pair: PreferencePair) -> dict[str, Any]:
    """Dump a pair for the state."""
    return pair.model_dump(mode="json")


def pair_from_state(data: Mapping[str, Any]) -> PreferencePair:
    """Validate a pair from the state (as stored, without re-applying lowered limits)."""
    return PreferencePair.model_validate(data, context={"limits": STORED_LIMITS})


def demo_from_state(data: Mapping[str, Any]) -> Demo:
    """Validate a demo from the state."""
    return Demo.model_validate(data, context={"limits": STORED_LIMITS})


def persona_view(persona: Persona | None) -> PersonaView | None:
    """Summarize a persona for the state."""
    if persona is None:
        return None
    return PersonaView(
        version=persona.version,
        text=persona.text,
        created_at=persona.created_at.isoformat(),
        val_accuracy=persona.val_accuracy,
    )


def ranking_view(ranking: Ranking) -> list[RankedView]:
    """Dump a ranking, best first."""
    return [
        RankedView(
            index=item.index,
            content=item.content,
            score=item.score,
            wins=item.wins,
            reasons=list(item.reasons),
        )
        for item in ranking.candidates
    ]


def awaits_reply(state: ChatState) -> bool:
    """True when the conversation ends with a user message: this run answers it."""
    messages = state.get("messages") or []
    return bool(messages) and isinstance(messages[-1], HumanMessage)


def user_of(runtime: Runtime[Any]) -> str:
    """Return the run's user id from its context (a context object or a plain dict)."""
    context = runtime.context
    user_id = context.get("user_id") if isinstance(context, Mapping) else getattr(context, "user_id", None)
    if not isinstance(user_id, str) or not user_id:
        raise InvalidPreference("context.user_id: required (pass context={'user_id': ...} to the run)")
    return user_id
