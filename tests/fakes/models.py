"""Scripted fake chat models (no network, no model weights).

All fakes override `bind_tools` to return the model itself, so langchain-core's default
`with_structured_output` (tool calling) works: a fake answers with an `AIMessage` whose
`tool_calls` hold the structured answer. Build answers with `verdict_message` and
`persona_message`; read the prompt with `task_of`, `replies_of` and `persona_of`.

- `ScriptedChatModel`: answers from a fixed sequence (langchain-core's `GenericFakeChatModel`).
- `CountingChatModel`: answers with a responder function of the prompt and records every call
  with its prompt/completion token estimates (the recording comes from the cost benchmark's
  `RecordingChatModel`).
- `PositionBiasedChatModel`: always names the same position (First by default).
- `MalformedChatModel`: returns unusable structured output for its first N calls, then delegates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from persona_agent.benchmarks import scripted_model
from persona_agent.benchmarks.scripted_model import (
    RecordedCall,
    RecordingChatModel,
    Task,
    persona_message,
    prompt_section,
    replies_of,
    task_of,
    tool_call_message,
)

Responder = Callable[[list[BaseMessage]], AIMessage]


def choice_logprobs(prob_first: float, reasoning: str = "r") -> dict[str, Any]:
    """Return OpenAI-shaped token log-probabilities of a JSON verdict whose choice token has P(First)."""
    prob_first = min(max(prob_first, 1e-6), 1 - 1e-6)
    first, second = math.log(prob_first), math.log(1 - prob_first)
    picked = ("First", first) if prob_first >= 0.5 else ("Second", second)
    head = ['{"', "reasoning", '":', ' "', reasoning, '",', ' "', "choice", '":', ' "']
    tokens = [{"token": t, "logprob": -0.01, "top_logprobs": []} for t in head]
    tokens.append(
        {
            "token": picked[0],
            "logprob": picked[1],
            "top_logprobs": [{"token": "First", "logprob": first}, {"token": "Second", "logprob": second}],
        }
    )
    tokens += [{"token": '"}', "logprob": -0.01, "top_logprobs": []}]
    return {"content": tokens}


def verdict_message(
    choice: Literal["First", "Second"], reasoning: str = "fits the user", *, prob_first: float | None = None
) -> AIMessage:
    """Return a judge answer naming `choice`, with token log-probabilities when `prob_first` is given."""
    message = scripted_model.verdict_message(choice, reasoning)
    if prob_first is None:
        return message
    logprobs = choice_logprobs(prob_first, reasoning)
    return message.model_copy(update={"response_metadata": {"logprobs": logprobs}})


def persona_of(messages: Sequence[BaseMessage]) -> str | None:
    """Return the persona section of a judge prompt, if any."""
    return prompt_section(messages, "persona")


def demo_count(messages: Sequence[BaseMessage]) -> int:
    """Return how many demos a judge prompt shows."""
    return len(re.findall(r'<example n="\d+">', messages[-1].text))


def default_responder(persona_text: str = "Prefers short, direct replies.") -> Responder:
    """Answer judge prompts with the shorter reply and induction prompts with `persona_text`."""

    def respond(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message(persona_text)
        first, second = replies_of(messages)
        return verdict_message("First" if len(first) <= len(second) else "Second", "shorter is better")

    return respond


class ScriptedChatModel(GenericFakeChatModel):
    """`GenericFakeChatModel` that answers from a sequence and supports structured output."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        """Return self: the scripted messages already carry the tool calls."""
        return self


class CountingChatModel(RecordingChatModel):
    """A fake answering with `responder(messages)` that records every call and its token estimates."""

    responder: Responder
    report_usage: bool = Field(False, description="Attach usage_metadata with the estimates.")

    @property
    def _llm_type(self) -> str:
        return "counting-fake"

    def answer(self, messages: list[BaseMessage]) -> AIMessage:
        """Produce the answer to `messages`; subclasses change this."""
        return self.responder(messages)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        if not self.report_usage:
            return result
        call = self.calls[-1]
        usage = {
            "input_tokens": call.prompt_tokens,
            "output_tokens": call.completion_tokens,
            "total_tokens": call.prompt_tokens + call.completion_tokens,
        }
        answer = result.generations[0].message.model_copy(update={"usage_metadata": usage})
        call.answer = answer
        return ChatResult(generations=[ChatGeneration(message=answer)])

    def calls_of(self, task: Task) -> list[RecordedCall]:
        """Return the recorded calls of one prompt kind."""
        return [call for call in self.calls if call.task == task]

    @property
    def prompt_tokens(self) -> int:
        """Sum of prompt-token estimates over all calls."""
        return sum(call.prompt_tokens for call in self.calls)

    @property
    def completion_tokens(self) -> int:
        """Sum of completion-token estimates over all calls."""
        return sum(call.completion_tokens for call in self.calls)


class PositionBiasedChatModel(CountingChatModel):
    """A judge that always names the same position, optionally with token probabilities."""

    position: Literal["First", "Second"] = "First"
    prob_first: float | None = Field(None, description="P(First) to report in log-probabilities.")
    responder: Responder = Field(default=lambda messages: AIMessage(""))

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
