"""Where a user's chosen starting archetype is kept: `StartingChoices`, a part of the store.

The choice lives on the user's record (beside their current persona version), so it survives
restarts, goes with `PreferenceStore.export_user` / `import_user` and is deleted with the user.
The offline judge reads it each turn to start the user's model from the archetype.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from memory.scope import ScopedStore, micros, placeholder_vectors

_KEY = "start_archetype"
_WHEN = "start_chosen_us"


@dataclass(frozen=True)
class StartChoice:
    """The archetype a user chose to start from, and when."""

    archetype: str
    chosen_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Return the choice as plain JSON types (as exported)."""
        return {"archetype": self.archetype, "chosen_at": self.chosen_at.isoformat()}


class StartingChoices(ScopedStore):
    """Remember which archetype a user chose to start from."""

    def record_start(self, user_id: str, archetype: str, chosen_at: datetime) -> StartChoice:
        """Store the user's starting archetype (replacing an earlier choice)."""
        scope = self._scope(user_id)
        self._register(scope)
        self._users.upsert(  # upsert merges metadata: the current-version pointer stays
            ids=[scope.record_id("user")],
            embeddings=placeholder_vectors(1),
            metadatas=[{"user_id": scope.user_id, _KEY: archetype, _WHEN: micros(chosen_at)}],
        )
        return StartChoice(archetype, chosen_at)

    def starting_choice(self, user_id: str) -> StartChoice | None:
        """Return the archetype the user chose to start from, or None."""
        record = self._user_record(self._scope(user_id))
        if not record.get(_KEY):
            return None
        chosen_at = datetime.fromtimestamp(int(record.get(_WHEN, 0)) / 1_000_000, tz=UTC)
        return StartChoice(str(record[_KEY]), chosen_at)
