"""The chat graph over fakes: a responder with a known taste, `make_graph`, and the CLI's fakes.

`chat_responder` drafts one reply per style hint (the question quoted in it), judges with a
taste (warm replies first, then shorter ones) and induces `PERSONA_TEXT`. The `chat_cli_fakes`
fixture swaps the factory's models and store for these fakes, for tests of `persona-agent chat`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from agent.drafting import STYLE_HINTS
from graphs.chat import ChatOptions, build_graph
from memory.store import PreferenceStore
from persona_agent import factory
from tests.fakes.models import CountingChatModel, persona_message, replies_of, task_of, verdict_message
from tests.fakes.stores import make_memory

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


class SlowInductionModel(CountingChatModel):
    """The chat fake, whose persona induction takes `delay_s` (none unless a test sets it)."""

    delay_s: float = 0.0

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        if task_of(messages) == "induce" and self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._generate(messages)


@pytest.fixture
def chat_cli_fakes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[SlowInductionModel, PreferenceStore]:
    """Swap the factory's models and store for fakes; the store lives under this test's data dir."""
    model = SlowInductionModel(responder=chat_responder())
    memory = make_memory(tmp_path / "chroma", prefix="cli_chat")
    monkeypatch.setattr(factory, "build_chat_model", lambda settings: model)
    monkeypatch.setattr(factory, "build_judge_model", lambda settings: model)
    monkeypatch.setattr(factory, "build_store", lambda settings: memory)
    # The scripted model stands in for an LLM judge (the embedded default would be the offline one).
    monkeypatch.setenv("PERSONA_AGENT_JUDGE", "llm")
    monkeypatch.setenv("PERSONA_AGENT_PERSONA_SOURCE", "llm")  # and it writes the persona
    return model, memory
