"""The statements a user pins, adds or removes, in one shape for the CLI, chat and the memory routes.

`edit_statement` runs one edit (``pin``, ``unpin``, ``add``, ``remove``) on the store; the line
helpers write the numbered listing that `persona show` and ``/persona`` print (the numbers and
ids the edits take) and each persona version's provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.errors import InvalidPreference

if TYPE_CHECKING:
    from agent.persona_edits import ListedStatement
    from agent.records import Persona
    from memory.statement_edits import EditOutcome
    from memory.store import PreferenceStore

ACTIONS = ("pin", "unpin", "add", "remove")


def edit_statement(store: PreferenceStore, user_id: str, action: str, argument: str) -> EditOutcome:
    """Pin, unpin or remove the statement `argument` names (number or id), or add `argument` as text."""
    if action not in ACTIONS:
        raise InvalidPreference(f"action: must be one of {', '.join(ACTIONS)}, got {action[:20]!r}")
    if not isinstance(argument, str) or not argument.strip():
        what = "the statement's text" if action == "add" else "a statement's number or id (persona show)"
        raise InvalidPreference(f"statement: give {what}")
    if action == "add":
        return store.add_statement(user_id, argument)
    edit = {"pin": store.pin_statement, "unpin": store.unpin_statement, "remove": store.remove_statement}
    return edit[action](user_id, argument)


def outcome_json(outcome: EditOutcome) -> dict[str, Any]:
    """Return an edit's outcome as plain JSON types."""
    persona = outcome.persona
    return {
        "action": outcome.action,
        "statement": outcome.statement.model_dump(mode="json", exclude={"pair_ids", "statement"}),
        "persona_version": persona.version if persona else None,
    }


def outcome_line(outcome: EditOutcome) -> str:
    """Say in one line what an edit did."""
    statement = outcome.statement
    done = f"{outcome.action.capitalize()} {statement.id} {statement.text!r}"
    if outcome.persona is None:
        return f"{done}; the first persona will keep to it."
    return f"{done}; persona v{outcome.persona.version} keeps to it, and so will every re-synthesis."


def listing_lines(listed: Sequence[ListedStatement]) -> list[str]:
    """Number the statements as `persona pin|unpin|remove` address them."""
    marks = {"pinned": "  [pinned]", "added": "  [yours]", "synthesized": ""}
    return [
        f"{number:>3}  {item.id}  {item.text}{marks[item.origin]}" for number, item in enumerate(listed, 1)
    ]


def provenance_lines(persona: Persona) -> list[str]:
    """Say which statements the user pinned, added or removed that a persona version keeps to."""
    return [
        f"      {item.get('kind')} {item.get('id')} {str(item.get('text'))!r} "
        f"({str(item.get('created_at', ''))[:16].replace('T', ' ')}): {item.get('effect')}"
        for item in persona.statement_edits
    ]
