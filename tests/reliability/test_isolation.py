"""Isolation: the read paths the existing tests leave out (see RELIABILITY.md for the full list).

Covered here: the CLI's ``persona show`` and ``pairs import --user``, two users' terminal chat
sessions, and the chat graph's thread state (a user's own thread, and another user's run on it,
which the graph refuses: a thread remembers its owner).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from agent.errors import Forbidden, UnknownUser
from agent.records import Persona
from graphs.chat import ChatOptions, build_graph
from memory.chroma import make_client
from memory.store import PreferenceStore
from persona_agent import cli, factory
from tests.fakes import CountingChatModel, WordHashEmbeddings, make_pair
from tests.reliability.chat_load import respond

pytestmark = pytest.mark.reliability

runner = CliRunner()


def _store(path: Path | None = None) -> PreferenceStore:
    client = make_client(path=path) if path else make_client(ephemeral=True)
    return PreferenceStore(client, WordHashEmbeddings(), prefix=f"iso{uuid.uuid4().hex[:8]}")


def _snapshot(store: PreferenceStore, user: str) -> dict[str, Any]:
    current = store.current_persona(user)
    return {
        "pairs": [p.model_dump(mode="json") for p in store.list_pairs(user, limit=1_000)],
        "personas": [p.model_dump(mode="json") for p in store.persona_history(user)],
        "current": current.version if current else None,
        "demos": [d.model_dump(mode="json") for d in store.current_demos(user)],
        "annotations": store.annotations(user),
    }


@pytest.fixture
def shared_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> PreferenceStore:
    """One store behind every CLI command of the test (the factory is pointed at it)."""
    store = _store(tmp_path / "chroma")
    monkeypatch.setattr(factory, "build_store", lambda settings: store)
    return store


def test_cli_persona_show_and_pairs_import_stay_with_the_named_user(
    shared_store: PreferenceStore, tmp_path: Path
) -> None:
    shared_store.add_pairs("alice", [make_pair("alice", "alice's question")])
    shared_store.save_persona(Persona(user_id="alice", text="Alice likes terse replies."))
    alice = _snapshot(shared_store, "alice")

    shown = runner.invoke(cli.app, ["persona", "show", "--user", "bob"])
    assert isinstance(shown.exception, UnknownUser) and "Alice" not in shown.output

    records = tmp_path / "records.jsonl"
    record = {
        "user_id": "alice",
        "context": [{"role": "user", "content": "q"}],
        "chosen": "a",
        "rejected": "b",
    }
    records.write_text(json.dumps(record) + "\n")
    result = runner.invoke(cli.app, ["pairs", "import", str(records), "--user", "bob", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == {"bob": 1}
    assert shared_store.count_pairs("bob") == 1 and _snapshot(shared_store, "alice") == alice
    listed = runner.invoke(cli.app, ["pairs", "list", "--user", "bob", "--json"])
    assert [p["user_id"] for p in json.loads(listed.stdout)["pairs"]] == ["bob"]


def test_two_users_chat_sessions_in_the_terminal_stay_apart(
    monkeypatch: pytest.MonkeyPatch, shared_store: PreferenceStore
) -> None:
    model = CountingChatModel(responder=respond)
    monkeypatch.setattr(factory, "build_chat_model", lambda settings: model)
    monkeypatch.setattr(factory, "build_judge_model", lambda settings: model)
    monkeypatch.setenv("PERSONA_AGENT_JUDGE", "llm")
    monkeypatch.setenv("PERSONA_AGENT_PERSONA_SOURCE", "llm")  # and it writes the persona
    for _ in range(3):
        script = "Alice's secret garden question\n/pick 1\n/quit\n"
        assert runner.invoke(cli.app, ["chat", "--user", "alice"], input=script).exit_code == 0
    assert shared_store.current_persona("alice") is not None
    alice = _snapshot(shared_store, "alice")

    bob = runner.invoke(
        cli.app, ["chat", "--user", "bob"], input="/candidates\n/persona\nHello\n/pick 2\n/quit\n"
    )
    assert bob.exit_code == 0, bob.output
    assert "secret garden" not in bob.output  # neither alice's thread nor her pairs
    assert "No persona yet" in bob.output and "Prefers short" not in bob.output
    assert _snapshot(shared_store, "alice") == alice
    assert {p.user_id for p in shared_store.list_pairs("bob")} == {"bob"}


async def test_graph_state_of_one_users_thread_never_holds_another_users_memory() -> None:
    store = _store()
    model = CountingChatModel(responder=respond)
    graph = build_graph(
        chat_model=model,
        judge_model=model,
        memory=store,
        checkpointer=InMemorySaver(),
        options=ChatOptions(attempts=2, retry_interval_s=0.01, first_synthesis_at=4),
    )

    async def turn(user: str, thread: str, payload: dict[str, Any]) -> dict[str, Any]:
        config: Any = {"configurable": {"thread_id": thread}}
        await graph.ainvoke(payload, config, context={"user_id": user})
        return (await graph.aget_state(config)).values

    for number in range(3):
        await turn("alice", "alice-thread", {"messages": [HumanMessage(f"alice secret {number}")]})
        await turn("alice", "alice-thread", {"feedback": {"choice": 0}})
    assert store.current_persona("alice") is not None
    alice = _snapshot(store, "alice")

    own = await turn("bob", "bob-thread", {"messages": [HumanMessage("bob asks")]})
    assert own["persona"] is None and own["demos"] == [] and own["pair_count"] == 0
    assert not any("alice" in m.text for m in own["messages"])

    # A thread remembers its owner: a run for bob on alice's thread id is refused before any
    # node reads the conversation or memory, so bob gets nothing of alice's back. LangGraph
    # records a run's input before its first node, so the refused message stays appended to the
    # thread's checkpoint; alice's own turns and her memory stay as they were.
    before = (await graph.aget_state({"configurable": {"thread_id": "alice-thread"}})).values
    for payload in ({"messages": [HumanMessage("bob again")]}, {"feedback": {"choice": 0}}):
        with pytest.raises(Forbidden, match="another user"):
            await turn("bob", "alice-thread", payload)
    after = (await graph.aget_state({"configurable": {"thread_id": "alice-thread"}})).values
    assert after["messages"][: len(before["messages"])] == before["messages"]
    assert after["owner"] == "alice" and after["ranking"] == before["ranking"]
    assert _snapshot(store, "alice") == alice
    assert store.list_pairs("bob") == []  # the refused feedback stored nothing
