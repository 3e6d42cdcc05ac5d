"""Scripted fake chat models shared by the tests (no network, no model weights).

All fakes override `bind_tools` to return the model itself, so langchain-core's default
`with_structured_output` (tool calling) works: a fake answers with an `AIMessage` whose
`tool_calls` hold the structured answer. Build answers with `verdict_message` and
`persona_message`; read the prompt with `task_of`, `replies_of` and `persona_of`.

- `ScriptedChatModel`: answers from a fixed sequence (langchain-core's `GenericFakeChatModel`).
- `CountingChatModel` (from `persona_agent.benchmarks.fake_models`, which the cost benchmark
  also uses): answers with a responder function of the prompt and records every call with its
  prompt/completion token estimates (`count_tokens_approximately`).
- `PositionBiasedChatModel`: always names the same position (First by default).
- `MalformedChatModel`: returns unusable structured output for its first N calls, then delegates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import Field

from persona_agent.benchmarks.fake_models import (
    CountingChatModel,
    RecordedCall,
    Task,
    choice_logprobs,
    persona_message,
    persona_of,
    replies_of,
    task_of,
    tool_call_message,
    verdict_message,
)

__all__ = [
    "CountingChatModel",
    "MalformedChatModel",
    "PositionBiasedChatModel",
    "RecordedCall",
    "ScriptedChatModel",
    "Task",
    "choice_logprobs",
    "default_responder",
    "demo_count",
    "persona_message",
    "persona_of",
    "replies_of",
    "task_of",
    "tool_call_message",
    "verdict_message",
]

Responder = Callable[[list[BaseMessage]], AIMessage]


def demo_count(messages: Sequence[BaseMessage]) -> int:
    """Return how many demos a judge prompt shows."""
    return len(re.findall(r'<example n="\d+">', messages[-1].text))


class ScriptedChatModel(GenericFakeChatModel):
    """`GenericFakeChatModel` that answers from a sequence and supports structured output."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        """Return self: the scripted messages already carry the tool calls."""
        return self


def default_responder(persona_text: str = "Prefers short, direct replies.") -> Responder:
    """Answer judge prompts with the shorter reply and induction prompts with `persona_text`."""

    def respond(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message(persona_text)
        first, second = replies_of(messages)
        return verdict_message("First" if len(first) <= len(second) else "Second", "shorter is better")

    return respond


class PositionBiasedChatModel(CountingChatModel):
    """A judge that always names the same position, optionally with token probabilities."""

    position: Literal["First", "Second"] = "First"
    prob_first: float | None = Field(None, description="P(First) to report in log-probabilities.")
    responder: Callable[[list[BaseMessage]], AIMessage] = Field(default=lambda messages: AIMessage(""))

    def answer(self, messages: list[BaseMessage]) -> AIMessage:
        """Name the fixed position whatever the replies say."""
        if task_of(messages) == "induce":
            return persona_message("Has no visible preferences.")
        return verdict_message(self.position, "position bias", prob_first=self.prob_first)


class MalformedChatModel(CountingChatModel):
    """Return unusable structured output for the first `bad_calls` calls, then ask `responder`."""

    bad_calls: int = 1
    kind: Literal["invalid_choice", "no_tool_call", "no_choices"] = "invalid_choice"
    tasks: tuple[Task, ...] = ("judge", "induce")

    def answer(self, messages: list[BaseMessage]) -> AIMessage:
        """Answer badly while bad calls remain for this prompt kind."""
        if self.bad_calls > 0 and task_of(messages) in self.tasks:
            self.bad_calls -= 1
            if self.kind == "no_tool_call":
                return AIMessage(content="I think the first one is nicer.")
            if self.kind == "no_choices":  # how langchain-openai fails on a response without choices
                raise IndexError("list index out of range")
            if task_of(messages) == "induce":
                return tool_call_message("InducedPersona", {"persona": ""})
            return tool_call_message("JudgeAnswer", {"reasoning": "hmm", "choice": "Maybe"})
        return self.responder(messages)
