"""`persona-agent serve` end to end: langgraph dev on loopback, the model an OpenAI-compatible stub.

One server for the module; each test uses its own users, so tests do not see each other's memory.
Besides turns, auth and isolation: the graph API LangGraph Studio and `RemoteGraph` read, and the
RemoteGraph example.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.pregel.remote import RemoteGraph
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from devtools.langgraph_server import LangGraphServer
from devtools.openai_stub import OpenAIStub
from examples import remote_chat
from graphs.chat import DRAFT_FALLBACK, JUDGE_FALLBACK

pytestmark = pytest.mark.slow

CAROL_TOKEN = "carol-integration-token"
TOKENS = {
    "alice-integration-token": "alice",
    "bob-integration-token": "bob",
    "erin-integration-token": "erin",
    CAROL_TOKEN: "carol",
    "dana-integration-token": "dana",
}


def _bearer(user: str) -> dict[str, str]:
    token = next(token for token, owner in TOKENS.items() if owner == user)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    """The model endpoint: an instant OpenAI-compatible stub on loopback."""
    with OpenAIStub() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: OpenAIStub) -> Iterator[LangGraphServer]:
    """`persona-agent serve` with token auth over a fresh data directory; stopped by pid afterwards."""
    root = tmp_path_factory.mktemp("serve")
    env = {
        **os.environ,
        "OPENAI_BASE_URL": stub.base_url,
        "OPENAI_API_KEY": "stub-key",
        "PERSONA_AGENT_DATA_DIR": str(root / "data"),
        "PERSONA_AGENT_TOKENS": ",".join(f"{token}={user}" for token, user in TOKENS.items()),
        "PERSONA_AGENT_CANDIDATES": "3",
        "PERSONA_AGENT_FIRST_SYNTHESIS_AT": "4",
        "PERSONA_AGENT_SYNTHESIS_MODE": "deferred",
    }
    with LangGraphServer(Path(root) / "state", env=env) as running:
        yield running
    assert running.process is not None and running.process.poll() is not None  # stopped


def _client(server: LangGraphServer, headers: dict[str, str] | None = None) -> LangGraphClient:
    return get_client(url=server.url, headers=headers or {})


async def _ask(client: LangGraphClient, thread_id: str, question: str, **extra: Any) -> dict[str, Any]:
    result = await client.runs.wait(
        thread_id, "chat", input={"messages": [{"role": "user", "content": question}], **extra}
    )
    assert isinstance(result, dict)
    return result


async def test_chat_turns_feedback_and_memory_through_the_server(
    server: LangGraphServer, stub: OpenAIStub
) -> None:
    alice = _client(server, _bearer("alice"))
    thread = await alice.threads.create()
    assert thread["metadata"]["owner"] == "alice"

    first = await _ask(alice, thread["thread_id"], "How do I boil pasta?")
    assert first["messages"][-1]["type"] == "ai"
    assert "How do I boil pasta?" in first["messages"][-1]["content"]
    assert len(first["candidates"]) == 3
    assert first["ranking"][0]["content"] == first["messages"][-1]["content"]

    # A user_id in the run's context or configurable is replaced by the token's identity.
    spoofed = await alice.runs.wait(
        thread["thread_id"],
        "chat",
        input={
            "messages": [{"role": "user", "content": "How do I fix a flat tyre?"}],
            "feedback": {"choice": 1},
        },
        context={"user_id": "bob"},
    )
    assert isinstance(spoofed, dict)
    assert spoofed["pair_count"] == 2  # the pick among 3 candidates made 2 pairs, stored for alice
    third = await alice.runs.wait(
        thread["thread_id"],
        "chat",
        input={
            "messages": [{"role": "user", "content": "Which plant likes a dark room?"}],
            "feedback": {"choice": 2},
        },
        config={"configurable": {"user_id": "bob"}},
    )
    assert isinstance(third, dict)
    assert third["pair_count"] == 4
    # The fourth pair made a persona due; deferred synthesis ran after the reply, in the same run.
    assert third["synthesis"]["status"] == "accepted", third["synthesis"]
    assert stub.counts["text"] >= 9

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        pairs = (await http.get("/memory/pairs", headers=_bearer("alice"))).json()
        assert pairs["total"] == 4
        assert {pair["user_id"] for pair in pairs["pairs"]} == {"alice"}
        assert {pair["source"] for pair in pairs["pairs"]} == {"explicit"}
        # validation pairs (a hash of their sibling group) are held out of the bootstrap: only the
        # pairs the persona was fitted on carry the default judge's verdict
        fitted = {pair["id"] for pair in pairs["pairs"] if pair["default_judge_correct"] is not None}
        persona_record = (await http.get("/memory/persona", headers=_bearer("alice"))).json()
        assert fitted and fitted <= set(persona_record["current"]["pair_ids"])
        persona = (await http.get("/memory/persona", headers=_bearer("alice"))).json()
        assert persona["current_version"] == 1 and persona["current"]["text"]
        demos = (
            await http.get("/memory/demos", params={"q": "boiling pasta"}, headers=_bearer("alice"))
        ).json()
        assert demos["demos"] and demos["demos"][0]["pair"]["user_id"] == "alice"
        # Bob, named in the spoofed run, got nothing.
        bob_pairs = (await http.get("/memory/pairs", headers=_bearer("bob"))).json()
        assert bob_pairs["total"] == 0
        exported = await http.get("/memory/export", headers=_bearer("alice"))
        assert exported.status_code == 200 and exported.text.count('"kind": "persona"') == 1

    # The next turn is judged with the persona.
    fourth = await _ask(alice, thread["thread_id"], "How long do I cook rice?")
    assert fourth["persona"]["version"] == 1
    assert fourth["judge"] == "persona"

    # The synthesis graph is served too, for the caller only.
    synthesis = await alice.runs.wait(None, "synthesis", input={})
    assert isinstance(synthesis, dict) and synthesis["outcome"]["status"] in {
        "accepted",
        "rejected",
        "skipped",
    }


async def test_regenerate_and_edit_store_inferred_pairs_through_the_server(server: LangGraphServer) -> None:
    dana = _client(server, _bearer("dana"))
    thread_id = (await dana.threads.create())["thread_id"]
    first = await _ask(dana, thread_id, "How do I boil pasta?")
    turned_down = first["messages"][-1]["content"]
    redone = await dana.runs.wait(thread_id, "chat", input={"feedback": {"regenerate": True}})
    assert isinstance(redone, dict)
    kept = redone["messages"][-1]["content"]
    assert kept != turned_down and [m["type"] for m in redone["messages"]] == ["human", "ai"]
    assert redone["pair_count"] == 0  # nothing stored until dana goes on
    went_on = await _ask(dana, thread_id, "And how much salt?")
    assert went_on["pair_count"] == 1
    edited = await dana.runs.wait(thread_id, "chat", input={"feedback": {"edited": "About 10 g per litre."}})
    assert isinstance(edited, dict) and edited["messages"][-1]["content"] == "About 10 g per litre."
    refused = await dana.runs.create(thread_id, "chat", input={"feedback": {"edited": ""}})
    await dana.runs.join(thread_id, refused["run_id"])
    assert (await dana.runs.get(thread_id, refused["run_id"]))["status"] == "error"

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        listed = (await http.get("/memory/pairs", headers=_bearer("dana"))).json()["pairs"]
    stored = {pair["source"]: pair for pair in listed}
    assert set(stored) == {"regenerate", "edit"} and len(listed) == 2
    regenerate, edit = stored["regenerate"], stored["edit"]
    assert (regenerate["chosen"], regenerate["rejected"], regenerate["weight"]) == (kept, turned_down, 0.3)
    assert (edit["chosen"], edit["weight"], edit["inferred"]) == ("About 10 g per litre.", 0.7, True)


async def test_missing_or_wrong_tokens_are_refused(server: LangGraphServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for headers in (
            {},
            {"Authorization": "Bearer not-a-token-at-all"},
            {"Authorization": "Bearer dev-alice"},  # dev tokens only work in dev mode
            {"x-auth-scheme": "langsmith"},  # Studio's scheme must not bypass auth
        ):
            assert (await http.post("/threads", json={}, headers=headers)).status_code == 401, headers
            assert (await http.post("/threads/search", json={}, headers=headers)).status_code == 401
            assert (await http.get("/memory/persona", headers=headers)).status_code == 401
            assert (await http.delete("/memory", headers=headers)).status_code == 401
        assert (await http.get("/inspector")).status_code == 200  # the page itself needs no token
        assert (await http.get("/ok")).status_code == 200


async def test_one_user_cannot_read_or_use_another_users_thread_or_memory(server: LangGraphServer) -> None:
    erin = _client(server, _bearer("erin"))
    bob = _client(server, _bearer("bob"))
    thread = await erin.threads.create(metadata={"owner": "bob"})  # an owner in the body is overwritten
    assert thread["metadata"]["owner"] == "erin"
    thread_id = thread["thread_id"]
    # A streamed turn with a per-run option in the context (the server adds the user id to it).
    events = [
        part
        async for part in erin.runs.stream(
            thread_id,
            "chat",
            input={"messages": [{"role": "user", "content": "What should I cook tonight?"}]},
            context={"candidates": 2},
            stream_mode="updates",
        )
    ]
    updates = [part.data for part in events if part.event == "updates"]
    assert [next(iter(update)) for update in updates][-2:] == ["draft_replies", "judge_replies"]
    assert len(updates[-1]["judge_replies"]["ranking"]) == 2

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for method, path, body in (
            ("GET", f"/threads/{thread_id}", None),
            ("GET", f"/threads/{thread_id}/state", None),
            ("GET", f"/threads/{thread_id}/history", None),
            ("GET", f"/threads/{thread_id}/runs", None),
            (
                "POST",
                f"/threads/{thread_id}/runs/wait",
                {"assistant_id": "chat", "input": {"feedback": {"choice": 0}}},
            ),
            ("PATCH", f"/threads/{thread_id}", {"metadata": {"owner": "bob"}}),
            ("DELETE", f"/threads/{thread_id}", None),
        ):
            response = await http.request(method, path, json=body, headers=_bearer("bob"))
            assert response.status_code in (403, 404), (
                method,
                path,
                response.status_code,
                response.text[:200],
            )
        found = (await http.post("/threads/search", json={"limit": 100}, headers=_bearer("bob"))).json()
        assert thread_id not in {t["thread_id"] for t in found}
        # Bob's store namespace is his own even when he names erin's.
        put = await http.put(
            "/store/items",
            json={"namespace": ["erin"], "key": "k", "value": {"x": 1}},
            headers=_bearer("bob"),
        )
        assert put.status_code == 204
        mine = await http.get(
            "/store/items", params={"namespace": "erin", "key": "k"}, headers=_bearer("erin")
        )
        assert mine.status_code == 200 and mine.json() is None  # nothing in erin's own namespace
        his = await http.get("/store/items", params={"namespace": "erin", "key": "k"}, headers=_bearer("bob"))
        assert his.json()["namespace"] == ["bob", "erin"] and his.json()["value"] == {"x": 1}
        # Forgetting bob leaves erin's memory alone.
        before = (await http.get("/memory/persona", headers=_bearer("erin"))).json()
        assert (await http.delete("/memory", headers=_bearer("bob"))).status_code == 200
        after = (await http.get("/memory/persona", headers=_bearer("erin"))).json()
        assert after == before
        # Crons and assistant edits are not part of this server's surface.
        assert (
            await http.post("/assistants", json={"graph_id": "chat"}, headers=_bearer("bob"))
        ).status_code == 403

    # Erin still owns and can continue her thread.
    state = await erin.threads.get_state(thread_id)
    assert state["values"]["messages"][-1]["type"] == "ai"
    assert thread_id not in {t["thread_id"] for t in await bob.threads.search(limit=100)}


# --- the graph API of Studio and RemoteGraph ----------------------------------------------------
async def test_every_assistant_draws_and_describes_itself(server: LangGraphServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=_bearer("carol")) as http:
        assistants = (await http.post("/assistants/search", json={"limit": 100})).json()
        assert sorted(assistant["graph_id"] for assistant in assistants) == ["chat", "synthesis"]
        answers = {}
        for assistant in assistants:
            base = f"/assistants/{assistant['assistant_id']}"
            for path in (f"{base}/graph", f"{base}/graph?xray=true", f"{base}/schemas", f"{base}/subgraphs"):
                response = await http.get(path)
                assert response.status_code == 200, (path, response.status_code, response.text[:500])
                answers[assistant["graph_id"], path.removeprefix(base)] = response.json()

    chat = answers["chat", "/graph?xray=true"]
    nodes = {node["id"] for node in chat["nodes"]}
    assert {"draft_replies", "judge_replies", DRAFT_FALLBACK, JUDGE_FALLBACK} <= nodes
    drawn = {(edge["source"], edge["target"]) for edge in chat["edges"]}
    assert {("draft_replies", DRAFT_FALLBACK), (DRAFT_FALLBACK, "synthesize_persona")} <= drawn
    schemas = answers["chat", "/schemas"]
    assert "messages" in schemas["input_schema"]["properties"]
    assert "user_id" in schemas["context_schema"]["properties"]
    synthesis = answers["synthesis", "/graph"]
    assert "fit_persona" in {node["id"] for node in synthesis["nodes"]}


async def test_the_remote_graph_example_answers_learns_from_a_pick_and_draws(
    server: LangGraphServer, capsys: pytest.CaptureFixture[str]
) -> None:
    await remote_chat.main(server.url, CAROL_TOKEN, ["How do I boil pasta?"], pick=1)
    reply, summary, picked = capsys.readouterr().out.splitlines()
    assert "How do I boil pasta?" in reply
    assert summary == "(3 candidates, judged by the default judge)"
    assert picked.startswith("(you preferred: ") and "How do I boil pasta?" in picked
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        pairs = (await http.get("/memory/pairs", headers=_bearer("carol"))).json()
    # The token's user got the pick's pairs (the chosen reply against each other candidate).
    assert pairs["total"] == 2 and {pair["user_id"] for pair in pairs["pairs"]} == {"carol"}
    assert {pair["chosen"] for pair in pairs["pairs"]} == {picked.removeprefix("(you preferred: ")[:-1]}

    # Drawing the outer graph with xray fetches the served chat graph's drawing.
    outer = remote_chat.build_remote_support_graph(server.url, CAROL_TOKEN)
    drawing = await asyncio.to_thread(lambda: outer.get_graph(xray=True))
    assert {"assistant:draft_replies", f"assistant:{JUDGE_FALLBACK}"} <= set(drawing.nodes)
    assert "subgraph assistant" in drawing.draw_mermaid()
    drawing = await RemoteGraph("chat", url=server.url, headers=_bearer("carol")).aget_graph()
    assert DRAFT_FALLBACK in drawing.draw_mermaid()

    stranger = remote_chat.build_remote_support_graph(server.url, "not-a-token")
    with pytest.raises(httpx.HTTPStatusError, match="unknown token") as refused:
        await stranger.ainvoke({"messages": [{"role": "user", "content": "Hello?"}]})
    assert refused.value.response.status_code == 401


def test_the_graphs_are_built_at_start_so_no_request_logs_a_slow_load(server: LangGraphServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60, headers=_bearer("carol")) as http:
        for assistant in http.post("/assistants/search", json={}).json():
            assert http.get(f"/assistants/{assistant['assistant_id']}/graph").status_code == 200
    log = re.sub(r"\x1b\[[0-9;]*m", "", server.log_tail(10**7))  # without the console's colours
    assert "Application started up" in log
    # langgraph-api logs a factory call over 250 ms as an error, over 100 ms as a warning.
    assert not re.findall(r"\[error\s*\] Slow graph load.*", log)
