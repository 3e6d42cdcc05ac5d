"""Statements the user pins, adds or removes, and how each re-synthesized persona keeps to them.

A user may *pin* a statement of their persona (it stays in every later version), *add* one in
their own words ("I use metric units") or *remove* one (it stays out). `StatementEdit` records
each with when it was made; a removal also records the pairs stored at that moment, so that the
pairs stored after it are known without trusting their timestamps.

`apply_edits` turns a freshly written persona into the one that is saved:

- An offline persona (the reward model's statements): a pinned statement that maps to a feature is
  put back among the statements when the fit did not state it (the writer was held to its
  direction with `agent.archetypes.with_pinned`, so its departure from that prior is nil and
  `describe_preferences` never states it by itself). A removed statement's feature and direction
  are left out, unless the pairs stored after the removal state it again on their own
  (``restate``: the offline model fitted on those pairs alone says it, which needs at least
  `agent.statements.MIN_PAIRS_SHOWN` of them to differ on the feature and most to go its way).
- A persona an LLM wrote: its sentences that match a removed statement are dropped (`matches`:
  the same words, or nearly), unless at least `MIN_PAIRS_SHOWN` pairs were stored after the
  removal. The match is by words only: a paraphrase in other words ("values brevity" for
  "prefers short replies") is not caught.
- Either way, pinned statements the persona does not already state and added statements close it,
  under `USER_STATEMENTS`, verbatim: no model rewrites them, and the judge reads them as part of
  the persona.

The saved persona records every edit applied and what it did (`Persona.statement_edits`), which
is the provenance a persona's version history shows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.archetypes import with_pinned
from agent.offline_persona import NO_DEPARTURE, OfflinePersonaWriter, persona_text, statements_of
from agent.records import (
    JUDGE_DIRECTIONS_PROBLEM,
    Persona,
    PreferencePair,
    check_text,
    persona_problem,
    utc_now,
)
from agent.starting import archetype_statements, is_archetype_persona
from agent.statements import MIN_PAIRS_SHOWN, PreferenceStatement, describe_preferences
from agent.synthesis import PersonaSynthesizer

EditKind = Literal["pinned", "added", "removed"]
# Longest statement a user may add or pin, and the most pinned and added statements a persona keeps:
# together they keep the user's part of a persona within its 4,000 characters.
MAX_STATEMENT_CHARS = 300
MAX_KEPT_STATEMENTS = 10
MAX_PERSONA_CHARS = 4_000
USER_STATEMENTS = "The user's own statements (kept as the user wrote or pinned them):"
# Two sentences match when this share of their words is common to both (Jaccard overlap).
MATCH_OVERLAP = 0.6
_WORDS = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def normalized_words(text: str) -> list[str]:
    """Return the words of `text`, lower-cased."""
    return [word.lower() for word in _WORDS.findall(text)]


def statement_id(text: str) -> str:
    """Return the short id of a statement: a hash of its words, so case and punctuation do not matter."""
    return hashlib.sha256(" ".join(normalized_words(text)).encode("utf-8")).hexdigest()[:8]


def matches(sentence: str, statement: str) -> bool:
    """True when two statements say the same in (nearly) the same words (`MATCH_OVERLAP`)."""
    a, b = set(normalized_words(sentence)), set(normalized_words(statement))
    if not a or not b:
        return False
    return len(a & b) / len(a | b) >= MATCH_OVERLAP


def check_statement_text(text: str, *, own: bool = True) -> str:
    """Return `text` with its spacing tidied if it can stand in a persona, else raise ValueError saying why.

    Every statement is refused when empty, over `MAX_STATEMENT_CHARS` or giving the judge
    directions; one of the user's own (`own`) must also read as a taste
    (`agent.records.persona_problem`: a few words about the user or what replies are like).
    """
    if not isinstance(text, str):
        raise ValueError(f"must be text, not {type(text).__name__}")
    tidied = " ".join(text.split())
    check_text(tidied or text, max_chars=MAX_STATEMENT_CHARS)
    problem = persona_problem(tidied)
    if problem and (own or problem.startswith(JUDGE_DIRECTIONS_PROBLEM)):
        raise ValueError(problem.replace("a persona", "a statement"))
    return tidied


class StatementEdit(BaseModel):
    """One statement the user pinned, added or removed, with when and (for a removal) the pairs then."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field("", description="`statement_id` of the text; computed when absent.")
    kind: EditKind
    text: str
    feature: str | None = Field(
        None, description="The offline model's feature, where the statement maps to one."
    )
    direction: Literal["more", "less"] | None = None
    condition: Literal["technical"] | None = None
    statement: dict[str, Any] | None = Field(
        None, description="A pinned offline statement as the model stated it (`PreferenceStatement`)."
    )
    created_at: datetime = Field(default_factory=utc_now)
    pair_count: int | None = Field(None, ge=0, description="Removed: how many pairs were stored then.")
    pair_ids: tuple[str, ...] = Field((), description="Removed: the ids of the pairs stored then.")

    @model_validator(mode="after")
    def _identity(self) -> StatementEdit:
        object.__setattr__(self, "text", check_statement_text(self.text, own=self.kind == "added"))
        if not self.id:
            object.__setattr__(self, "id", statement_id(self.text))
        elif self.id != statement_id(self.text):
            raise ValueError(f"id {self.id!r} does not match the statement's text")
        if self.kind != "removed" and (self.pair_count is not None or self.pair_ids):
            raise ValueError("only a removal records the pairs stored when it was made")
        if (self.feature is None) != (self.direction is None):
            raise ValueError("feature and direction go together")
        return self

    @property
    def pin(self) -> tuple[str, Literal["more", "less"]] | None:
        """The (feature, direction) a pinned statement holds the offline model to, if it maps to one."""
        if self.kind != "pinned" or self.feature is None or self.direction is None or self.condition:
            return None
        return self.feature, self.direction

    def new_pairs(self, pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
        """The pairs of `pairs` stored after this removal."""
        before = set(self.pair_ids)
        return [pair for pair in pairs if pair.id not in before]


class ListedStatement(BaseModel):
    """A statement of a persona as `persona show` lists it, to be pinned or removed by index or id."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    origin: Literal["synthesized", "pinned", "added"]
    feature: str | None = None
    direction: Literal["more", "less"] | None = None
    condition: Literal["technical"] | None = None
    statement: dict[str, Any] | None = None


def pins_of(edits: Sequence[StatementEdit]) -> list[tuple[str, Literal["more", "less"]]]:
    """The (feature, direction) pairs that pinned statements hold the offline model to."""
    return [edit.pin for edit in edits if edit.pin is not None]


def _body(text: str) -> str:
    """The part of a persona's text its writer wrote (without the user's own statements)."""
    return text.split(USER_STATEMENTS, 1)[0].rstrip()


def llm_sentences(text: str) -> list[str]:
    """The sentences of a persona an LLM wrote, without list marks; fragments of under 3 words dropped."""
    parts = (part.strip().lstrip("-*• ").strip() for part in _SENTENCE_END.split(_body(text)))
    return [part for part in parts if len(normalized_words(part)) >= 3]


def listed_statements(persona: Persona | None, edits: Sequence[StatementEdit]) -> list[ListedStatement]:
    """Every statement of the persona, numbered as `persona show` lists them, then the user's own."""
    pinned = {edit.id for edit in edits if edit.kind == "pinned"}
    listed: list[ListedStatement] = []
    if persona is not None and persona.source == "offline":
        for item in statements_of(persona):
            listed.append(
                ListedStatement(
                    id=statement_id(item.text),
                    text=item.text,
                    origin="pinned" if statement_id(item.text) in pinned else "synthesized",
                    feature=item.feature,
                    direction=item.direction,
                    condition=item.condition,
                    statement=item.model_dump(mode="json"),
                )
            )
    elif persona is not None:
        written = (
            archetype_statements(persona) if is_archetype_persona(persona) else llm_sentences(persona.text)
        )
        for sentence in written:
            key = statement_id(sentence)
            listed.append(
                ListedStatement(id=key, text=sentence, origin="pinned" if key in pinned else "synthesized")
            )
    shown = {item.id for item in listed}
    for edit in edits:
        if edit.kind != "removed" and edit.id not in shown:
            shown.add(edit.id)
            listed.append(
                ListedStatement(
                    id=edit.id,
                    text=edit.text,
                    origin=edit.kind,
                    feature=edit.feature,
                    direction=edit.direction,
                    condition=edit.condition,
                    statement=edit.statement,
                )
            )
    return listed


def find_statement(listed: Sequence[ListedStatement], ref: str) -> ListedStatement:
    """Return the statement `ref` names: its number in the listing (1-based) or its id."""
    ref = ref.strip()
    if ref.isdigit() and 1 <= int(ref) <= len(listed):
        return listed[int(ref) - 1]
    for item in listed:
        if item.id == ref:
            return item
    known = f"1-{len(listed)} or an id" if listed else "none: the persona lists no statement yet"
    raise LookupError(f"no statement {ref[:40]!r} in the persona (statements: {known})")


Restate = Callable[[Sequence[PreferencePair]], Sequence[PreferenceStatement]]


def held_to_pins(synthesizer: PersonaSynthesizer, edits: Sequence[StatementEdit]) -> PersonaSynthesizer:
    """Return the synthesizer with the offline model held to the pinned statements' directions.

    Only the offline writer has a model to hold; SynthesizeMe is returned as it is (its persona
    keeps pinned statements as text, `apply_edits`).
    """
    pins = pins_of(edits)
    if not pins or not isinstance(synthesizer, OfflinePersonaWriter):
        return synthesizer
    return OfflinePersonaWriter(
        with_pinned(synthesizer.prior, pins),
        synthesizer.extractor,
        max_pairs=synthesizer.max_pairs,
        max_demos=synthesizer.max_demos,
        masses_of=synthesizer.masses_of,
    )


def restater(synthesizer: PersonaSynthesizer) -> Restate | None:
    """Return what the offline writer's model states about a set of pairs on their own (None for an LLM)."""
    if not isinstance(synthesizer, OfflinePersonaWriter):
        return None
    writer = synthesizer
    return lambda pairs: describe_preferences(writer.fit_user(pairs), writer.prior)


def _returns(edit: StatementEdit, pairs: Sequence[PreferencePair], restate: Restate | None) -> int:
    """How many pairs stored after a removal argue for the removed statement (0: it stays out)."""
    new = edit.new_pairs(pairs)
    if len(new) < MIN_PAIRS_SHOWN:
        return 0
    if edit.feature is None or restate is None:
        return len(new)
    for item in restate(new):
        if (item.feature, item.direction, item.condition) == (edit.feature, edit.direction, edit.condition):
            return item.n_pairs
    return 0


def _suppresses(edit: StatementEdit, statement: PreferenceStatement) -> bool:
    if edit.feature is not None:
        return (edit.feature, edit.direction, edit.condition) == (
            statement.feature,
            statement.direction,
            statement.condition,
        )
    return matches(statement.text, edit.text)


def apply_edits(
    persona: Persona,
    edits: Sequence[StatementEdit],
    pairs: Sequence[PreferencePair],
    *,
    restate: Restate | None = None,
) -> Persona:
    """Return `persona` kept to the user's edits, with what each did recorded (see the module doc).

    `pairs` are the user's stored pairs the fit read; `restate` states what the offline model
    finds in a set of pairs (for offline personas; without it a removed statement returns on the
    count of new pairs alone).
    """
    if not edits:
        return persona.model_copy(update={"statement_edits": ()})
    effects: dict[str, str] = {}
    removed = [edit for edit in edits if edit.kind == "removed"]
    backing = {edit.id: _returns(edit, pairs, restate) for edit in removed}
    held_out = [edit for edit in removed if not backing[edit.id]]
    own: list[StatementEdit] = []
    if persona.source == "offline":
        statements = [s for s in statements_of(persona) if not any(_suppresses(e, s) for e in held_out)]
        for edit in edits:
            if edit.kind == "pinned" and edit.statement is not None:
                pinned = PreferenceStatement.model_validate(edit.statement)
                same = [
                    s for s in statements if (s.feature, s.direction) == (pinned.feature, pinned.direction)
                ]
                if not same:
                    statements.append(pinned)
                effects[edit.id] = "kept among the statements"
            elif edit.kind != "removed":
                own.append(edit)
        body = persona_text(statements, len(persona.pair_ids)) if statements else NO_DEPARTURE
        update: dict[str, Any] = {
            "statements": tuple(s.model_dump(mode="json") for s in statements),
        }
    else:
        body = _body(persona.text)
        for sentence in llm_sentences(body):
            if any(matches(sentence, edit.text) for edit in held_out):
                body = body.replace(sentence, "")
        lines = [line.rstrip() for line in body.splitlines()]
        body = "\n".join(line for line in lines if line.strip() not in ("", "-", "*", "•")).strip()
        stated = llm_sentences(body)
        for edit in edits:
            if edit.kind == "pinned" and any(matches(sentence, edit.text) for sentence in stated):
                effects[edit.id] = "kept: the persona states it"
            elif edit.kind != "removed":
                own.append(edit)
        update = {}
    for edit in removed:
        effects[edit.id] = (
            f"returned: {backing[edit.id]} pairs stored after the removal back it"
            if backing[edit.id]
            else "kept out"
        )
    own = own[:MAX_KEPT_STATEMENTS]
    for edit in own:
        effects[edit.id] = f"{edit.kind}: appended as written"
    block = "\n".join([USER_STATEMENTS, *(f"- {edit.text}" for edit in own)]) if own else ""
    room = MAX_PERSONA_CHARS - len(block) - 2
    if len(body) > room:  # the writer's part gives way to the user's own words
        body = body[:room].rsplit(". ", 1)[0].rstrip(".") + "."
    text = "\n\n".join(part for part in (body, block) if part)
    provenance = tuple(
        {**edit.model_dump(mode="json", exclude={"pair_ids", "statement"}), "effect": effects[edit.id]}
        for edit in edits
        if edit.id in effects
    )
    return persona.model_copy(update={**update, "text": text, "statement_edits": provenance})


def edited_again(
    persona: Persona, edits: Sequence[StatementEdit], pairs: Sequence[PreferencePair]
) -> Persona:
    """Return the current persona kept to the edits as they stand now: the next version to save.

    A statement put back only because it was pinned stays until the next synthesis restates or
    drops it; a removal takes it out at once.
    """
    base = persona.model_copy(update={"text": _body(persona.text) or persona.text, "version": 0})
    return apply_edits(base, edits, pairs).model_copy(update={"created_at": utc_now()})
