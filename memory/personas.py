"""Where a user's personas are stored: `PersonaVersions`, the persona part of the store.

Persona versions are append-only. Without transactions, a version number is claimed by adding
the record ``{user}/v{n}`` with a random token; Chroma ignores an add whose id exists, so reading
the record back tells whether this writer won, and a loser tries ``n+1``. The record is marked
complete only after the version's demos are written, and the user's current-version pointer moves
last, so readers never see a half-written version. Claims left incomplete (a crash) for longer
than ``stale_write_s`` are deleted, with their demos, at the start of the next save.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from agent.errors import InvalidPreference, NotFound, PersonaRejected
from agent.records import Demo, Persona, persona_problem
from memory.scope import Row, ScopedStore, UserScope, micros, placeholder_vectors


def _version_key(version: int) -> str:
    return f"v{version:010d}"


class PersonaVersions(ScopedStore):
    """Save, read and roll back a user's persona versions and the demos saved with each."""

    def _drop_stale_writes(self, scope: UserScope) -> None:
        cutoff = time.time_ns() // 1_000 - int(self.stale_write_s * 1_000_000)
        for row in self._get(self._personas, scope, documents=False, complete=False):
            if row.metadata["claimed_us"] <= cutoff:
                self._demos.delete(where=scope.where(version=row.metadata["version"]))
                self._personas.delete(ids=[row.id])

    def _claim_version(self, scope: UserScope) -> int:
        taken = [row.metadata["version"] for row in self._get(self._personas, scope, documents=False)]
        version = max(taken, default=0) + 1
        token = uuid.uuid4().hex
        for _ in range(1000):
            record_id = scope.record_id(_version_key(version))
            self._personas.add(
                ids=[record_id],
                embeddings=placeholder_vectors(1),
                documents=[""],
                metadatas=[
                    {
                        "user_id": scope.user_id,
                        "version": version,
                        "complete": False,
                        "claim": token,
                        "claimed_us": time.time_ns() // 1_000,
                    }
                ],
            )
            winner = self._get(self._personas, scope, keys=[_version_key(version)], documents=False)
            if winner and winner[0].metadata.get("claim") == token:
                # Demos of an earlier, cleaned-up claim of this number must not leak in.
                self._demos.delete(where=scope.where(version=version))
                return version
            version += 1
        raise RuntimeError(f"could not claim a persona version for {scope.user_id!r}")

    def save_persona(self, persona: Persona, demos: Sequence[Demo] = ()) -> Persona:
        """Store a persona as the user's next version with its demos, and make it current.

        A text that does not describe a taste (`agent.records.persona_problem`) is refused with
        `PersonaRejected`; nothing is stored.
        """
        problem = persona_problem(persona.text)
        if problem:
            raise PersonaRejected(f"persona text {problem}")
        scope = self._scope(persona.user_id)
        for position, demo in enumerate(demos, start=1):
            if demo.pair.user_id != scope.user_id:
                raise InvalidPreference(f"demo {position}: its pair belongs to {demo.pair.user_id!r}")
        self._register(scope)
        self._drop_stale_writes(scope)
        version = self._claim_version(scope)
        stored = persona.model_copy(update={"version": version})
        key = _version_key(version)
        if demos:
            self._demos.add(
                ids=[scope.record_id(key, f"d{position:04d}") for position in range(len(demos))],
                embeddings=placeholder_vectors(len(demos)),
                documents=[demo.model_dump_json() for demo in demos],
                metadatas=[
                    {"user_id": scope.user_id, "version": version, "position": position}
                    for position in range(len(demos))
                ],
            )
        self._personas.update(
            ids=[scope.record_id(key)],
            embeddings=placeholder_vectors(1),
            documents=[stored.model_dump_json()],
            metadatas=[{"complete": True, "created_us": micros(stored.created_at)}],
        )
        self._set_current(scope, version)
        return stored

    def _set_current(self, scope: UserScope, version: int) -> None:
        self._users.upsert(
            ids=[scope.record_id("user")],
            embeddings=placeholder_vectors(1),
            metadatas=[{"user_id": scope.user_id, "current_version": version}],
        )

    def _current_version(self, scope: UserScope) -> int:
        return int(self._user_record(scope).get("current_version", 0))

    @staticmethod
    def _persona(row: Row) -> Persona:
        return Persona.model_validate_json(row.document)

    def _persona_row(self, scope: UserScope, version: int) -> Row | None:
        rows = self._get(self._personas, scope, keys=[_version_key(version)])
        return rows[0] if rows and rows[0].metadata.get("complete") is True else None

    def current_persona(self, user_id: str) -> Persona | None:
        """Return the user's current persona, or None when none was saved."""
        scope = self._scope(user_id)
        return self._current_persona(scope, self._user_record(scope))

    def _current_persona(self, scope: UserScope, record: Mapping[str, Any]) -> Persona | None:
        version = int(record.get("current_version", 0))
        row = self._persona_row(scope, version) if version else None
        return self._persona(row) if row else None

    def persona_history(self, user_id: str) -> list[Persona]:
        """Return every complete persona version of the user, oldest first."""
        scope = self._scope(user_id)
        rows = self._get(self._personas, scope, complete=True)
        return sorted((self._persona(row) for row in rows), key=lambda persona: persona.version)

    def get_persona(self, user_id: str, version: int) -> Persona:
        """Return one persona version of the user, or raise NotFound."""
        scope = self._scope(user_id)
        row = self._persona_row(scope, version)
        if row is None:
            raise NotFound(f"user {user_id!r} has no persona version {version}")
        return self._persona(row)

    def rollback(self, user_id: str, version: int) -> Persona:
        """Make an earlier (or any stored) persona version current again; the history is kept."""
        persona = self.get_persona(user_id, version)
        self._set_current(self._scope(user_id), version)
        return persona

    def current_demos(self, user_id: str) -> list[Demo]:
        """Return the demos saved with the user's current persona, in their saved order."""
        scope = self._scope(user_id)
        version = self._current_version(scope)
        if not version:
            return []
        rows = sorted(
            self._get(self._demos, scope, version=version), key=lambda row: row.metadata["position"]
        )
        return [Demo.model_validate_json(row.document) for row in rows]
