"""Conversations as turns, from whatever a caller holds, and back to chat messages.

`as_turns` is the one converter from LangChain messages (a graph's state), ``{"role",
"content"}`` dicts (an API body) or plain strings (a single user question) to `Turn` records;
`turn_messages` goes the other way. Only turns a user sees survive: tool messages, an
assistant message that only calls tools, and empty messages carry none and are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agent.records import Role, Turn

_ROLES: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "system": "system",
}
# Roles that carry tool traffic, not a turn of the conversation.
_SKIPPED_ROLES = frozenset({"tool", "function"})

TurnLike = Turn | BaseMessage | Mapping[str, Any] | str


def as_turns(context: Sequence[TurnLike]) -> tuple[Turn, ...]:
    """Return the user-visible turns of `context`: turns, messages, role/content dicts or user strings.

    Message, dict and string text is stripped; an item left empty, a tool message and a tool
    role are skipped. A dict without a role is a user turn; a dict with an unknown role fails.
    """
    turns = []
    for position, item in enumerate(context):
        if isinstance(item, Turn):
            turns.append(item)
            continue
        if isinstance(item, BaseMessage):
            role, text = _ROLES.get(item.type), str(item.text)
        elif isinstance(item, Mapping):
            name = str(item.get("role", "user"))
            if name not in _ROLES and name not in _SKIPPED_ROLES:
                raise ValueError(f"context turn {position}: unknown role {name!r}")
            role, text = _ROLES.get(name), str(item.get("content") or "")
        else:
            role, text = "user", str(item)
        if role is not None and text.strip():
            turns.append(Turn(role=role, content=text.strip()))
    return tuple(turns)


def turn_messages(turns: Sequence[Turn]) -> list[BaseMessage]:
    """Return a conversation's turns as chat messages (system, user and assistant)."""
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[turn.role](turn.content) for turn in turns]
