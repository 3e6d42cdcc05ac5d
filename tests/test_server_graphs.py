"""The served graphs through the graph API Studio and `RemoteGraph` use; the RemoteGraph example.

`persona-agent serve` (langgraph dev) on loopback with token auth, the model an OpenAI-compatible stub.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph.pregel.remote import RemoteGraph

from examples import remote_chat
from graphs.chat import DRAFT_FALLBACK, JUDGE_FALLBACK
from tests.langgraph_server import LangGraphServer
from tests.openai_stub import OpenAIStub

pytestmark = pytest.mark.slow

TOKEN = "carol-graph-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    """The model endpoint: an instant OpenAI-compatible stub on loopback."""
    with OpenAIStub() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: OpenAIStub) -> Iterator[LangGraphServer]:
    """`persona-agent serve` with one user's token over a fresh data directory; stopped by pid afterwards."""
    root = tmp_path_factory.mktemp("serve-graphs")
    env = {
        **os.environ,
        "OPENAI_BASE_URL": stub.base_url,
        "OPENAI_API_KEY": "stub-key",
        "PERSONA_AGENT_DATA_DIR": str(root / "data"),
        "PERSONA_AGENT_TOKENS": f"{TOKEN}=carol",
        "PERSONA_AGENT_CANDIDATES": "3",
    }
    with LangGraphServer(Path(root) / "state", env=env) as running:
        yield running


async def test_every_assistant_draws_and_describes_itself(server: LangGraphServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=BEARER) as http:
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
    await remote_chat.main(server.url, TOKEN, ["How do I boil pasta?"], pick=1)
    reply, summary, picked = capsys.readouterr().out.splitlines()
    assert "How do I boil pasta?" in reply
    assert summary == "(3 candidates, judged by the default judge)"
    assert picked.startswith("(you preferred: ") and "How do I boil pasta?" in picked
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        pairs = (await http.get("/memory/pairs", headers=BEARER)).json()
    # The token's user got the pick's pairs (the chosen reply against each other candidate).
    assert pairs["total"] == 2 and {pair["user_id"] for pair in pairs["pairs"]} == {"carol"}
    assert {pair["chosen"] for pair in pairs["pairs"]} == {picked.removeprefix("(you preferred: ")[:-1]}

    # Drawing the outer graph with xray fetches the served chat graph's drawing.
    outer = remote_chat.build_remote_support_graph(server.url, TOKEN)
    drawing = await asyncio.to_thread(lambda: outer.get_graph(xray=True))
    assert {"assistant:draft_replies", f"assistant:{JUDGE_FALLBACK}"} <= set(drawing.nodes)
    assert "subgraph assistant" in drawing.draw_mermaid()
    drawing = await RemoteGraph("chat", url=server.url, headers=BEARER).aget_graph()
    assert DRAFT_FALLBACK in drawing.draw_mermaid()

    stranger = remote_chat.build_remote_support_graph(server.url, "not-a-token")
    with pytest.raises(httpx.HTTPStatusError, match="unknown token") as refused:
        await stranger.ainvoke({"messages": [{"role": "user", "content": "Hello?"}]})
    assert refused.value.response.status_code == 401


def test_the_graphs_are_built_at_start_so_no_request_logs_a_slow_load(server: LangGraphServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60, headers=BEARER) as http:
        for assistant in http.post("/assistants/search", json={}).json():
            assert http.get(f"/assistants/{assistant['assistant_id']}/graph").status_code == 200
    log = re.sub(r"\x1b\[[0-9;]*m", "", server.log_tail(10**7))  # without the console's colours
    assert "Application started up" in log
    # langgraph-api logs a factory call over 250 ms as an error, over 100 ms as a warning.
    assert not re.findall(r"\[error\s*\] Slow graph load.*", log)
