"""`persona-agent memory`: Export, import or delete everything stored about a user; learn and show
the tastes the stored users share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from persona_agent.commands.pairs import JsonOption, UserOption, open_store, print_json

if TYPE_CHECKING:
    from agent.shared_tastes import SharedTastes

app = typer.Typer(
    help="Export, import or delete everything stored about a user; learn the tastes users share.",
    no_args_is_help=True,
)


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


@app.command("learn-tastes")
def learn_tastes(json_output: JsonOption = False) -> None:
    """Learn which tastes the stored users share; the offline judge then fits each user with them.

    Each user with four pairs or more is fitted on their newest pairs; tastes that several users
    hold gain prior mass for everyone else (a user's own pairs never count towards their own
    prior). Run it again as pairs arrive; until the first run every user is fitted with the
    prior's own masses.
    """
    from persona_agent.factory import build_store, learn_shared_tastes
    from persona_agent.settings import load_settings

    settings = load_settings()
    _print_tastes(learn_shared_tastes(settings, store=build_store(settings)), json_output)


@app.command("tastes")
def show_tastes(json_output: JsonOption = False) -> None:
    """Show the tastes the stored users share, as `learn-tastes` last learnt them."""
    tastes = open_store().shared_tastes()
    if tastes is None:
        if json_output:
            print_json(None)
        else:
            typer.echo("no shared tastes learnt yet: run `persona-agent memory learn-tastes`")
        return
    _print_tastes(tastes, json_output)


def _print_tastes(tastes: SharedTastes, json_output: bool) -> None:
    shared = tastes.shared()
    if json_output:
        print_json(
            {
                "n_users": tastes.n_users,
                "pseudo_users": tastes.pseudo_users,
                "learnt_at": tastes.learnt_at,
                "features_version": tastes.features_version,
                "current": tastes.current,
                "shared": [{"taste": label, "share": round(share, 4)} for label, share in shared],
            }
        )
        return
    typer.echo(
        f"shared tastes of {tastes.n_users} users (the prior's own masses count as {tastes.default_weight})"
        + (f", learnt {tastes.learnt_at}" if tastes.learnt_at else "")
    )
    if not tastes.current:
        typer.echo(f"learnt with features version {tastes.features_version}: ignored until learnt again")
    for label, share in shared:
        typer.echo(f"  {share:6.1%}  {label}")
    if not shared:
        typer.echo("  no one-feature taste is shared")
