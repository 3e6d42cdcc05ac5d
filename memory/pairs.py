"""Where a user's preference pairs are stored: `PairRecords`, the pairs part of the store.

A pair's record in the pairs collection holds the pair as JSON, its retrieval vector
(`memory.retrieval.retrieval_text`) and, in its metadata, when it was made, its source and what
the default judge made of it (`ANNOTATION_KEYS`, written by the synthesis). Pair ids are content
hashes, so storing the same pair again adds nothing. Every change to a user's pairs renews their
pairs revision, so no store keeps using an outdated copy of their vectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from pydantic import ValidationError

from agent.errors import InvalidPreference, NotFound
from agent.formats import describe_validation_error
from agent.records import PreferencePair
from memory.retrieval import retrieval_text
from memory.scope import Row, ScopedStore, UserScope, micros, pair_of
from memory.vector_cache import UserVectors, unit_rows

ANNOTATION_KEYS = ("default_judge_correct", "has_verified_reasoning", "reasoning")


class PairRecords(ScopedStore):
    """Store, list, annotate and delete a user's pairs."""

    def _validated(self, scope: UserScope, pairs: Iterable[PreferencePair]) -> list[PreferencePair]:
        checked: dict[str, PreferencePair] = {}
        for position, pair in enumerate(pairs, start=1):
            if not isinstance(pair, PreferencePair):
                raise InvalidPreference(
                    f"pair {position}: must be a PreferencePair, not {type(pair).__name__}"
                )
            if pair.user_id != scope.user_id:
                raise InvalidPreference(
                    f"pair {position}: belongs to user {pair.user_id!r}, not {scope.user_id!r}"
                )
            try:  # again, under this store's limits (the pair may have been built under others)
                pair = PreferencePair.model_validate(pair.model_dump(), context={"limits": self.limits})
            except ValidationError as exc:
                raise InvalidPreference(f"pair {position}: {describe_validation_error(exc)}") from None
            checked.setdefault(pair.id, pair)
        return list(checked.values())

    def add_pairs(self, user_id: str, pairs: Sequence[PreferencePair]) -> list[str]:
        """Store pairs for a user; return the ids newly stored (pairs already there are skipped)."""
        scope = self._scope(user_id)
        batch = self._validated(scope, pairs)
        if not batch:
            return []
        existing = {
            row.metadata["pair_id"]
            for row in self._get(self._pairs, scope, keys=[p.id for p in batch], documents=False)
        }
        new = [pair for pair in batch if pair.id not in existing]
        if not new:
            return []
        before = self._register(scope)
        added: list[np.ndarray] = []
        try:
            for start in range(0, len(new), self._batch):
                chunk = new[start : start + self._batch]
                vectors = self._embeddings.embed([retrieval_text(pair.context) for pair in chunk])
                self._add_pair_records(scope, chunk, vectors)
                added.append(vectors)
        except BaseException:
            self._pairs_changed(scope)  # chunks written before the failure must be seen
            raise
        after = self._renew_pairs_revision(scope)
        if self._local:
            flags = np.zeros(len(new), dtype=bool)
            created = np.array([micros(pair.created_at) for pair in new], dtype=np.int64)
            rows = UserVectors(
                tuple(pair.id for pair in new), unit_rows(np.vstack(added)), flags, flags, created
            )
            self._vectors.advance(scope.user_id, before, after, rows)
        else:
            self._vectors.drop(scope.user_id)
        return [pair.id for pair in new]

    def _add_pair_records(
        self, scope: UserScope, chunk: Sequence[PreferencePair], vectors: np.ndarray
    ) -> None:
        self._pairs.add(
            ids=[scope.record_id(pair.id) for pair in chunk],
            embeddings=vectors,
            documents=[pair.model_dump_json() for pair in chunk],
            metadatas=[
                {
                    "user_id": scope.user_id,
                    "pair_id": pair.id,
                    "created_at": pair.created_at.isoformat(),
                    "created_us": micros(pair.created_at),
                    "source": pair.source,
                    "has_verified_reasoning": False,
                }
                for pair in chunk
            ],
        )

    @staticmethod
    def _newest_first(rows: list[Row]) -> list[Row]:
        return sorted(
            rows, key=lambda row: (row.metadata["created_us"], row.metadata["pair_id"]), reverse=True
        )

    def count_pairs(self, user_id: str) -> int:
        """Return how many pairs the user has stored."""
        scope = self._scope(user_id)
        return len(self._get(self._pairs, scope, documents=False))

    def list_pairs(
        self, user_id: str, *, offset: int = 0, limit: int = 50, source: str | None = None
    ) -> list[PreferencePair]:
        """Return a page of the user's pairs, newest first, optionally of one source only."""
        if offset < 0 or limit < 0:
            raise InvalidPreference("offset and limit must not be negative")
        scope = self._scope(user_id)
        page = self._newest_first(self._get(self._pairs, scope, documents=False, source=source))
        keys = [row.metadata["pair_id"] for row in page[offset : offset + limit]]
        loaded = {row.metadata["pair_id"]: pair_of(row) for row in self._get(self._pairs, scope, keys=keys)}
        return [loaded[key] for key in keys if key in loaded]

    def newest_pairs(self, user_id: str, n: int) -> list[PreferencePair]:
        """Return the user's `n` most recent pairs, newest first."""
        return self.list_pairs(user_id, limit=n)

    def annotate_pairs(self, user_id: str, annotations: Mapping[str, Mapping[str, Any]]) -> None:
        """Record what the default judge made of pairs: `default_judge_correct`, `has_verified_reasoning`.

        An optional ``reasoning`` string keeps the verified reasoning text, which retrieved demos
        then carry. A value of None clears a key. Unknown pair ids fail the whole call (NotFound).
        """
        scope = self._scope(user_id)
        updates: dict[str, dict[str, Any]] = {}
        for pair_id, values in annotations.items():
            unknown = set(values) - set(ANNOTATION_KEYS)
            if unknown:
                raise InvalidPreference(f"pair {pair_id!r}: unknown annotation keys {sorted(unknown)}")
            for key in ("default_judge_correct", "has_verified_reasoning"):
                if key in values and not isinstance(values[key], bool | None):
                    raise InvalidPreference(f"pair {pair_id!r}: {key} must be true, false or null")
            if values.get("reasoning") is not None and not isinstance(values["reasoning"], str):
                raise InvalidPreference(f"pair {pair_id!r}: reasoning must be a string")
            update = dict(values)
            if "has_verified_reasoning" in update and update["has_verified_reasoning"] is None:
                update["has_verified_reasoning"] = False
            updates[pair_id] = update
        if not updates:
            return
        found = {
            row.metadata["pair_id"]
            for row in self._get(self._pairs, scope, keys=list(updates), documents=False)
        }
        missing = sorted(set(updates) - found)
        if missing:
            raise NotFound(f"user {user_id!r} has no pairs {missing[:5]}")
        ids = [scope.record_id(pair_id) for pair_id in updates]
        try:
            for start in range(0, len(ids), self._batch):
                self._pairs.update(
                    ids=ids[start : start + self._batch],
                    metadatas=cast(Any, list(updates.values())[start : start + self._batch]),
                )
        finally:
            self._pairs_changed(scope)

    def annotations(self, user_id: str) -> dict[str, dict[str, Any]]:
        """Return every annotation stored for the user's pairs, by pair id."""
        scope = self._scope(user_id)
        return {
            row.metadata["pair_id"]: {
                key: row.metadata[key] for key in ANNOTATION_KEYS if key in row.metadata
            }
            for row in self._get(self._pairs, scope, documents=False)
        }

    def delete_pair(self, user_id: str, pair_id: str) -> None:
        """Delete one of the user's pairs, or raise NotFound."""
        scope = self._scope(user_id)
        if not self._get(self._pairs, scope, keys=[pair_id], documents=False):
            raise NotFound(f"user {user_id!r} has no pair {pair_id!r}")
        try:
            self._pairs.delete(ids=[scope.record_id(pair_id)])
        finally:
            self._pairs_changed(scope)
