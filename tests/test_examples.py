"""The embedding examples run, with fake models injected."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from examples import best_of_n as best_of_n_example
from examples import chat_as_node
from graphs.chat import build_graph
from graphs.judges import LLMJudges
from persona_agent import factory
from tests.fakes import FAST, CountingChatModel, chat_responder, make_memory

SAMPLES = ("Try a small bookshelf.", "What a lovely idea: paint a mural together!", "Build a birdhouse.")


def sampling_responder() -> CountingChatModel:
    """A chat model whose plain replies cycle through `SAMPLES`; it judges like `chat_responder`."""
    judge_or_induce = chat_responder()
    cycle = itertools.cycle(SAMPLES)

    def respond(messages: list[BaseMessage]) -> AIMessage:
        if isinstance(messages[0], HumanMessage):  # a bare prompt: a sample to rerank
            return AIMessage(next(cycle))
        return judge_or_induce(messages)

    return CountingChatModel(responder=respond)


async def test_the_chat_graph_works_as_a_node_of_another_graph() -> None:
    memory = make_memory()
    model = CountingChatModel(responder=chat_responder())
    assistant = build_graph(
        chat_model=model, judge_model=model, memory=memory, checkpointer=True, options=FAST
    )
    graph = chat_as_node.build_support_graph(assistant, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "outer"}}
    context = {"user_id": "alice"}

    state = await graph.ainvoke({"messages": [HumanMessage("/help")]}, config, context=context)
    assert state["messages"][-1].content == chat_as_node.HELP_TEXT and model.calls == []

    state = await graph.ainvoke(
        {"messages": [HumanMessage("How do I keep basil alive?")]}, config, context=context
    )
    assert len(state["candidates"]) == 3 and state["judge"] == "default"
    assert "lovely" in state["messages"][-1].content and state["messages"][-1].content in state["candidates"]
    assert [m.type for m in state["messages"]] == ["human", "ai", "human", "ai"]

    # feedback flows through the outer graph into the assistant, whose candidates persisted
    await graph.ainvoke({"feedback": {"choice": 0}}, config, context=context)
    pairs = memory.list_pairs("alice")
    assert len(pairs) == 2 and {p.chosen for p in pairs} == {state["candidates"][0]}


async def test_the_judge_reranks_any_chat_models_samples_in_an_lcel_chain() -> None:
    model = sampling_responder()
    judge, label = LLMJudges(model).build(None, [])
    chain = best_of_n_example.best_of_n(model, judge, n=3)
    best = await chain.ainvoke({"question": "Suggest a weekend project"})
    assert best == SAMPLES[1] and label == "default"
    assert len(model.calls_of("judge")) == 6  # round robin of 3, both orders
    with pytest.raises(ValueError, match="1-8"):
        best_of_n_example.best_of_n(model, judge, n=9)


async def test_the_examples_main_functions_build_from_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    memory = make_memory(tmp_path / "chroma", prefix="examples")
    model = sampling_responder()
    monkeypatch.setattr(factory, "build_chat_model", lambda settings: model)
    monkeypatch.setattr(factory, "build_judge_model", lambda settings: model)
    monkeypatch.setattr(factory, "build_store", lambda settings: memory)
    monkeypatch.setenv("PERSONA_AGENT_JUDGE", "llm")  # the scripted model is the judge here
    await best_of_n_example.main("alice", "Suggest a weekend project", 3)
    assert capsys.readouterr().out.splitlines() == [SAMPLES[1], "(best of 3, default judge)"]

    chat_model = CountingChatModel(responder=chat_responder())
    monkeypatch.setattr(factory, "build_chat_model", lambda settings: chat_model)
    monkeypatch.setattr(factory, "build_judge_model", lambda settings: chat_model)
    await chat_as_node.main("alice", "How do I keep basil alive?")
    reply, summary = capsys.readouterr().out.splitlines()
    assert "lovely" in reply and summary == "(3 candidates, judged by the default judge)"
