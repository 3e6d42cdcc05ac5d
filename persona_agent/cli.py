"""The `persona-agent` command line. Each command group lives in `persona_agent/commands/`."""

from __future__ import annotations

import logging
import os
import sys

import typer

from agent.errors import PersonaAgentError
from persona_agent.commands import bench, memory, pairs, persona
from persona_agent.commands.chat import chat
from persona_agent.commands.demo import demo
from persona_agent.commands.evaluate import evaluate
from persona_agent.commands.graph import graph
from persona_agent.commands.serve import serve

app = typer.Typer(
    help="A personalized assistant that learns your taste from the replies you choose.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(chat)
app.command()(demo)
app.command("eval")(evaluate)
app.command()(serve)
app.command()(graph)
app.add_typer(pairs.app, name="pairs")
app.add_typer(persona.app, name="persona")
app.add_typer(memory.app, name="memory")
app.add_typer(bench.app, name="bench")


def main() -> None:
    """Run the CLI, turning the project's errors into a message and an exit code."""
    logging.basicConfig(
        level=os.environ.get("PERSONA_AGENT_LOG_LEVEL", "WARNING"),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        app()
    except PersonaAgentError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
