"""Where the statements a user pinned, added or removed are kept: `StatementEdits`, a part of the store.

Each edit is one record of the edits collection, ``{user}/edit/{statement id}`` (the edit as JSON,
its kind and time in the metadata), so a statement has at most one edit: pinning a removed
statement replaces its removal, and so on. An edit made while the user has a persona is applied
at once: the current persona, kept to the edits as they now stand
(`agent.persona_edits.edited_again`), is saved as the next version. The new version is computed
and checked before anything is written, so a refused edit changes nothing; every later
synthesis keeps to the edits too (`graphs.synthesis`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from agent.errors import InvalidPreference, NotFound
from agent.formats import describe_validation_error
from agent.persona_edits import (
    MAX_KEPT_STATEMENTS,
    ListedStatement,
    StatementEdit,
    edited_again,
    find_statement,
    listed_statements,
)
from agent.records import Persona, persona_problem, utc_now
from memory.personas import PersonaVersions
from memory.scope import UserScope, micros, placeholder_vectors

# What a statement says, copied from the listing into an edit.
_SAID = {"text", "feature", "direction", "condition"}


@dataclass(frozen=True)
class EditOutcome:
    """What one edit did: the edit recorded (or taken back), and the persona version it made."""

    action: str
    statement: ListedStatement | StatementEdit
    persona: Persona | None


class StatementEdits(PersonaVersions):
    """Pin, unpin, add and remove a user's persona statements; list and export the edits."""

    def statement_edits(self, user_id: str) -> list[StatementEdit]:
        """Return the user's statement edits, oldest first."""
        scope = self._scope(user_id)
        rows = self._get(self._edits, scope)
        edits = [StatementEdit.model_validate_json(row.document) for row in rows]
        return sorted(edits, key=lambda edit: (edit.created_at, edit.id))

    def listed_statements(self, user_id: str) -> list[ListedStatement]:
        """Return the current persona's statements and the user's own, as `persona show` numbers them."""
        return listed_statements(self.current_persona(user_id), self.statement_edits(user_id))

    def _write_edits(
        self, scope: UserScope, edits: Sequence[StatementEdit], drop: Sequence[str] = ()
    ) -> None:
        self._register(scope)
        if drop:
            self._edits.delete(ids=[scope.record_id("edit", key) for key in drop])
        if edits:
            self._edits.upsert(
                ids=[scope.record_id("edit", edit.id) for edit in edits],
                embeddings=placeholder_vectors(len(edits)),
                documents=[edit.model_dump_json() for edit in edits],
                metadatas=[
                    {"user_id": scope.user_id, "kind": edit.kind, "created_us": micros(edit.created_at)}
                    for edit in edits
                ],
            )

    def _commit(
        self,
        user_id: str,
        action: str,
        subject: ListedStatement | StatementEdit,
        write: Sequence[StatementEdit],
        drop: Sequence[str] = (),
    ) -> EditOutcome:
        """Check the persona the edits make, then write the edits and save that persona."""
        scope = self._scope(user_id)
        before = self.statement_edits(user_id)
        changed = {edit.id for edit in write} | set(drop)
        after = [edit for edit in before if edit.id not in changed] + list(write)
        if sum(edit.kind != "removed" for edit in after) > MAX_KEPT_STATEMENTS:
            raise InvalidPreference(
                f"statement: you already keep {MAX_KEPT_STATEMENTS} pinned or added statements; "
                "unpin or remove one first"
            )
        current = self.current_persona(user_id)
        edited = edited_again(current, after, ()) if current is not None else None
        if edited is not None:
            problem = persona_problem(edited.text)
            if problem:
                raise InvalidPreference(f"statement: the persona with this edit {problem}")
        self._write_edits(scope, write, drop)
        saved = None
        if edited is not None:
            saved = self.save_persona(edited, self.current_demos(user_id))
        return EditOutcome(action, subject, saved)

    def _find(self, user_id: str, ref: str) -> ListedStatement:
        try:
            return find_statement(self.listed_statements(user_id), ref)
        except LookupError as exc:
            raise NotFound(str(exc)) from None

    def pin_statement(self, user_id: str, ref: str) -> EditOutcome:
        """Keep a statement of the current persona in every later version."""
        found = self._find(user_id, ref)
        if found.origin != "synthesized":
            raise InvalidPreference(f"statement {found.id}: it is already kept ({found.origin})")
        edit = self._edit(kind="pinned", statement=found.statement, **found.model_dump(include=_SAID))
        return self._commit(user_id, "pinned", edit, [edit])

    def unpin_statement(self, user_id: str, ref: str) -> EditOutcome:
        """Stop keeping a pinned statement; later syntheses state it only when the pairs do."""
        found = self._find(user_id, ref)
        if found.origin != "pinned":
            raise InvalidPreference(f"statement {found.id}: it is not pinned ({found.origin})")
        return self._commit(user_id, "unpinned", found, [], [found.id])

    def add_statement(self, user_id: str, text: str) -> EditOutcome:
        """Add a statement in the user's own words to every later persona."""
        edit = self._edit(kind="added", text=text)
        known = {item.id: item for item in self.listed_statements(user_id)}
        if edit.id in known and known[edit.id].origin == "added":
            raise InvalidPreference(f"statement {edit.id}: you added this already")
        if edit.id in known:
            raise InvalidPreference(
                f"statement {edit.id}: the persona already says this ({known[edit.id].text[:60]!r}); "
                "pin it instead"
            )
        return self._commit(user_id, "added", edit, [edit])

    def remove_statement(self, user_id: str, ref: str) -> EditOutcome:
        """Strike a statement out: an added one goes; any other stays out until new pairs argue for it."""
        found = self._find(user_id, ref)
        if found.origin == "added":
            return self._commit(user_id, "removed", found, [], [found.id])
        scope = self._scope(user_id)
        pair_ids = tuple(
            sorted(row.metadata["pair_id"] for row in self._get(self._pairs, scope, documents=False))
        )
        said = found.model_dump(include=_SAID)
        edit = self._edit(kind="removed", pair_count=len(pair_ids), pair_ids=pair_ids, **said)
        return self._commit(user_id, "removed", edit, [edit])

    @staticmethod
    def _edit(**fields: object) -> StatementEdit:
        try:
            return StatementEdit.model_validate({**fields, "created_at": utc_now()})
        except ValidationError as exc:
            raise InvalidPreference(f"statement: {describe_validation_error(exc)}") from None

    def import_statement_edits(self, user_id: str, edits: Sequence[StatementEdit]) -> int:
        """Store edits read from an export, skipping any the user already has; return how many were new."""
        scope = self._scope(user_id)
        known = {edit.id for edit in self.statement_edits(user_id)}
        new = [edit for edit in edits if edit.id not in known]
        self._write_edits(scope, new)
        return len(new)
