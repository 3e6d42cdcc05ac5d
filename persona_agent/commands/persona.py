"""`persona-agent persona`: Show a persona and its history, roll back, start, edit its statements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from persona_agent.commands.pairs import JsonOption, UserOption, open_store, print_json
from persona_agent.commands.starting import start

if TYPE_CHECKING:
    from agent.records import Persona

app = typer.Typer(
    help="Show a persona and its history, roll back, start from an archetype; pin, add or remove statements.",
    no_args_is_help=True,
)
app.command("start")(start)
StatementArgument = Annotated[
    str, typer.Argument(help="The statement's number or id, as `persona show` lists them.")
]


def _summary(persona: Persona, *, current: bool = False) -> str:
    accuracy = "-" if persona.val_accuracy is None else f"{persona.val_accuracy:.0%}"
    mark = "  (current)" if current else ""
    return (
        f"v{persona.version}  {persona.created_at:%Y-%m-%d %H:%M}  val {accuracy:>4}  "
        f"{len(persona.pair_ids)} pairs  {persona.model or '-'}{mark}"
    )


@app.command("show")
def show(
    user: UserOption,
    version: Annotated[int | None, typer.Option(help="Show this version instead of the current one.")] = None,
    offline: Annotated[
        bool, typer.Option(help="Also show what the offline reward model learned from the user's pairs.")
    ] = True,
    json_output: JsonOption = False,
) -> None:
    """Show the persona the judge uses for a user: provenance, demos, learnt statements, judge agreement."""
    from agent.errors import UnknownUser
    from agent.starting import is_archetype_persona
    from agent.statements import render_persona
    from persona_agent.factory import build_offline_parts
    from persona_agent.learnt import agreement_line, agreement_of, learnt, statement_lines
    from persona_agent.own_statements import listing_lines
    from persona_agent.settings import load_settings

    store = open_store()
    persona = store.get_persona(user, version) if version is not None else store.current_persona(user)
    if persona is None:
        raise UnknownUser(f"user {user!r} has no persona yet: it is synthesized once enough pairs are stored")
    current = store.current_persona(user)
    is_current = current is not None and current.version == persona.version
    demos = store.current_demos(user) if is_current else []
    settings = load_settings()
    view = (
        learnt(
            store,
            user,
            persona,
            lambda: build_offline_parts(settings),
            max_pairs=settings.max_pairs_per_synthesis,
        )
        if offline
        else None
    )
    agreement = view.judge_agreement if view else agreement_of(store, user)
    listed = store.listed_statements(user) if is_current else []
    if json_output:
        print_json(
            {
                "persona": persona.model_dump(mode="json"),
                "current": is_current,
                "demos": [demo.model_dump(mode="json") for demo in demos],
                "offline_persona": None
                if view is None
                else {
                    "text": render_persona(view.statements),
                    "statements": [statement.model_dump(mode="json") for statement in view.statements],
                    "statements_from": view.statements_from,
                    "n_pairs": view.n_pairs,
                },
                "judge_agreement": agreement.model_dump(mode="json"),
                "statements": [item.model_dump(mode="json", exclude={"statement"}) for item in listed],
            }
        )
        return
    typer.echo(_summary(persona, current=is_current))
    if is_archetype_persona(persona):
        typer.echo("source: a starting archetype the user chose; a persona learnt from pairs replaces it")
    if persona.baseline_val_accuracy is not None:
        typer.echo(
            f"replaced a persona scoring {persona.baseline_val_accuracy:.0%} on the same validation pairs"
        )
    typer.echo("")
    typer.echo(persona.text)
    if demos:
        typer.echo("")
        typer.echo(f"demos ({len(demos)}):")
        for demo in demos:
            typer.echo(f"  {demo.pair.id}  {' '.join(demo.pair.query.split())[:70]}")
    if view is not None:
        typer.echo("")
        if view.statements_from == "persona":
            typer.echo(f"written by the offline reward model from {view.n_pairs} pairs; its statements:")
        else:
            typer.echo(f"offline reward model (no LLM), measured on the same {view.n_pairs} pairs:")
        typer.echo("\n".join(statement_lines(view.statements)) or render_persona(view.statements))
    if listed:
        typer.echo("")
        typer.echo("statements (persona pin|unpin|remove N, persona add TEXT):")
        typer.echo("\n".join(listing_lines(listed)))
    typer.echo("")
    typer.echo(agreement_line(agreement))


@app.command("history")
def history(user: UserOption, json_output: JsonOption = False) -> None:
    """List every persona version of a user, oldest first."""
    store = open_store()
    versions = store.persona_history(user)
    current = store.current_persona(user)
    current_version = current.version if current else None
    if json_output:
        print_json(
            {
                "user_id": user,
                "current_version": current_version,
                "versions": [persona.model_dump(mode="json") for persona in versions],
            }
        )
        return
    if not versions:
        typer.echo(f"no persona versions for {user}")
    from persona_agent.own_statements import provenance_lines

    for persona in versions:
        typer.echo(_summary(persona, current=persona.version == current_version))
        for line in provenance_lines(persona):
            typer.echo(line)


@app.command("rollback")
def rollback(
    version: Annotated[int, typer.Argument(help="The version to make current again.")],
    user: UserOption,
    json_output: JsonOption = False,
) -> None:
    """Make an earlier persona version current again; later versions stay in the history."""
    store = open_store()
    persona = store.rollback(user, version)
    if json_output:
        print_json({"user_id": user, "current_version": persona.version})
    else:
        typer.echo(f"{user} now uses persona v{persona.version}")


def _edit(action: str, argument: str, user: str, json_output: bool) -> None:
    from persona_agent.own_statements import edit_statement, outcome_json, outcome_line

    outcome = edit_statement(open_store(), user, action, argument)
    if json_output:
        print_json({"user_id": user, **outcome_json(outcome)})
    else:
        typer.echo(outcome_line(outcome))


@app.command("pin")
def pin(statement: StatementArgument, user: UserOption, json_output: JsonOption = False) -> None:
    """Keep a statement of the persona in every later version, whatever the next synthesis writes."""
    _edit("pin", statement, user, json_output)


@app.command("unpin")
def unpin(statement: StatementArgument, user: UserOption, json_output: JsonOption = False) -> None:
    """Stop keeping a pinned statement: later versions state it only when the pairs do."""
    _edit("unpin", statement, user, json_output)


@app.command("add")
def add(
    text: Annotated[str, typer.Argument(help='Your statement, e.g. "I use metric units".')],
    user: UserOption,
    json_output: JsonOption = False,
) -> None:
    """Add a statement in your own words; every later persona keeps it as written."""
    _edit("add", text, user, json_output)


@app.command("remove")
def remove(statement: StatementArgument, user: UserOption, json_output: JsonOption = False) -> None:
    """Strike a statement out; it does not come back unless pairs stored after this argue for it."""
    _edit("remove", statement, user, json_output)
