"""Every graph draws (Studio, `get_graph()` and RemoteGraph need it); docs/graph.md shows them as drawn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from langgraph.checkpoint.memory import InMemorySaver
from typer.testing import CliRunner

from examples import chat_as_node
from graphs.chat import DRAFT_FALLBACK, JUDGE_FALLBACK
from graphs.synthesis import FIT_FALLBACK
from persona_agent.cli import app
from persona_agent.commands.graph import (
    SERVED_GRAPHS,
    documented_graphs,
    markdown_block,
    mermaid,
    served_graphs,
    update_docs,
)
from persona_agent.settings import Settings
from tests.conftest import REPO_ROOT
from tests.fakes import make_graph, make_memory, synthesis_graph

DOCS = REPO_ROOT / "docs" / "graph.md"


def edges(graph: Any) -> set[tuple[str, str, str | None]]:
    """Return the drawn edges of a compiled graph (subgraphs expanded) as (source, target, label)."""
    drawing = graph.get_graph(xray=True)
    return {(edge.source, edge.target, edge.data) for edge in drawing.edges}


def compiled_graphs() -> dict[str, Any]:
    """Every compiled graph of the project and its examples, over fakes."""
    chat, model = make_graph(make_memory())
    nested, _ = make_graph(make_memory(), checkpointer=True)
    return {
        "chat": chat,
        "synthesis": synthesis_graph(make_memory(), model),
        "chat_as_node": chat_as_node.build_support_graph(nested, checkpointer=InMemorySaver()),
        **{f"served {name}": graph for name, graph in served_graphs(Settings()).items()},
    }


@pytest.mark.parametrize("name", ["chat", "synthesis", "chat_as_node", "served chat", "served synthesis"])
def test_every_graph_draws_as_mermaid_with_its_subgraphs(name: str) -> None:
    graph = compiled_graphs()[name]
    diagram = graph.get_graph(xray=True).draw_mermaid()
    assert diagram.count("__start__") >= 2 and "__end__" in diagram
    for node in graph.get_graph().nodes:
        assert node in diagram


def test_the_chat_drawing_shows_each_fallback_and_where_it_goes() -> None:
    chat, _ = make_graph(make_memory())
    drawn = {(source, target) for source, target, _label in edges(chat)}
    assert ("draft_replies", DRAFT_FALLBACK, "error") in edges(chat)
    assert ("judge_replies", JUDGE_FALLBACK, "error") in edges(chat)
    for answered in ("judge_replies", DRAFT_FALLBACK, JUDGE_FALLBACK):
        assert {(answered, "synthesize_persona"), (answered, "__end__")} <= drawn
    assert {("load_persona", "draft_replies"), ("load_persona", "retrieve_demos")} <= drawn
    assert {("draft_replies", "judge_replies"), ("retrieve_demos", "judge_replies")} <= drawn
    assert ("record_feedback", "synthesize_persona") in drawn


def test_the_synthesis_drawing_shows_its_fallback() -> None:
    drawn = edges(synthesis_graph(make_memory(), make_graph(make_memory())[1]))
    assert ("fit_persona", FIT_FALLBACK, "error") in drawn
    assert (FIT_FALLBACK, "__end__", None) in drawn


def test_the_nested_chat_graph_is_drawn_inside_the_outer_graph() -> None:
    nodes = compiled_graphs()["chat_as_node"].get_graph(xray=True).nodes
    assert {"assistant:draft_replies", f"assistant:{JUDGE_FALLBACK}"} <= set(nodes)


def test_the_docs_show_the_served_graphs_as_the_code_draws_them() -> None:
    served = json.loads((REPO_ROOT / "langgraph.json").read_text())["graphs"]
    assert list(served) == list(SERVED_GRAPHS)
    text = DOCS.read_text(encoding="utf-8")
    assert documented_graphs(text) == list(SERVED_GRAPHS)
    diagrams = {name: mermaid(graph) for name, graph in served_graphs(Settings()).items()}
    for name, diagram in diagrams.items():
        assert markdown_block(name, diagram) in text, (
            f"run: persona-agent graph --docs docs/graph.md ({name})"
        )


def test_the_graph_command_prints_redraws_and_checks_docs(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["graph", "chat", "--mermaid"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.strip() == mermaid(served_graphs(Settings())["chat"]).strip()

    stale = tmp_path / "graph.md"
    current = DOCS.read_text(encoding="utf-8")
    stale.write_text(current.replace("judge_replies -.-> synthesize_persona;\n", ""), encoding="utf-8")
    checked = runner.invoke(app, ["graph", "--docs", str(stale), "--check"])
    assert checked.exit_code == 1 and "out of date" in checked.stderr
    assert stale.read_text(encoding="utf-8") != current  # --check changes nothing
    redrawn = runner.invoke(app, ["graph", "--docs", str(stale)])
    assert redrawn.exit_code == 0 and stale.read_text(encoding="utf-8") == current


def test_the_graph_command_names_what_it_cannot_draw(tmp_path: Path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["graph", "chats"])
    assert unknown.exit_code == 2 and "no graph 'chats'" in unknown.output
    plain = tmp_path / "plain.md"
    plain.write_text("# nothing to draw here\n", encoding="utf-8")
    unmarked = runner.invoke(app, ["graph", "--docs", str(plain)])
    assert unmarked.exit_code == 2 and "persona-agent graph NAME" in unmarked.output
    with pytest.raises(typer.BadParameter, match="'chats'"):
        update_docs("<!-- persona-agent graph chats -->\n", {"chat": "graph TD;"})
