"""The instant scripted chat model that the cost and latency benchmarks run on.

`ScriptedPreferenceModel` judges, induces personas and drafts without any weights: a judge prompt
about a pair it was told about names the user's real choice with probability `p_correct` (drawn
from a hash of the seed and the prompt, so the answer does not depend on call order), an
induction prompt gets a fixed persona, and a drafting prompt gets a reply from a pool of texts.
It answers structured-output prompts with an `AIMessage` carrying a tool call (its `bind_tools`
returns the model itself, so langchain-core's default `with_structured_output` works) and
records every call (`RecordingChatModel`), so the cost benchmark can check its usage count
against the calls the model really saw.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from agent import prompts
from agent.records import PreferencePair
from agent.sections import escape_section_text

Task = Literal["judge", "induce", "other"]

_call_ids = iter(range(10**9))
_KEY_CHARS = 200


def tool_call_message(name: str, args: dict[str, Any]) -> AIMessage:
    """Return an AIMessage carrying one tool call, as tool-calling structured output does."""
    return AIMessage(
        content="",
        tool_calls=[{"name": name, "args": args, "id": f"call_{next(_call_ids)}", "type": "tool_call"}],
    )


def verdict_message(choice: Literal["First", "Second"], reasoning: str = "fits the user") -> AIMessage:
    """Return a judge answer naming `choice`."""
    return tool_call_message("JudgeAnswer", {"reasoning": reasoning, "choice": choice})


def persona_message(text: str) -> AIMessage:
    """Return a persona-induction answer."""
    return tool_call_message("InducedPersona", {"persona": text})


def task_of(messages: Sequence[BaseMessage]) -> Task:
    """Say which prompt of `agent.prompts` these messages are."""
    system = next((m.text for m in messages if isinstance(m, SystemMessage)), "")
    if system == prompts.JUDGE_SYSTEM:
        return "judge"
    if system == prompts.INDUCE_SYSTEM:
        return "induce"
    return "other"


def prompt_section(messages: Sequence[BaseMessage], name: str) -> str | None:
    """Return the last ``<name>`` section of the prompt's final message, if any."""
    text = messages[-1].text
    found = re.findall(rf"<{name}>\n(.*?)\n</{name}>", text, flags=re.DOTALL)
    return found[-1] if found else None


def replies_of(messages: Sequence[BaseMessage]) -> tuple[str, str]:
    """Return the (first, second) replies of a judge prompt, as rendered (escaped)."""
    return prompt_section(messages, "first_reply") or "", prompt_section(messages, "second_reply") or ""


@dataclass
class RecordedCall:
    """One call a recording model answered, with token estimates (``count_tokens_approximately``)."""

    task: Task
    messages: list[BaseMessage]
    answer: AIMessage
    prompt_tokens: int
    completion_tokens: int


class RecordingChatModel(BaseChatModel):
    """An instant chat model answering with `answer(messages)` that records every call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    calls: list[RecordedCall] = Field(default_factory=list)
    keep_messages: bool = Field(True, description="Keep each call's messages (off for long runs).")

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RecordingChatModel:
        """Return self so `with_structured_output` works."""
        return self

    def answer(self, messages: list[BaseMessage]) -> AIMessage:
        """Produce the answer to `messages`; subclasses say how."""
        raise NotImplementedError

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer = self.answer(messages)
        kept = messages if self.keep_messages else []
        self.calls.append(
            RecordedCall(
                task_of(messages),
                kept,
                answer,
                count_tokens_approximately(messages),
                count_tokens_approximately([answer]),
            )
        )
        return ChatResult(generations=[ChatGeneration(message=answer)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop=stop)


def _reply_key(text: str) -> str:
    """Key a reply by the start of its rendered form, as it appears inside a judge prompt."""
    return escape_section_text(text)[:_KEY_CHARS]


def _unit(seed: int, text: str) -> float:
    """Return a uniform number in [0, 1) drawn from `seed` and `text`."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


DEFAULT_REASONING = (
    "This user asked a direct question and tends to favour the reply that answers it with the "
    "substance they need, without padding; the other reply is weaker on that count."
)
DEFAULT_PERSONA = (
    "Values replies that answer the question directly.\n"
    "Prefers concrete facts and examples over general advice.\n"
    "Dislikes padding and repetition.\n"
    "Appreciates a clear structure in longer answers."
)


class ScriptedPreferenceModel(RecordingChatModel):
    """An instant judge that names the user's real choice with probability `p_correct`.

    Judge prompts about a known pair (see `known_pairs`) are answered right when a number drawn
    from the seed and the whole prompt is below `p_correct`; unknown pairs get a coin flip.
    Induction prompts get `persona_text`; any other prompt (drafting) gets a reply from
    `draft_pool` picked by the prompt.
    """

    p_correct: float = Field(0.7, ge=0.0, le=1.0)
    seed: int = 0
    persona_text: str = DEFAULT_PERSONA
    reasoning_text: str = DEFAULT_REASONING
    draft_pool: tuple[str, ...] = ("A short reply.",)
    _choices: dict[tuple[str, str], Literal["First", "Second"]] = PrivateAttr(default_factory=dict)

    def known_pairs(self, pairs: Iterable[PreferencePair]) -> ScriptedPreferenceModel:
        """Remember which reply of each pair the user chose (in both orders); return self."""
        for pair in pairs:
            chosen, rejected = _reply_key(pair.chosen), _reply_key(pair.rejected)
            self._choices[(chosen, rejected)] = "First"
            self._choices.setdefault((rejected, chosen), "Second")
        return self

    def answer(self, messages: list[BaseMessage]) -> AIMessage:
        """Judge, induce or draft, deterministically from the prompt."""
        task = task_of(messages)
        if task == "induce":
            return persona_message(self.persona_text)
        prompt = "\x00".join(message.text for message in messages)
        if task == "judge":
            first, second = replies_of(messages)
            right = self._choices.get((first[:_KEY_CHARS], second[:_KEY_CHARS]))
            draw = _unit(self.seed, prompt)
            if right is None:
                choice: Literal["First", "Second"] = "First" if draw < 0.5 else "Second"
            elif draw < self.p_correct:
                choice = right
            else:
                choice = "Second" if right == "First" else "First"
            return verdict_message(choice, self.reasoning_text)
        pool = self.draft_pool or ("A short reply.",)
        return AIMessage(pool[int(_unit(self.seed, prompt) * len(pool))])
