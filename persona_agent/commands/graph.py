"""`persona-agent graph`: draw the served graphs as Mermaid flowcharts, and keep docs/graph.md's in step.

A diagram is LangGraph's own drawing of the compiled graph (``get_graph(xray=True)``), the same
one LangGraph Studio shows and ``GET /assistants/{id}/graph`` returns, so it cannot drift from
the code. In a Markdown file, each diagram is the ```` ```mermaid ```` block right after a line
``<!-- persona-agent graph NAME -->``; ``--docs FILE`` rewrites those blocks, ``--check`` only
compares them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from langgraph.pregel import Pregel

    from persona_agent.settings import Settings

# The graphs `langgraph.json` serves, in the order the docs show them.
SERVED_GRAPHS = ("chat", "synthesis")
_BLOCK = re.compile(
    r"^(?P<marker><!-- persona-agent graph (?P<name>[\w-]+) -->\n)(?P<block>```mermaid\n.*?^```\n)?",
    re.DOTALL | re.MULTILINE,
)


def served_graphs(settings: Settings) -> dict[str, Pregel]:
    """Compile the served graphs from settings as the server does, over an in-memory store.

    Drawing runs no node: no user data is opened and no language model is loaded.
    """
    from memory.chroma import make_client
    from memory.store import PreferenceStore
    from persona_agent.factory import (
        build_chat_graph,
        build_chat_model,
        build_embeddings,
        build_judge_model,
        build_synthesis_graph,
    )

    store = PreferenceStore(
        make_client(ephemeral=True),
        build_embeddings(settings, purpose="retrieval"),
        limits=settings.limits,
        prefix="drawing",
    )
    chat_model, judge_model = build_chat_model(settings), build_judge_model(settings)
    return {
        "chat": build_chat_graph(settings, store=store, chat_model=chat_model, judge_model=judge_model),
        "synthesis": build_synthesis_graph(
            settings, store=store, chat_model=chat_model, judge_model=judge_model
        ),
    }


def mermaid(graph: Pregel) -> str:
    """Return the graph's Mermaid flowchart, subgraphs expanded."""
    return graph.get_graph(xray=True).draw_mermaid()


def markdown_block(name: str, diagram: str) -> str:
    """Return a diagram as the marked Markdown block `update_docs` keeps current."""
    return f"<!-- persona-agent graph {name} -->\n```mermaid\n{diagram.rstrip()}\n```\n"


def update_docs(text: str, diagrams: Mapping[str, str]) -> str:
    """Return Markdown `text` with the block after each graph marker replaced by its current diagram."""

    def current(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in diagrams:
            raise typer.BadParameter(f"the docs name a graph {name!r}; served graphs: {', '.join(diagrams)}")
        return markdown_block(name, diagrams[name])

    return _BLOCK.sub(current, text)


def documented_graphs(text: str) -> list[str]:
    """Return the names of the graphs whose diagrams a Markdown text holds, in order."""
    return [match["name"] for match in _BLOCK.finditer(text)]


def graph(
    names: Annotated[
        list[str] | None, typer.Argument(help=f"Graphs to draw (default: {', '.join(SERVED_GRAPHS)}).")
    ] = None,
    mermaid_format: Annotated[
        bool, typer.Option("--mermaid", help="Print Mermaid flowcharts (the only format).")
    ] = True,
    docs: Annotated[
        Path | None,
        typer.Option(help="Rewrite the diagrams in this Markdown file instead of printing them."),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="With --docs: change nothing; exit 1 if a diagram there is out of date.")
    ] = False,
) -> None:
    """Draw the served graphs as Mermaid flowcharts (one bare diagram, or Markdown blocks for several)."""
    from persona_agent.settings import load_settings

    if docs is not None and names:
        raise typer.BadParameter("--docs redraws every graph the file names; give no graph names with it")
    chosen: Sequence[str] = names or SERVED_GRAPHS
    unknown = [name for name in chosen if name not in SERVED_GRAPHS]
    if unknown:
        raise typer.BadParameter(f"no graph {unknown[0]!r}; served graphs: {', '.join(SERVED_GRAPHS)}")
    text = docs.read_text(encoding="utf-8") if docs is not None else ""
    if docs is not None and not documented_graphs(text):
        raise typer.BadParameter(f"{docs} has no '<!-- persona-agent graph NAME -->' line")
    built = served_graphs(load_settings())
    diagrams = {name: mermaid(built[name]) for name in chosen}
    if docs is None:
        if len(diagrams) == 1:
            typer.echo(next(iter(diagrams.values())).rstrip())
        else:
            blocks = [markdown_block(name, diagram) for name, diagram in diagrams.items()]
            typer.echo("\n".join(blocks), nl=False)
        return
    updated = update_docs(text, diagrams)
    if updated == text:
        typer.echo(f"{docs}: diagrams up to date", err=True)
    elif check:
        typer.secho(f"{docs}: diagrams out of date; run: persona-agent graph --docs {docs}", err=True)
        raise typer.Exit(1)
    else:
        staged = docs.with_name(f".{docs.name}.tmp")
        staged.write_text(updated, encoding="utf-8")
        staged.replace(docs)  # a reader never sees a half-written file
        typer.echo(f"{docs}: diagrams redrawn", err=True)
