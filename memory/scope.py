"""The store's Chroma collections seen one user at a time: `ScopedStore`, the base of `PreferenceStore`.

Five collections (``{prefix}_pairs``, ``_personas``, ``_demos``, ``_users``, ``_edits``) hold every record;
each record's metadata carries its ``user_id`` and its Chroma id starts with ``"{user_id}/"``
(user ids cannot contain ``/``). `UserScope` is the one place that builds ``where`` filters and
record ids, and `ScopedStore._get` drops anything Chroma returned that is not the user's.

Each user's record in the users collection holds their current persona version and, on a Chroma
server, their *pairs revision*: a token renewed after every change to their pairs, which tells
whether the in-process copy of their vectors (`memory.vector_cache`) is still current. With
Chroma in this process no other process writes, so revisions stay in this process
(`LOCAL_REVISIONS`) and cost no write.

Chroma's client is synchronous; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from agent.embedding import CachedEmbedder
from agent.errors import InvalidPreference
from agent.records import DEFAULT_LIMITS, STORED_LIMITS, Limits, PreferencePair, check_user_id
from memory.chroma import check_collection_name, is_in_process, read_retrying
from memory.vector_cache import LOCAL_REVISIONS, VectorCache

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection


def placeholder_vectors(count: int) -> np.ndarray:
    """Return vectors for records looked up by id and filter only (personas, demos, users)."""
    return np.ones((count, 1), dtype=np.float32)


def micros(moment: datetime) -> int:
    """Return a moment as whole microseconds since the epoch (how creation times are filtered)."""
    return int(moment.timestamp() * 1_000_000)


@dataclass(frozen=True)
class UserScope:
    """One user's view of the collections: every filter and record id is built here."""

    user_id: str

    def where(self, **conditions: Any) -> dict[str, Any]:
        """Return a Chroma `where` filter confined to this user, plus equality/operator conditions."""
        clauses: list[dict[str, Any]] = [{"user_id": self.user_id}]
        clauses += [{key: value} for key, value in conditions.items() if value is not None]
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def record_id(self, *parts: str) -> str:
        """Return the Chroma id of one of this user's records."""
        return "/".join((self.user_id, *parts))

    def owns(self, metadata: Mapping[str, Any] | None) -> bool:
        """True when a record Chroma returned belongs to this user."""
        return metadata is not None and metadata.get("user_id") == self.user_id


@dataclass(frozen=True)
class Row:
    """One record as Chroma returned it."""

    id: str
    document: str
    metadata: dict[str, Any]
    embedding: Any = None


def pair_of(row: Row) -> PreferencePair:
    """Return the pair a pairs-collection record holds."""
    return PreferencePair.model_validate_json(row.document, context={"limits": STORED_LIMITS})


class ScopedStore:
    """The collections, the embedder and the vector copy that every part of the store shares."""

    def __init__(
        self,
        client: ClientAPI,
        embeddings: Any,
        *,
        limits: Limits = DEFAULT_LIMITS,
        prefix: str = "persona_agent",
        cache_size: int = 8192,
        cached_vectors: int = 200_000,
        stale_write_s: float = 300.0,
        lease_s: float = 120.0,
    ) -> None:
        self._client = client
        self._embeddings = (
            embeddings
            if isinstance(embeddings, CachedEmbedder)
            else CachedEmbedder(embeddings, max_items=cache_size)
        )
        self.limits = limits
        self.stale_write_s = stale_write_s
        self.lease_s = lease_s
        self._pairs = self._collection(f"{prefix}_pairs")
        self._personas = self._collection(f"{prefix}_personas")
        self._demos = self._collection(f"{prefix}_demos")
        self._users = self._collection(f"{prefix}_users")
        self._edits = self._collection(f"{prefix}_edits")
        self._batch = max(1, min(int(client.get_max_batch_size()), 1000))
        self._vectors = VectorCache(cached_vectors)
        # In-process Chroma (a local store) has no other writer process: revisions stay in this
        # process and its own writes move the vector copy forward. Over HTTP other processes
        # write too: revisions live in Chroma and an own write drops the user's copy.
        self._local = is_in_process(client)

    @property
    def embeddings(self) -> CachedEmbedder:
        """The (cached) embedding model the store embeds contexts and queries with."""
        return self._embeddings

    @property
    def collections(self) -> dict[str, Collection]:
        """The store's Chroma collections by role (pairs, personas, demos, users)."""
        return {
            "pairs": self._pairs,
            "personas": self._personas,
            "demos": self._demos,
            "users": self._users,
            "edits": self._edits,
        }

    def _collection(self, name: str) -> Collection:
        return self._client.get_or_create_collection(
            check_collection_name(name),
            embedding_function=None,  # vectors are always computed here, through the cache
            configuration={"hnsw": {"space": "cosine"}},
        )

    def _scope(self, user_id: str) -> UserScope:
        if not isinstance(user_id, str):
            raise InvalidPreference(f"user_id: must be a string, not {type(user_id).__name__}")
        try:
            return UserScope(check_user_id(user_id, max_chars=self.limits.max_id_chars))
        except ValueError as exc:
            raise InvalidPreference(f"user_id {user_id[:40]!r}: {exc}") from None

    def _get(
        self,
        collection: Collection,
        scope: UserScope,
        *,
        keys: Sequence[str] | None = None,
        documents: bool = True,
        embeddings: bool = False,
        **conditions: Any,
    ) -> list[Row]:
        """Fetch this user's records, by record keys or by filter; drop anything not theirs."""
        include: list[Any] = ["metadatas"] + ["documents"] * documents + ["embeddings"] * embeddings
        if keys is not None:
            rows: list[Row] = []
            for start in range(0, len(keys), self._batch):
                ids = [scope.record_id(key) for key in keys[start : start + self._batch]]
                rows += self._rows(read_retrying(partial(collection.get, ids=ids, include=include)), scope)
            return rows
        where = scope.where(**conditions)
        return self._rows(read_retrying(partial(collection.get, where=where, include=include)), scope)

    @staticmethod
    def _rows(result: Mapping[str, Any], scope: UserScope) -> list[Row]:
        count = len(result["ids"])
        documents = result.get("documents") or [""] * count
        metadatas = result.get("metadatas") or [None] * count
        vectors = result.get("embeddings")
        vectors = [None] * count if vectors is None else vectors
        return [
            Row(record_id, document or "", dict(metadata), vector)
            for record_id, document, metadata, vector in zip(
                result["ids"], documents, metadatas, vectors, strict=True
            )
            if scope.owns(metadata)
        ]

    def _delete_ids(self, collection: Collection, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), self._batch):
            collection.delete(ids=list(ids[start : start + self._batch]))

    def _register(self, scope: UserScope) -> str | None:
        """Make sure the user has a record; return their pairs revision (None if unknown)."""
        # A read costs far less than a write; `add` would be a no-op for a known user anyway
        # (so it can never reset the current-version pointer), but still pays for a write.
        record = self._user_record(scope)
        if not record:
            self._users.add(
                ids=[scope.record_id("user")],
                embeddings=placeholder_vectors(1),
                metadatas=[{"user_id": scope.user_id, "current_version": 0}],
            )
        return self._pairs_revision(scope, record)

    def _revision_key(self, scope: UserScope) -> tuple[str, str]:
        return (str(self._pairs.id), scope.user_id)

    def _user_record(self, scope: UserScope) -> Mapping[str, Any]:
        """Return the metadata of the user's record (current version, pairs revision), or {}."""
        rows = self._get(self._users, scope, keys=["user"], documents=False)
        return rows[0].metadata if rows else {}

    def _pairs_revision(self, scope: UserScope, record: Mapping[str, Any] | None = None) -> str | None:
        """Return the user's pairs revision; on a server from `record` when the caller read it."""
        if self._local:
            return LOCAL_REVISIONS.current(self._revision_key(scope))
        record = self._user_record(scope) if record is None else record
        return cast(str | None, record.get("pairs_revision"))

    def _renew_pairs_revision(self, scope: UserScope) -> str:
        """Mark the user's pairs as changed (after the change, so readers never cache too early)."""
        if self._local:
            return LOCAL_REVISIONS.renew(self._revision_key(scope))
        revision = uuid.uuid4().hex
        self._users.upsert(  # upsert merges metadata: the current-version pointer stays
            ids=[scope.record_id("user")],
            embeddings=placeholder_vectors(1),
            metadatas=[{"user_id": scope.user_id, "pairs_revision": revision}],
        )
        return revision

    def _pairs_changed(self, scope: UserScope) -> None:
        """Forget the user's vector copy and renew their pairs revision after any change to their pairs."""
        self._vectors.drop(scope.user_id)
        self._renew_pairs_revision(scope)
