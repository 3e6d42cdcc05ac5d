"""Where pairs, personas and demos are stored: `PreferenceStore`, per user, over Chroma.

`PreferenceStore` is the one class callers use. Its parts live beside it, one module each:

- `memory.scope`: the four collections seen one user at a time (`ScopedStore`, the base of
  every part), and the user's record with their current persona and pairs revision;
- `memory.pairs`: storing, listing, annotating and deleting pairs (`PairRecords`);
- `memory.retrieval`: which stored pairs a new conversation recalls as demos (`PairRetrieval`);
- `memory.personas`: append-only persona versions and their demos (`PersonaVersions`);
- `memory.leases`: one synthesis of a user at a time across processes (`Leases`);
- `memory.statement_edits`: the statements the user pinned, added or removed (`StatementEdits`).
- `memory.starts`: the archetype a user chose to start from (`StartingChoices`).
- `memory.shared_tastes`: the tastes the deployment's users share (`SharedTasteRecords`).

This module adds what spans them: counting a user's pairs against their current persona (every
chat turn asks), and deleting, exporting and importing everything about a user.

Chroma's client is synchronous; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agent.errors import InvalidPreference, UnknownUser
from agent.formats import describe_validation_error, pair_from_record, pair_to_record, parse_jsonl
from agent.persona_edits import StatementEdit
from agent.records import Demo, Persona, check_persona_text
from memory.leases import Leases
from memory.pairs import ANNOTATION_KEYS, PairRecords
from memory.retrieval import PairRetrieval
from memory.scope import micros, pair_of
from memory.shared_tastes import SharedTasteRecords
from memory.starts import StartChoice, StartingChoices
from memory.statement_edits import StatementEdits
from memory.vector_cache import LOCAL_REVISIONS


@dataclass(frozen=True)
class PairCounts:
    """How many pairs a user has: in all, and made after their current `persona` (all, without one)."""

    total: int
    since_persona: int
    persona: Persona | None


class PreferenceStore(
    PairRecords, PairRetrieval, StatementEdits, Leases, StartingChoices, SharedTasteRecords
):
    """Per-user memory of preference pairs, persona versions and demos, in Chroma."""

    def pair_counts(self, user_id: str) -> PairCounts:
        """Count the user's pairs, in all and since the current persona (the chat turn's check)."""
        scope = self._scope(user_id)
        record = self._user_record(scope)  # one read for the persona pointer and the revision
        persona = self._current_persona(scope, record)
        stored = self._user_vectors(scope, record)
        since = (
            len(stored) if persona is None else int((stored.created_us > micros(persona.created_at)).sum())
        )
        return PairCounts(total=len(stored), since_persona=since, persona=persona)

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Delete everything stored about a user; return how many records of each kind went."""
        scope = self._scope(user_id)
        self._vectors.drop(scope.user_id)
        if self._local:  # over HTTP the revision goes with the user's record
            LOCAL_REVISIONS.renew(self._revision_key(scope))
        counts = {}
        for name, collection in self.collections.items():
            ids = [row.id for row in self._get(collection, scope, documents=False)]
            self._delete_ids(collection, ids)
            counts[name] = len(ids)
        self._forget_shared_taste(scope.user_id)
        return counts

    def export_user(self, user_id: str) -> str:
        """Return everything about a user as JSONL: pairs, persona versions, the start, statement
        edits, and their posterior in the shared tastes (`memory.shared_tastes`; not imported)."""
        scope = self._scope(user_id)
        rows = self._get(self._pairs, scope)
        personas = self.persona_history(user_id)
        edits = self.statement_edits(user_id)
        if not rows and not personas and not edits:
            raise UnknownUser(f"nothing is stored for user {user_id!r}")
        current = self._current_version(scope)
        lines = []
        for row in sorted(rows, key=lambda row: (row.metadata["created_us"], row.metadata["pair_id"])):
            record = pair_to_record(pair_of(row))
            notes = {key: row.metadata[key] for key in ANNOTATION_KEYS if key in row.metadata}
            if notes:
                record["annotations"] = notes
            lines.append(json.dumps(record, ensure_ascii=False))
        for persona in personas:
            demo_rows = self._get(self._demos, scope, version=persona.version)
            demos = [
                json.loads(row.document)
                for row in sorted(demo_rows, key=lambda row: row.metadata["position"])
            ]
            line = {
                "kind": "persona",
                "current": persona.version == current,
                "persona": persona.model_dump(mode="json"),
                "demos": demos,
            }
            lines.append(json.dumps(line, ensure_ascii=False))
        start = self.starting_choice(user_id)
        if start is not None:
            lines.append(json.dumps({"kind": "start", **start.to_json()}))
        for edit in edits:
            record = {"kind": "statement_edit", "edit": edit.model_dump(mode="json")}
            lines.append(json.dumps(record, ensure_ascii=False))
        shared = self._shared_taste_of(scope.user_id)
        if shared is not None:
            lines.append(json.dumps({"kind": "shared_taste", **shared}))
        return "\n".join(lines) + "\n"

    def import_user(self, jsonl_text: str, *, user_id: str | None = None) -> dict[str, int]:
        """Load an export (or plain PersonalRewardBench pairs) for one user; validate all, then write.

        `user_id` overrides the owner named in the records. Pairs already stored are skipped;
        persona versions are appended after the user's own, skipping any with the same text and
        creation time as one already there; statement edits the user has already are skipped.
        Returns counts of pairs, personas and statement edits added.
        """
        records = list(parse_jsonl(jsonl_text))
        pair_records = [record for record in records if not (isinstance(record, dict) and "kind" in record)]
        edit_records = [
            record
            for record in records
            if isinstance(record, dict) and record.get("kind") == "statement_edit"
        ]
        persona_records = [
            record
            for record in records
            if isinstance(record, dict) and "kind" in record and record["kind"] != "statement_edit"
        ]
        start_records = [record for record in persona_records if record["kind"] == "start"]
        # the user's share of the shared tastes is derived: `memory learn-tastes` learns it again
        persona_records = [
            record for record in persona_records if record["kind"] not in ("start", "shared_taste")
        ]
        owners = (
            {user_id}
            if user_id
            else {record.get("user_id") for record in records if isinstance(record, dict)}
        )
        owners |= {record.get("persona", {}).get("user_id") for record in persona_records if not user_id}
        owners.discard(None)
        if len(owners) != 1:
            raise InvalidPreference(
                f"the file must be about exactly one user, found {sorted(map(str, owners))}"
            )
        owner = str(owners.pop())
        scope = self._scope(owner)
        pairs, notes = [], {}
        for position, record in enumerate(pair_records, start=1):
            try:
                pair = pair_from_record(record, user_id=owner, limits=self.limits)
            except InvalidPreference as exc:
                raise InvalidPreference(f"record {position}: {exc}") from None
            pairs.append(pair)
            if isinstance(record.get("annotations"), dict):
                notes[pair.id] = {k: v for k, v in record["annotations"].items() if k in ANNOTATION_KEYS}
        versions: list[tuple[Persona, list[Demo], bool]] = []
        for position, record in enumerate(persona_records, start=1):
            try:
                if record["kind"] != "persona":
                    raise ValueError(f"unknown kind {record['kind']!r}")
                persona = Persona.model_validate({**record["persona"], "user_id": owner})
                check_persona_text(persona.text)  # refused before any record of the import is stored
                demos = [
                    Demo.model_validate(
                        {**demo, "pair": {**demo["pair"], "user_id": owner}}, context={"limits": self.limits}
                    )
                    for demo in record.get("demos", [])
                ]
            except (ValidationError, ValueError, KeyError, TypeError) as exc:
                message = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
                raise InvalidPreference(f"persona record {position}: {message}") from None
            versions.append((persona, demos, bool(record.get("current"))))
        edits = []
        for position, record in enumerate(edit_records, start=1):
            try:
                edits.append(StatementEdit.model_validate(record.get("edit")))
            except ValidationError as exc:
                raise InvalidPreference(
                    f"statement edit {position}: {describe_validation_error(exc)}"
                ) from None
        start = _start_of(start_records)
        added = self.add_pairs(owner, pairs)
        if notes:
            self.annotate_pairs(owner, notes)
        known = {(persona.text, persona.created_at) for persona in self.persona_history(owner)}
        imported = 0
        current: Persona | None = None
        for persona, demos, is_current in sorted(versions, key=lambda item: item[0].version):
            if (persona.text, persona.created_at) in known:
                continue
            stored = self.save_persona(persona, demos)
            imported += 1
            if is_current:
                current = stored
        if current is not None and self._current_version(scope) != current.version:
            self._set_current(scope, current.version)
        if start is not None:
            self.record_start(owner, start.archetype, start.chosen_at)
        counts = {"pairs": len(added), "personas": imported}
        if edits:
            counts["statement_edits"] = self.import_statement_edits(owner, edits)
        return counts


def _start_of(records: list[dict[str, Any]]) -> StartChoice | None:
    """Validate an export's starting-archetype line (the last one counts), or None without one."""
    if not records:
        return None
    record = records[-1]
    archetype, chosen_at = record.get("archetype"), record.get("chosen_at")
    if not isinstance(archetype, str) or not archetype.strip() or len(archetype) > 64:
        raise InvalidPreference("start record: archetype must be a key of 1-64 characters")
    try:
        when = datetime.fromisoformat(str(chosen_at))
    except ValueError:
        raise InvalidPreference(f"start record: chosen_at {str(chosen_at)[:40]!r}: not an ISO time") from None
    return StartChoice(archetype, when if when.tzinfo else when.replace(tzinfo=UTC))
