"""The chat graph over fakes: a responder with a known taste, and `make_graph` to compile it.

`chat_responder` drafts one reply per style hint (the question quoted in it), judges with a
taste (warm replies first, then shorter ones) and induces `PERSONA_TEXT`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent.drafting import STYLE_HINTS
from graphs.chat import ChatOptions, build_graph
from memory.store import PreferenceStore
from tests.fakes.models import CountingChatModel, persona_message, replies_of, task_of, verdict_message

PERSONA_TEXT = "Likes warm, friendly replies.\nDislikes dry lists."
STYLE_REPLIES = {
    STYLE_HINTS[0]: "Water them before you go.",
    STYLE_HINTS[1]: "A thorough plan: first water deeply, then group the plants, then use wicks.",
    STYLE_HINTS[2]: "What a lovely question! Give them a good soak and they will be fine.",
    STYLE_HINTS[3]: "Steps: soak, group, shade.",
}
WARM = 2  # index of the warm candidate, the one the fake judge prefers


def judge_score(reply: str) -> tuple[int, int]:
    """The fake judge's taste: warm replies first, then shorter ones."""
    return ("lovely" in reply, -len(reply))


def chat_responder(
    persona_text: str = PERSONA_TEXT, score: Callable[[str], Any] = judge_score
) -> Callable[[list[BaseMessage]], AIMessage]:
    """Draft by style hint (with the question quoted), judge by `score`, induce `persona_text`."""

    def respond(messages: list[BaseMessage]) -> AIMessage:
        task = task_of(messages)
        if task == "induce":
            return persona_message(persona_text)
        if task == "judge":
            first, second = replies_of(messages)
            return verdict_message("First" if score(first) >= score(second) else "Second", "warmer")
        system, question = messages[0].text, messages[-1].text
        for hint, text in STYLE_REPLIES.items():
            if hint in system:
                return AIMessage(f"{text} ({question[:30]})")
        return AIMessage(f"A plain reply. ({question[:30]})")

    return respond


FAST = ChatOptions(attempts=2, retry_interval_s=0.01)


def make_graph(
    memory: PreferenceStore,
    model: CountingChatModel | None = None,
    *,
    judge_model: CountingChatModel | None = None,
    checkpointer: Any = None,
    **options: Any,
) -> tuple[Any, CountingChatModel]:
    """Compile the chat graph over fakes; return it and the (drafting) model."""
    model = model or CountingChatModel(responder=chat_responder())
    graph = build_graph(
        chat_model=model,
        judge_model=judge_model or model,
        memory=memory,
        checkpointer=checkpointer if checkpointer is not None else InMemorySaver(),
        options=ChatOptions(**{**FAST.__dict__, **options}),
    )
    return graph, model
