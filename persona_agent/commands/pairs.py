"""`persona-agent pairs`: Add, import, list and delete a user's preference pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agent.records import PAIR_SOURCES

if TYPE_CHECKING:
    from agent.records import PreferencePair
    from memory.store import PreferenceStore

app = typer.Typer(help="Add, import, list and delete a user's preference pairs.", no_args_is_help=True)

UserOption = Annotated[str, typer.Option("--user", "-u", help="The user whose memory to use.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def open_store() -> PreferenceStore:
    """Build the memory store the settings describe (a Chroma server, or the local data dir)."""
    from persona_agent.factory import build_store
    from persona_agent.settings import load_settings

    return build_store(load_settings())


def print_json(value: Any) -> None:
    """Print one JSON document on stdout."""
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


def _short(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _line(pair: PreferencePair) -> str:
    source = f"{pair.source} ×{pair.weight:g}" if pair.inferred else pair.source
    return f"{pair.id}  {pair.created_at:%Y-%m-%d %H:%M}  {source:<15}  {_short(pair.query)}"


@app.command("add")
def add(
    user: UserOption,
    context: Annotated[str, typer.Option(help="The user's message that both replies answer.")],
    chosen: Annotated[str, typer.Option(help="The reply the user preferred.")],
    rejected: Annotated[str, typer.Option(help="The reply the user did not prefer.")],
    json_output: JsonOption = False,
) -> None:
    """Store one preference: which of two replies to a message the user chose."""
    from agent.formats import pair_from_record

    store = open_store()
    record = {"context": [{"role": "user", "content": context}], "chosen": chosen, "rejected": rejected}
    pair = pair_from_record(record, user_id=user, source="explicit", limits=store.limits)
    added = store.add_pairs(user, [pair])
    if json_output:
        print_json({"user_id": user, "id": pair.id, "added": bool(added), "count": store.count_pairs(user)})
    else:
        typer.echo(f"{'stored' if added else 'already stored'}: {pair.id} ({store.count_pairs(user)} pairs)")


@app.command("import")
def import_pairs(
    path: Annotated[Path, typer.Argument(help="A JSONL file of PersonalRewardBench records.", exists=True)],
    user: Annotated[
        str | None,
        typer.Option("--user", "-u", help="Store every pair for this user (default: each record's)."),
    ] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Skip unusable records instead of failing.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Import pairs from a JSONL file; without --skip-invalid one bad record stores nothing."""
    from agent.formats import read_pairs

    store = open_store()
    pairs = read_pairs(path, user_id=user, source="import", limits=store.limits, skip_invalid=skip_invalid)
    by_user: dict[str, list[PreferencePair]] = {}
    for pair in pairs:
        by_user.setdefault(pair.user_id, []).append(pair)
    added = {owner: len(store.add_pairs(owner, owned)) for owner, owned in sorted(by_user.items())}
    if json_output:
        print_json({"read": len(pairs), "added": added})
    else:
        typer.echo(f"read {len(pairs)} pairs; stored {sum(added.values())} new for {len(added)} user(s)")


@app.command("list")
def list_pairs(
    user: UserOption,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many of the newest pairs.")] = 0,
    limit: Annotated[int, typer.Option(min=0, help="Show at most this many pairs.")] = 20,
    source: Annotated[
        str | None,
        typer.Option(
            help=f"Only pairs of this source ({', '.join(PAIR_SOURCES)}); those inferred from an edit "
            "or a regenerate weigh less than picks.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """List a user's pairs, newest first."""
    from agent.formats import pair_to_record

    if source is not None and source not in PAIR_SOURCES:
        raise typer.BadParameter(f"must be one of {', '.join(PAIR_SOURCES)}", param_hint="--source")
    store = open_store()
    pairs = store.list_pairs(user, offset=offset, limit=limit, source=source)
    if json_output:
        print_json(
            {"user_id": user, "total": store.count_pairs(user), "pairs": [pair_to_record(p) for p in pairs]}
        )
        return
    for pair in pairs:
        typer.echo(_line(pair))
    typer.echo(f"{len(pairs)} shown of {store.count_pairs(user)}")


@app.command("delete")
def delete(
    pair_id: Annotated[str, typer.Argument(help="The id of the pair (see `pairs list`).")],
    user: UserOption,
    json_output: JsonOption = False,
) -> None:
    """Delete one of a user's pairs."""
    store = open_store()
    store.delete_pair(user, pair_id)
    if json_output:
        print_json({"user_id": user, "deleted": pair_id})
    else:
        typer.echo(f"deleted {pair_id}")
