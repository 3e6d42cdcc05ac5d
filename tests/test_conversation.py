"""One converter from what callers hold (messages, dicts, strings) to the turns the judge reads."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from agent.conversation import as_turns, turn_messages
from agent.records import Turn
from graphs.state import turns_of


def test_messages_keep_only_what_the_user_saw() -> None:
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("  Weather in Oslo?  "),
        AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Oslo"}, "id": "c1"}]),
        ToolMessage("4 degrees", tool_call_id="c1"),
        AIMessage("It is 4 degrees."),
        HumanMessage("   "),
    ]
    expected = (
        Turn(role="system", content="Be brief."),
        Turn(role="user", content="Weather in Oslo?"),
        Turn(role="assistant", content="It is 4 degrees."),
    )
    assert as_turns(messages) == expected
    assert turns_of(messages) == expected  # the graphs read conversations by the same rules


def test_dicts_strings_and_turns_become_turns() -> None:
    turn = Turn(role="assistant", content="Hi.")
    context = [
        {"role": "human", "content": "Hello"},
        turn,
        {"content": "no role is a user turn"},
        {"role": "tool", "content": "tool output"},
        "a plain question",
    ]
    assert as_turns(context) == (
        Turn(role="user", content="Hello"),
        turn,
        Turn(role="user", content="no role is a user turn"),
        Turn(role="user", content="a plain question"),
    )


def test_an_unknown_role_fails_naming_the_turn() -> None:
    with pytest.raises(ValueError, match="context turn 1: unknown role 'narrator'"):
        as_turns([{"role": "user", "content": "Hi"}, {"role": "narrator", "content": "Once"}])


def test_turns_go_back_to_the_messages_they_came_from() -> None:
    messages = [SystemMessage("Be brief."), HumanMessage("Hi"), AIMessage("Hello.")]
    assert [(m.type, m.text) for m in turn_messages(as_turns(messages))] == [
        (m.type, m.text) for m in messages
    ]
