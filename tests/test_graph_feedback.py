"""Implicit pairs through the chat graph: regenerate then continue, edit, and refused feedback."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage

from agent.errors import InvalidPreference
from agent.records import Turn
from tests.fakes import WARM, make_graph, make_memory

QUESTION = "How do I keep my plants alive?"


def run_config(thread: str = "t1") -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


async def say(graph: Any, user: str, text: str, thread: str = "t1") -> dict[str, Any]:
    """Send one user message; return the thread's state values."""
    await graph.ainvoke({"messages": [HumanMessage(text)]}, run_config(thread), context={"user_id": user})
    return (await graph.aget_state(run_config(thread))).values


async def give(graph: Any, user: str, feedback: dict[str, Any], thread: str = "t1") -> dict[str, Any]:
    """Send feedback only; return the thread's state values."""
    await graph.ainvoke({"feedback": feedback}, run_config(thread), context={"user_id": user})
    return (await graph.aget_state(run_config(thread))).values


def shown_replies(state: dict[str, Any]) -> list[str]:
    return [message.text for message in state["messages"] if isinstance(message, AIMessage)]


# --- regenerate -------------------------------------------------------------------------------
async def test_a_regenerate_shows_a_new_reply_and_stores_nothing_until_the_user_continues() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    first = await say(graph, "alice", QUESTION)
    rejected = first["messages"][-1].text
    assert rejected == first["candidates"][WARM]

    redone = await give(graph, "alice", {"regenerate": True})
    kept = redone["messages"][-1].text
    # the same message answered again, through drafting and judging, with a different reply
    assert kept != rejected and QUESTION[:30] in kept
    assert shown_replies(redone) == [kept] and len(redone["messages"]) == 2
    assert redone["messages"][0].text == QUESTION
    assert rejected not in redone["candidates"] and redone["ranking"][0]["content"] == kept
    assert redone["pairs_added"] == [] and memory.count_pairs("alice") == 0

    after = await say(graph, "alice", "Thanks! And in winter?")
    (pair,) = memory.list_pairs("alice")
    assert (pair.chosen, pair.rejected, pair.source, pair.weight) == (kept, rejected, "regenerate", 0.3)
    assert pair.context == (Turn(role="user", content=QUESTION),)
    assert after["pairs_added"] == [pair.id] and after["pair_count"] == 1
    # the pair is stored once: a further message stores nothing more
    await say(graph, "alice", "One more thing")
    assert memory.count_pairs("alice") == 1 and memory.count_pairs("bob") == 0


async def test_the_newest_kept_reply_is_preferred_to_every_reply_asked_to_be_redone() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    original = (await say(graph, "alice", QUESTION))["messages"][-1].text
    second = (await give(graph, "alice", {"regenerate": True}))["messages"][-1].text
    kept = (await give(graph, "alice", {"regenerate": True}))["messages"][-1].text
    assert len({original, second, kept}) == 3
    await say(graph, "alice", "Great, thanks.")
    pairs = memory.list_pairs("alice")
    assert {pair.chosen for pair in pairs} == {kept}
    assert sorted(pair.rejected for pair in pairs) == sorted([original, second])
    assert {(pair.source, pair.weight) for pair in pairs} == {("regenerate", 0.3)}


async def test_when_every_draft_repeats_a_turned_down_reply_the_apology_is_never_paired() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)  # 3 candidates, the same 3 drafts each time
    await say(graph, "alice", QUESTION)
    await give(graph, "alice", {"regenerate": True})
    await give(graph, "alice", {"regenerate": True})
    state = await give(graph, "alice", {"regenerate": True})
    assert state["reply_fallback"] and "other than those to redo" in state["reply_fallback"]
    assert len(state["redone"]["replies"]) == 3
    await say(graph, "alice", "Never mind.")
    assert memory.count_pairs("alice") == 0


async def test_a_pick_after_a_regenerate_stores_stated_pairs_only() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    await say(graph, "alice", QUESTION)
    await give(graph, "alice", {"regenerate": True})
    picked = await give(graph, "alice", {"choice": 0})
    assert picked["redone"] is None
    await say(graph, "alice", "And next?")
    pairs = memory.list_pairs("alice")
    assert len(pairs) == 1 and {pair.source for pair in pairs} == {"explicit"}


async def test_regenerate_pairs_count_toward_the_first_synthesis() -> None:
    memory = make_memory()
    graph, model = make_graph(memory)  # the first synthesis is due at 5 pairs
    for number in range(4):
        context = [{"role": "user", "content": f"question {number} about gardens"}]
        await give(
            graph,
            "alice",
            {"chosen": f"Short {number}.", "rejected": f"Long {number}...", "context": context},
        )
    await say(graph, "alice", QUESTION)
    await give(graph, "alice", {"regenerate": True})
    assert memory.current_persona("alice") is None and not model.calls_of("induce")
    state = await say(graph, "alice", "And next?")  # the fifth pair: a regenerate one
    assert state["pair_count"] == 5 and state["synthesis"]["status"] == "accepted"
    assert len(model.calls_of("induce")) == 1 and memory.current_persona("alice") is not None


# --- edit -------------------------------------------------------------------------------------
async def test_an_edit_becomes_the_reply_and_stores_its_pair_at_once() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    original = (await say(graph, "alice", QUESTION))["messages"][-1]
    edited = "Water deeply once a week; group the pots in the shade."
    state = await give(graph, "alice", {"edited": edited})
    (pair,) = memory.list_pairs("alice")
    assert (pair.chosen, pair.rejected, pair.source, pair.weight) == (edited, original.text, "edit", 0.7)
    assert pair.context == (Turn(role="user", content=QUESTION),)
    assert state["pairs_added"] == [pair.id] and state["pair_count"] == 1
    # the edited text replaces the reply in place: the conversation continues from it
    reply = state["messages"][-1]
    assert reply.text == edited and reply.id == original.id and len(state["messages"]) == 2
    state = await say(graph, "alice", "And in winter?")
    assert state["turn_context"][1] == {"role": "assistant", "content": edited}
    assert memory.count_pairs("alice") == 1 and memory.count_pairs("bob") == 0


# --- refused feedback -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("feedback", "problem"),
    [
        ({"regenerate": True}, "feedback.regenerate: there is no previous reply to redo"),
        ({"edited": "Better text."}, "feedback.edited: there is no previous reply to edit"),
    ],
)
async def test_feedback_on_a_new_thread_is_refused(feedback: dict[str, Any], problem: str) -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    with pytest.raises(InvalidPreference, match=problem):
        await give(graph, "alice", feedback)
    assert memory.count_pairs("alice") == 0


@pytest.mark.parametrize(
    ("feedback", "problem"),
    [
        ({"edited": "  "}, r"feedback\.edited: must be the reply's new text, and not empty"),
        ({"edited": 3}, r"feedback\.edited: must be the reply's new text"),
        ({"regenerate": False}, r"feedback\.regenerate: must be true, got False"),
        ({"retry": True}, r"feedback: unknown key 'retry'"),
        ({"regenerate": True, "edited": "New text."}, r"feedback: give either"),
    ],
)
async def test_bad_feedback_names_the_problem_and_stores_nothing(
    feedback: dict[str, Any], problem: str
) -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    before = await say(graph, "alice", QUESTION)
    with pytest.raises(InvalidPreference, match=problem):
        await give(graph, "alice", feedback)
    state = (await graph.aget_state(run_config())).values
    assert state["messages"] == before["messages"] and not state.get("redone")
    await say(graph, "alice", "Next question please")  # the refused feedback does not linger
    assert memory.count_pairs("alice") == 0


async def test_an_edit_equal_to_the_reply_and_a_regenerate_with_a_message_are_refused() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    reply = (await say(graph, "alice", QUESTION))["messages"][-1].text
    with pytest.raises(InvalidPreference, match=r"feedback\.edited: is the same as the previous reply"):
        await give(graph, "alice", {"edited": reply + "  "})
    with pytest.raises(InvalidPreference, match=r"feedback\.regenerate: send it on its own"):
        await graph.ainvoke(
            {"feedback": {"regenerate": True}, "messages": [HumanMessage("And?")]},
            run_config(),
            context={"user_id": "alice"},
        )
    assert memory.count_pairs("alice") == 0


async def test_a_regenerate_streams_through_drafting_and_judging() -> None:
    graph, _ = make_graph(make_memory())
    shown = (await say(graph, "alice", QUESTION))["messages"][-1]
    nodes, updates = [], {}
    async for update in graph.astream(
        {"feedback": {"regenerate": True}}, run_config(), context={"user_id": "alice"}, stream_mode="updates"
    ):
        nodes += list(update)
        updates.update(update)
    assert nodes[:2] == ["record_feedback", "load_persona"] and nodes[-1] == "judge_replies"
    # a client sees the reply taken back first, then the new one
    (removed,) = updates["record_feedback"]["messages"]
    assert isinstance(removed, RemoveMessage) and removed.id == shown.id
    assert set(nodes[2:4]) == {"draft_replies", "retrieve_demos"}
