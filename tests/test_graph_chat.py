"""The chat graph with scripted fakes: feedback, thresholds, judging, fallbacks, restarts, isolation."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

import graphs.synthesis
from agent.errors import InvalidPreference
from agent.records import Turn
from graphs.chat import ChatOptions, build_graph, synthesis_due
from tests.fakes import (
    FAST,
    PERSONA_TEXT,
    WARM,
    CountingChatModel,
    MalformedChatModel,
    chat_responder,
    demo_count,
    make_graph,
    make_memory,
    persona_of,
    task_of,
)


def run_config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


async def say(graph: Any, user: str, text: str, thread: str = "t1", **context: Any) -> dict[str, Any]:
    """Send one user message; return the thread's state values."""
    await graph.ainvoke(
        {"messages": [HumanMessage(text)]}, run_config(thread), context={"user_id": user, **context}
    )
    return (await graph.aget_state(run_config(thread))).values


async def give(graph: Any, user: str, feedback: dict[str, Any], thread: str = "t1") -> dict[str, Any]:
    """Send feedback only; return the thread's state values."""
    await graph.ainvoke({"feedback": feedback}, run_config(thread), context={"user_id": user})
    return (await graph.aget_state(run_config(thread))).values


async def streamed_nodes(graph: Any, thread: str) -> list[str]:
    """Send alice's fifth explicit pair with a new message; return the nodes in stream order."""
    nodes = []
    async for update in graph.astream(
        {"feedback": explicit("question 5 about gardens", 5), "messages": [HumanMessage("Any news?")]},
        run_config(thread),
        context={"user_id": "alice"},
        stream_mode="updates",
    ):
        nodes += list(update)
    return nodes


def explicit(question: str, number: int) -> dict[str, Any]:
    """An explicit pair for a one-turn conversation; the chosen reply is the shorter one."""
    return {
        "chosen": f"Short answer {number}.",
        "rejected": f"A much longer and rambling answer number {number} that goes on and on.",
        "context": [{"role": "user", "content": question}],
    }


# --- one turn ---------------------------------------------------------------------------------
async def test_a_turn_answers_with_the_judges_pick_and_keeps_the_evidence() -> None:
    memory = make_memory()
    graph, model = make_graph(memory)
    state = await say(graph, "alice", "How do I keep my plants alive?")
    candidates = state["candidates"]
    assert len(candidates) == 3
    assert "lovely" in candidates[WARM] and not any("lovely" in c for c in candidates[:WARM])
    reply = state["messages"][-1]
    assert isinstance(reply, AIMessage) and reply.content == candidates[WARM]
    assert state["ranking"][0]["index"] == WARM and state["ranking"][0]["content"] == candidates[WARM]
    assert all(item["reasons"] for item in state["ranking"])
    assert state["judge"] == "default" and state["persona"] is None and state["demos"] == []
    # before any persona the default judge is used: no judge prompt carries a persona
    judge_calls = model.calls_of("judge")
    assert len(judge_calls) == 6  # round robin of 3: 3 comparisons x 2 orders
    assert all(persona_of(call.messages) is None for call in judge_calls)


async def test_candidate_count_comes_from_the_run_context() -> None:
    graph, _ = make_graph(make_memory())
    state = await say(graph, "alice", "Any tips?", candidates=4)
    assert len(state["candidates"]) == 4


async def test_picking_a_candidate_stores_one_pair_per_rival_and_becomes_the_reply() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    state = await say(graph, "alice", "How do I keep my plants alive?")
    candidates = state["candidates"]
    state = await give(graph, "alice", {"choice": 1})
    pairs = memory.list_pairs("alice")
    assert len(pairs) == 2 and sorted(state["pairs_added"]) == sorted(p.id for p in pairs)
    assert {p.chosen for p in pairs} == {candidates[1]}
    assert {p.rejected for p in pairs} == {candidates[0], candidates[2]}
    assert all(
        p.source == "explicit" and p.context == (Turn(role="user", content="How do I keep my plants alive?"),)
        for p in pairs
    )
    assert all(p.metadata["judge_agreed"] is False for p in pairs)
    # the conversation now continues from the reply the user preferred
    assert state["messages"][-1].content == candidates[1] and len(state["messages"]) == 2
    assert memory.count_pairs("bob") == 0


async def test_an_explicit_pair_is_stored_with_the_previous_turns_context() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    await say(graph, "alice", "Tell me about tea.")
    await give(graph, "alice", {"chosen": "Green tea is mild.", "rejected": "Tea."})
    (pair,) = memory.list_pairs("alice")
    assert pair.chosen == "Green tea is mild." and pair.query == "Tell me about tea."


async def test_bad_feedback_is_refused_and_does_not_linger() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    await say(graph, "alice", "Hello there")
    with pytest.raises(InvalidPreference, match="choice"):
        await give(graph, "alice", {"choice": 7})
    with pytest.raises(InvalidPreference, match="either"):
        await give(graph, "alice", {"choice": 0, "chosen": "x", "rejected": "y"})
    state = await say(graph, "alice", "Next question please")  # the refused feedback is gone
    assert state["pairs_added"] == [] and memory.count_pairs("alice") == 0


# --- synthesis triggers -----------------------------------------------------------------------
def test_synthesis_due_rule() -> None:
    options = ChatOptions(first_synthesis_at=5, resynthesize_every=3)
    due = lambda **kw: synthesis_due(options=options, **{"retry_after": None, **kw})  # noqa: E731
    assert not due(total=4, since_persona=4, has_persona=False)
    assert due(total=5, since_persona=5, has_persona=False)
    assert not due(total=7, since_persona=2, has_persona=True)
    assert due(total=8, since_persona=3, has_persona=True)
    assert not due(total=7, since_persona=7, has_persona=False, retry_after=5)
    assert due(total=8, since_persona=8, has_persona=False, retry_after=5)


async def test_synthesis_runs_exactly_at_the_thresholds() -> None:
    memory = make_memory()
    graph, model = make_graph(memory)
    inductions = []
    for number in range(1, 12):
        state = await give(graph, "alice", explicit(f"question {number} about gardens", number))
        inductions.append(len(model.calls_of("induce")))
    # first persona at 5 pairs, then after every 3 new pairs: 8 and 11
    assert inductions == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert state["synthesis"]["status"] == "accepted"
    history = memory.persona_history("alice")
    assert [p.version for p in history] == [1, 2, 3]
    assert memory.current_persona("alice").text == PERSONA_TEXT  # type: ignore[union-attr]
    # the synthesis annotated the train pairs for retrieval
    notes = memory.annotations("alice")
    assert any(n.get("default_judge_correct") is True for n in notes.values())


async def test_after_a_persona_the_persona_judge_answers_with_demos(monkeypatch: pytest.MonkeyPatch) -> None:
    # All five pairs train, whichever the content hash would hold out (tests/test_evaluation.py
    # covers that split): with no val pairs the fit keeps its demos without a search.
    monkeypatch.setattr(graphs.synthesis, "split_train_val", lambda pairs: (list(pairs), []))
    memory = make_memory()
    graph, model = make_graph(memory)
    for number in range(1, 6):
        await give(graph, "alice", explicit(f"question {number} about gardens", number))
    assert memory.current_persona("alice") is not None
    before = len(model.calls_of("judge"))
    state = await say(graph, "alice", "question 6 about gardens")
    assert state["judge"] == "persona"
    assert state["persona"]["version"] == 1 and state["persona"]["text"] == PERSONA_TEXT
    # the demos the synthesis chose for the persona come first, then those retrieved for the query
    selected = [demo.pair.id for demo in memory.current_demos("alice")]
    shown = [d["pair"]["id"] for d in state["demos"]]
    assert selected and shown[: len(selected)] == selected
    assert len(selected) < len(shown) <= len(selected) + 3 and len(set(shown)) == len(shown)
    assert all(d["pair"]["user_id"] == "alice" for d in state["demos"])
    turn_calls = model.calls_of("judge")[before:]
    assert all(demo_count(call.messages) == len(shown) for call in turn_calls)
    assert turn_calls and all(persona_of(call.messages) == PERSONA_TEXT for call in turn_calls)
    drafts = [call for call in model.calls_of("other") if "question 6" in call.messages[-1].text]
    assert drafts and all("<persona>" in call.messages[0].text for call in drafts)


async def test_inline_synthesis_answers_with_the_new_persona_deferred_answers_first() -> None:
    for mode, expected_judge in (("inline", "persona"), ("deferred", "default")):
        memory = make_memory()
        graph, _ = make_graph(memory, synthesis_mode=mode)
        for number in range(1, 5):
            await give(graph, "alice", explicit(f"question {number} about gardens", number))
        await graph.ainvoke(
            {"feedback": explicit("question 5 about gardens", 5), "messages": [HumanMessage("Any news?")]},
            run_config("t1"),
            context={"user_id": "alice"},
        )
        state = (await graph.aget_state(run_config("t1"))).values
        assert state["judge"] == expected_judge, mode
        assert state["synthesis"]["status"] == "accepted" and memory.current_persona("alice") is not None


async def test_stream_updates_show_each_node_and_deferred_synthesis_comes_after_the_reply() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    for number in range(1, 5):
        await give(graph, "alice", explicit(f"question {number} about gardens", number))
    nodes = await streamed_nodes(graph, "t1")
    assert nodes[:2] == ["record_feedback", "load_persona"]
    assert set(nodes[2:4]) == {"draft_replies", "retrieve_demos"}  # side by side, either order
    assert nodes[4:] == ["judge_replies", "synthesize_persona"]
    # with subgraphs=True the synthesis graph's own nodes show, under the synthesize_persona namespace
    memory = make_memory()
    graph, _ = make_graph(memory)
    for number in range(1, 5):
        await give(graph, "alice", explicit(f"question {number} about gardens", number))
    seen = []
    async for namespace, update in graph.astream(
        {"feedback": explicit("question 5 about gardens", 5)},
        run_config("t1"),
        context={"user_id": "alice"},
        stream_mode="updates",
        subgraphs=True,
    ):
        seen += [(namespace[0].split(":")[0] if namespace else "", node) for node in update]
    assert seen == [
        ("", "record_feedback"),
        ("synthesize_persona", "load_pairs"),
        ("synthesize_persona", "fit_persona"),
        ("synthesize_persona", "annotate_pairs"),
        ("synthesize_persona", "save_persona"),
        ("", "synthesize_persona"),
    ]


# --- failures ---------------------------------------------------------------------------------
class FailingSynthesisModel(CountingChatModel):
    """Drafts and judges normally but fails every persona induction."""

    inductions: int = 0

    def answer(self, messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            self.inductions += 1
            raise TimeoutError("the induction call timed out")
        return self.responder(messages)


async def test_a_failing_synthesis_keeps_the_old_persona_and_the_turn_is_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory = make_memory()
    good, _ = make_graph(memory)
    for number in range(1, 6):
        await give(good, "alice", explicit(f"question {number} about gardens", number))
    old = memory.current_persona("alice")
    assert old is not None and old.version == 1
    failing = FailingSynthesisModel(responder=chat_responder(persona_text="A different persona."))
    graph, _ = make_graph(memory, failing)
    for number in range(6, 8):
        await give(graph, "alice", explicit(f"question {number} about gardens", number), thread="t2")
    with caplog.at_level(logging.WARNING):
        await graph.ainvoke(
            {"feedback": explicit("question 8 about gardens", 8), "messages": [HumanMessage("Still there?")]},
            run_config("t2"),
            context={"user_id": "alice"},
        )
    state = (await graph.aget_state(run_config("t2"))).values
    assert (
        isinstance(state["messages"][-1], AIMessage) and state["messages"][-1].content in state["candidates"]
    )
    assert state["synthesis"]["status"] == "failed" and "TimeoutError" in state["synthesis"]["detail"]
    assert memory.current_persona("alice").version == 1  # type: ignore[union-attr]
    assert "synthesis failed" in caplog.text
    # not retried on the very next pair, but at the next trigger (3 more pairs)
    attempts = failing.inductions
    assert attempts >= 1
    for number in (9, 10):
        await give(graph, "alice", explicit(f"question {number} about gardens", number), thread="t2")
        assert failing.inductions == attempts
    await give(graph, "alice", explicit("question 11 about gardens", 11), thread="t2")
    assert failing.inductions > attempts


class SlowChatModel(CountingChatModel):
    """Hangs on the given tasks (a model that times out)."""

    slow_tasks: tuple[str, ...] = ("other",)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        if task_of(messages) in self.slow_tasks:
            await asyncio.sleep(30)
        return self._generate(messages, stop=stop)


async def test_a_drafting_model_that_times_out_gets_an_apology_not_a_crash() -> None:
    model = SlowChatModel(responder=chat_responder())
    graph, _ = make_graph(make_memory(), model, reply_timeout_s=0.2)
    state = await say(graph, "alice", "Hello?")
    reply = state["messages"][-1]
    assert isinstance(reply, AIMessage) and "language model failed" in reply.content
    assert "NodeTimeoutError" in state["reply_fallback"] and state["candidates"] == []
    with pytest.raises(InvalidPreference, match="no candidates"):
        await give(graph, "alice", {"choice": 0})


async def test_a_drafting_model_with_empty_output_gets_an_apology() -> None:
    model = CountingChatModel(responder=lambda messages: AIMessage("   "))
    graph, _ = make_graph(make_memory(), model)
    state = await say(graph, "alice", "Hello?")
    assert "language model failed" in state["messages"][-1].content
    assert len(model.calls) == 2 * 3  # two attempts of three drafts


async def test_a_judge_that_times_out_answers_with_the_first_candidate() -> None:
    judge = SlowChatModel(responder=chat_responder(), slow_tasks=("judge",))
    graph, _ = make_graph(make_memory(), judge_model=judge, reply_timeout_s=0.3)
    state = await say(graph, "alice", "Hello?")
    assert state["messages"][-1].content == state["candidates"][0]
    assert "judging failed" in state["judge_fallback"] and state["ranking"][0]["index"] == 0


async def test_a_judge_with_malformed_output_falls_back_to_ties_and_the_first_candidate() -> None:
    judge = MalformedChatModel(responder=chat_responder(), bad_calls=10**6, tasks=("judge",))
    graph, _ = make_graph(make_memory(), judge_model=judge)
    state = await say(graph, "alice", "Hello?")
    assert state["messages"][-1].content == state["candidates"][0]
    assert "no usable verdict" in state["judge_fallback"]


class DraftlessChatModel(CountingChatModel):
    """Judges and induces personas but cannot draft: every drafting call loses its connection."""

    def answer(self, messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "other":
            raise ConnectionError("the drafting endpoint went away")
        return self.responder(messages)


async def broken_judges(user_id: str, persona: Any, demos: Any) -> Any:
    """A judge factory whose judge cannot be reached."""
    raise TimeoutError("the judge timed out")


@pytest.mark.parametrize(
    ("broken", "fallback"),
    [("drafting", "__error_handler__draft_replies"), ("judging", "__error_handler__judge_replies")],
)
async def test_a_fallback_answer_is_followed_by_the_deferred_synthesis_it_triggered(
    broken: str, fallback: str
) -> None:
    memory = make_memory()
    good, model = make_graph(memory)
    for number in range(1, 5):
        await give(good, "alice", explicit(f"question {number} about gardens", number))
    if broken == "drafting":
        graph, _ = make_graph(memory, DraftlessChatModel(responder=chat_responder()))
    else:
        graph = build_graph(
            chat_model=model,
            judge_model=model,
            memory=memory,
            checkpointer=InMemorySaver(),
            judges=broken_judges,
            options=FAST,
        )
    nodes = await streamed_nodes(graph, "t2")
    assert nodes[-2:] == [fallback, "synthesize_persona"]
    state = (await graph.aget_state(run_config("t2"))).values
    if broken == "drafting":
        assert "language model failed" in state["messages"][-1].content and state["candidates"] == []
    else:
        assert state["messages"][-1].content == state["candidates"][0]
        assert "TimeoutError" in state["judge_fallback"]
    assert state["synthesis"]["status"] == "accepted" and memory.current_persona("alice") is not None


# --- persistence and isolation ----------------------------------------------------------------
async def test_persona_and_thread_survive_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    prefix = "chat_restart"
    async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "checkpoints.sqlite")) as saver:
        graph, _ = make_graph(make_memory(data / "chroma", prefix), checkpointer=saver)
        for number in range(1, 6):
            await give(graph, "alice", explicit(f"question {number} about gardens", number))
        first = await say(graph, "alice", "How do I repot a cactus?")
    with caplog.at_level(logging.WARNING):
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "checkpoints.sqlite")) as saver:
            model = CountingChatModel(responder=chat_responder())
            graph, _ = make_graph(make_memory(data / "chroma", prefix), model, checkpointer=saver)
            restored = (await graph.aget_state(run_config("t1"))).values
            assert restored["candidates"] == first["candidates"]
            assert restored["persona"]["version"] == 1 and restored["synthesis"]["status"] == "accepted"
            state = await give(graph, "alice", {"choice": 0})
            assert len(state["pairs_added"]) == 2
            state = await say(graph, "alice", "And a fern?")
    assert state["judge"] == "persona" and state["persona"]["version"] == 1
    draft = next(call for call in model.calls_of("other") if "fern" in call.messages[-1].text)
    assert any("cactus" in message.text for message in draft.messages)  # the thread's history
    assert "unregistered type" not in caplog.text
    # everything but the messages is plain JSON, so any checkpointer or server stores it as is
    json.dumps({key: value for key, value in state.items() if key != "messages"})


async def test_two_users_on_one_graph_never_see_each_others_memory() -> None:
    memory = make_memory()
    graph, model = make_graph(memory)
    for number in range(1, 6):
        await give(graph, "alice", explicit(f"question {number} about gardens", number), thread="a")
    assert memory.current_persona("alice") is not None
    before = len(model.calls_of("judge"))
    bob = await say(graph, "bob", "question 1 about gardens", thread="b")
    assert bob["persona"] is None and bob["demos"] == [] and bob["judge"] == "default"
    assert bob["pair_count"] == 0 and memory.count_pairs("bob") == 0
    bob_calls = model.calls_of("judge")[before:]
    assert bob_calls and all(persona_of(call.messages) is None for call in bob_calls)
    await give(graph, "bob", {"choice": 0}, thread="b")
    assert memory.count_pairs("bob") == 2 and memory.count_pairs("alice") == 5
    alice = await say(graph, "alice", "question 7 about gardens", thread="a")
    assert alice["demos"] and all(d["pair"]["user_id"] == "alice" for d in alice["demos"])
    assert memory.current_persona("bob") is None


async def test_a_run_without_user_id_is_refused() -> None:
    graph, _ = make_graph(make_memory())
    with pytest.raises(InvalidPreference, match="user_id"):
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, run_config("t"), context={})


# --- other judges -----------------------------------------------------------------------------
async def test_the_offline_and_hybrid_judges_pick_replies_per_user() -> None:
    from agent.features import FeatureExtractor
    from agent.reward_model import RewardModel
    from graphs.judges import HybridJudges, LLMJudges, OfflineJudges
    from memory.embeddings import MiniLMEmbeddings

    memory = make_memory()
    model = CountingChatModel(responder=chat_responder())
    offline = OfflineJudges(memory, RewardModel.load(), FeatureExtractor(MiniLMEmbeddings()))
    for judges, label, llm_judge_calls in (
        (offline, "offline", 0),
        (HybridJudges(LLMJudges(model), offline), "hybrid (default + offline)", 6),
    ):
        graph = build_graph(chat_model=model, judge_model=model, memory=memory, judges=judges, options=FAST)
        before = len(model.calls_of("judge"))
        final = await graph.ainvoke(
            {"messages": [HumanMessage("How do I keep my plants alive?")]}, context={"user_id": "alice"}
        )
        assert final["judge"] == label and final["judge_fallback"] is None
        assert len(model.calls_of("judge")) - before == llm_judge_calls
        ranked = final["ranking"]
        assert sorted(item["index"] for item in ranked) == [0, 1, 2]
        assert final["messages"][-1].content == ranked[0]["content"]
        assert [item["score"] for item in ranked] == sorted((item["score"] for item in ranked), reverse=True)


async def test_stream_messages_carries_the_model_calls_of_drafting_and_judging() -> None:
    graph, _ = make_graph(make_memory())
    nodes = set()
    async for _chunk, metadata in graph.astream(
        {"messages": [HumanMessage("Hello?")]},
        run_config("t1"),
        context={"user_id": "alice"},
        stream_mode="messages",
    ):
        nodes.add(metadata["langgraph_node"])
    assert nodes == {"draft_replies", "judge_replies"}


async def test_feedback_pairs_reuse_the_embedding_of_the_turn_they_answer() -> None:
    """The turn embedded its context to retrieve demos; storing the feedback on it embeds nothing new."""
    memory = make_memory()
    graph, _ = make_graph(memory)
    for number in range(1, 6):
        await give(graph, "alice", explicit(f"question {number} about gardens", number))
    state = await say(graph, "alice", "How should I water tomatoes in July?")
    assert state["persona"] is not None and state["demos"]  # this turn retrieved demos
    hits, misses = memory.embeddings.hits, memory.embeddings.misses
    await graph.ainvoke(
        {"feedback": {"choice": 1}, "messages": [HumanMessage("And in August?")]},
        run_config("t1"),
        context={"user_id": "alice"},
    )
    stored = len((await graph.aget_state(run_config("t1"))).values["pairs_added"])
    assert stored == len(state["candidates"]) - 1
    assert memory.embeddings.hits - hits == stored  # the feedback pairs' contexts
    assert memory.embeddings.misses - misses == 1  # only the new question


async def test_state_persona_stays_the_one_the_last_reply_used_through_feedback_only_runs() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    assert (await say(graph, "alice", "Hello?"))["persona"] is None
    for number in range(1, 7):  # the fifth synthesizes a persona; the sixth is feedback only again
        state = await give(graph, "alice", explicit(f"question {number} about gardens", number))
    assert memory.current_persona("alice") is not None
    assert state["persona"] is None  # the reply to "Hello?" was judged without one
    state = await say(graph, "alice", "And now?")
    assert state["persona"] is not None and state["persona"]["version"] == 1
