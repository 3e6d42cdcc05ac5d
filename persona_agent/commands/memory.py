"""`persona-agent memory`: Export, import or delete everything stored about a user."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persona_agent.commands.pairs import JsonOption, UserOption, open_store, print_json

app = typer.Typer(help="Export, import or delete everything stored about a user.", no_args_is_help=True)


@app.command("export")
def export(
    user: UserOption,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Export a user's pairs, persona versions and demos as JSONL."""
    store = open_store()
    text = store.export_user(user)
    lines = text.count("\n")
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    if json_output:
        print_json({"user_id": user, "output": str(output), "lines": lines})
    else:
        typer.echo(f"wrote {lines} records about {user} to {output}")


@app.command("import")
def import_memory(
    path: Annotated[Path, typer.Argument(help="A file written by `memory export` (or plain pair records).")],
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Import as this user (default: the file's user).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Import a user's memory; the whole file is checked before anything is stored."""
    from agent.errors import InvalidPreference

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidPreference(f"{path}: {exc}") from None
    counts = open_store().import_user(text, user_id=user)
    if json_output:
        print_json(counts)
    else:
        typer.echo(f"imported {counts['pairs']} new pairs and {counts['personas']} persona versions")


@app.command("delete")
def delete(
    user: UserOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Delete everything stored about a user: pairs, persona versions and demos."""
    if not yes:
        typer.confirm(f"Delete everything stored about {user}?", abort=True)
    counts = open_store().delete_user(user)
    if json_output:
        print_json({"user_id": user, "deleted": counts})
    else:
        typer.echo(
            f"deleted {counts['pairs']} pairs, {counts['personas']} persona versions "
            f"and {counts['demos']} demos of {user}"
        )
