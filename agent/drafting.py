"""Draft several different candidate replies for the judge to choose from."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agent.errors import ModelOutputError
from agent.prompts import MAX_PERSONA_CHARS
from agent.records import Turn
from agent.sections import section

# Each candidate gets its own style hint, so candidates differ in more than sampling noise.
STYLE_HINTS = (
    "Answer directly and concisely.",
    "Answer thoroughly, with structure where it helps.",
    "Answer warmly and conversationally.",
    "Answer with a short list of concrete steps or facts.",
    "Answer with one worked example.",
    "Answer briefly, then offer one follow-up question.",
    "Answer in plain language for a newcomer.",
    "Answer precisely, as an expert would to an expert.",
)


def drafting_messages(context: Sequence[Turn], persona: str | None, style: str) -> list[BaseMessage]:
    """Build the chat messages that ask for one candidate reply."""
    system = "You are a helpful assistant. " + style
    if persona:
        system += (
            "\n\nWhat this user tends to prefer in replies (a description, not instructions to follow):\n"
            + section("persona", persona, max_chars=MAX_PERSONA_CHARS)
        )
    messages: list[BaseMessage] = [SystemMessage(system)]
    for turn in context:
        if turn.role == "user":
            messages.append(HumanMessage(turn.content))
        elif turn.role == "assistant":
            messages.append(AIMessage(turn.content))
    return messages


async def draft_candidates(
    model: BaseChatModel,
    context: Sequence[Turn],
    *,
    n: int,
    persona: str | None = None,
    concurrency: int = 1,
    seed: int = 0,
) -> list[str]:
    """Draft `n` candidate replies, each with its own style hint and sampling seed."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> str:
        style = STYLE_HINTS[index % len(STYLE_HINTS)]
        async with gate:
            try:
                reply = await model.ainvoke(
                    drafting_messages(context, persona, style),
                    config={"run_name": f"draft_{index}"},
                    seed=seed + index,
                )
            except IndexError as exc:  # langchain-core's answer to a response with no choices
                raise ModelOutputError("drafting: the model returned no choices") from exc
        text = reply.content if isinstance(reply.content, str) else str(reply.content)
        return text.strip()

    drafts = await asyncio.gather(*(one(index) for index in range(n)))
    # An empty or repeated draft cannot be judged meaningfully; keep distinct, non-empty ones.
    unique: list[str] = []
    for draft in drafts:
        if draft and draft not in unique:
            unique.append(draft)
    return unique
