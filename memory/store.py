"""Where pairs, personas and demos are stored: `PreferenceStore`, per user, over Chroma.

Four collections (``{prefix}_pairs``, ``_personas``, ``_demos``, ``_users``) hold every record;
each record's metadata carries its ``user_id`` and its Chroma id starts with ``"{user_id}/"``
(user ids cannot contain ``/``). `_UserScope` is the one place that builds ``where`` filters and
record ids and checks that what Chroma returned belongs to the user asked about.

Retrieval key. A pair is embedded by ``retrieval_text(context)``: the last user message (up to
1,000 characters) and, when that message is a short follow-up (under 16 words, "make it
shorter"), the tail of the turn before it (up to 300 characters). The chosen and rejected
replies answer the last user message, so that is what a new conversation must resemble for a
stored choice to be relevant; the preceding turn says what a short follow-up is about, and is
left out otherwise so that it neither dilutes the mean-pooled vector nor costs embedding time
on every turn. The last message comes first because the key is cut to ``RETRIEVAL_KEY_TOKENS``
(128) word pieces: all-MiniLM-L6-v2 was trained on inputs of that length, and the query is
embedded on every turn at ~0.15 ms a word piece, so the cap bounds retrieval latency (a
256-piece code question cost ~40 ms). `retrieval_embeddings()` builds the store's embedder
with that cap. The replies are not embedded: a new turn has no replies yet when demos are
retrieved for it.

Retrieval ranks the user's own vectors exactly in numpy: a user holds hundreds of pairs, and
Chroma's HNSW search under a one-user filter took about five times longer at 100k stored pairs
on this machine. The vectors come from `memory.vector_cache` while the user's pairs revision
(renewed by every change to their pairs) is unchanged, else from one filtered `get`. The HNSW
index stays available for cross-user search.

Persona versions are append-only. Without transactions, a version number is claimed by adding
the record ``{user}/v{n}`` with a random token; Chroma ignores an add whose id exists, so reading
the record back tells whether this writer won, and a loser tries ``n+1``. The record is marked
complete only after the version's demos are written, and the user's current-version pointer moves
last, so readers never see a half-written version. Claims left incomplete (a crash) for longer
than ``stale_write_s`` are deleted, with their demos, at the start of the next save.

Leases: one synthesis of a user at a time, across processes. `acquire_lease` claims the next
number of the user's lease records (``{user}/lease/{name}/{n}`` in the users collection) the way
a persona version is claimed, but only while the highest record is released or past its expiry;
a holder renews it (`renew_lease`) while it works and releases it at the end. A lease not renewed
for ``lease_s`` (a crashed holder's) counts as over, as stale version claims do after
``stale_write_s``: every store sharing the collections must use the same ``lease_s``, and the
processes' clocks must agree to well under it.

Chroma's client is synchronous; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from pydantic import ValidationError

from agent.embedding import CachedEmbedder
from agent.errors import InvalidPreference, NotFound, PersonaRejected, UnknownUser
from agent.formats import describe_validation_error, pair_from_record, pair_to_record, parse_jsonl
from agent.records import (
    DEFAULT_LIMITS,
    STORED_LIMITS,
    Demo,
    Limits,
    Persona,
    PreferencePair,
    Turn,
    check_persona_text,
    check_user_id,
    persona_problem,
)
from memory.chroma import check_collection_name, read_retrying
from memory.vector_cache import LOCAL_REVISIONS, UserVectors, VectorCache, unit_rows

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from memory.embeddings import MiniLMEmbeddings

RETRIEVAL_LAST_CHARS = 1_000
RETRIEVAL_PREVIOUS_CHARS = 300
RETRIEVAL_FOLLOW_UP_WORDS = 16
RETRIEVAL_KEY_TOKENS = 128
ANNOTATION_KEYS = ("default_judge_correct", "has_verified_reasoning", "reasoning")


def _placeholder_vectors(count: int) -> np.ndarray:
    """Return vectors for records looked up by id and filter only (personas, demos, users)."""
    return np.ones((count, 1), dtype=np.float32)


def retrieval_text(context: Sequence[Turn]) -> str:
    """Return the text a conversation is embedded by: its last user message, then for a short
    follow-up the tail of the turn before."""
    if not context:
        raise InvalidPreference("context: must hold at least one turn")
    last = context[-1].content.strip()[:RETRIEVAL_LAST_CHARS]
    if len(context) == 1 or len(last.split()) >= RETRIEVAL_FOLLOW_UP_WORDS:
        return last
    previous = context[-2].content.strip()[-RETRIEVAL_PREVIOUS_CHARS:]
    return f"{last}\n{previous}"


def retrieval_embeddings() -> MiniLMEmbeddings:
    """Return the store's embedding model: MiniLM with keys cut to `RETRIEVAL_KEY_TOKENS`."""
    from memory.embeddings import MiniLMEmbeddings

    return MiniLMEmbeddings(max_tokens=RETRIEVAL_KEY_TOKENS)


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _version_key(version: int) -> str:
    return f"v{version:010d}"


@dataclass(frozen=True)
class _UserScope:
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
class _Row:
    id: str
    document: str
    metadata: dict[str, Any]
    embedding: Any = None


@dataclass(frozen=True)
class Lease:
    """A held lease on one of a user's activities (``name``, e.g. "synthesis"), until released."""

    user_id: str
    name: str
    number: int
    token: str

    def as_dict(self) -> dict[str, str | int]:
        """Return the lease as JSON-plain values (graph state holds it so)."""
        return {"user_id": self.user_id, "name": self.name, "number": self.number, "token": self.token}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lease:
        """Rebuild a lease from `as_dict`'s values."""
        return cls(str(data["user_id"]), str(data["name"]), int(data["number"]), str(data["token"]))


@dataclass(frozen=True)
class PairCounts:
    """How many pairs a user has: in all, and made after their current `persona` (all, without one)."""

    total: int
    since_persona: int
    persona: Persona | None


class PreferenceStore:
    """Per-user memory of preference pairs, persona versions and demos, in Chroma."""

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
        self._batch = max(1, min(int(client.get_max_batch_size()), 1000))
        self._vectors = VectorCache(cached_vectors)
        # In-process Chroma (a local store) has no other writer process: revisions stay in this
        # process and its own writes move the vector copy forward. Over HTTP other processes
        # write too: revisions live in Chroma and an own write drops the user's copy.
        self._local = "fastapi" not in str(client.get_settings().chroma_api_impl).lower()

    @property
    def embeddings(self) -> CachedEmbedder:
        """The (cached) embedding model the store embeds contexts and queries with."""
        return self._embeddings

    @property
    def collections(self) -> dict[str, Collection]:
        """The store's Chroma collections by role (pairs, personas, demos, users)."""
        return {"pairs": self._pairs, "personas": self._personas, "demos": self._demos, "users": self._users}

    def _collection(self, name: str) -> Collection:
        return self._client.get_or_create_collection(
            check_collection_name(name),
            embedding_function=None,  # vectors are always computed here, through the cache
            configuration={"hnsw": {"space": "cosine"}},
        )

    # --- the one place that scopes by user --------------------------------------------------
    def _scope(self, user_id: str) -> _UserScope:
        if not isinstance(user_id, str):
            raise InvalidPreference(f"user_id: must be a string, not {type(user_id).__name__}")
        try:
            return _UserScope(check_user_id(user_id, max_chars=self.limits.max_id_chars))
        except ValueError as exc:
            raise InvalidPreference(f"user_id {user_id[:40]!r}: {exc}") from None

    def _get(
        self,
        collection: Collection,
        scope: _UserScope,
        *,
        keys: Sequence[str] | None = None,
        documents: bool = True,
        embeddings: bool = False,
        **conditions: Any,
    ) -> list[_Row]:
        """Fetch this user's records, by record keys or by filter; drop anything not theirs."""
        include: list[Any] = ["metadatas"] + ["documents"] * documents + ["embeddings"] * embeddings
        if keys is not None:
            rows: list[_Row] = []
            for start in range(0, len(keys), self._batch):
                ids = [scope.record_id(key) for key in keys[start : start + self._batch]]
                rows += self._rows(read_retrying(partial(collection.get, ids=ids, include=include)), scope)
            return rows
        where = scope.where(**conditions)
        return self._rows(read_retrying(partial(collection.get, where=where, include=include)), scope)

    @staticmethod
    def _rows(result: Mapping[str, Any], scope: _UserScope) -> list[_Row]:
        count = len(result["ids"])
        documents = result.get("documents") or [""] * count
        metadatas = result.get("metadatas") or [None] * count
        vectors = result.get("embeddings")
        vectors = [None] * count if vectors is None else vectors
        return [
            _Row(record_id, document or "", dict(metadata), vector)
            for record_id, document, metadata, vector in zip(
                result["ids"], documents, metadatas, vectors, strict=True
            )
            if scope.owns(metadata)
        ]

    def _delete_ids(self, collection: Collection, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), self._batch):
            collection.delete(ids=list(ids[start : start + self._batch]))

    def _register(self, scope: _UserScope) -> str | None:
        """Make sure the user has a record; return their pairs revision (None if unknown)."""
        # A read costs far less than a write; `add` would be a no-op for a known user anyway
        # (so it can never reset the current-version pointer), but still pays for a write.
        record = self._user_record(scope)
        if not record:
            self._users.add(
                ids=[scope.record_id("user")],
                embeddings=_placeholder_vectors(1),
                metadatas=[{"user_id": scope.user_id, "current_version": 0}],
            )
        return self._pairs_revision(scope, record)

    def _revision_key(self, scope: _UserScope) -> tuple[str, str]:
        return (str(self._pairs.id), scope.user_id)

    def _user_record(self, scope: _UserScope) -> Mapping[str, Any]:
        """Return the metadata of the user's record (current version, pairs revision), or {}."""
        rows = self._get(self._users, scope, keys=["user"], documents=False)
        return rows[0].metadata if rows else {}

    def _pairs_revision(self, scope: _UserScope, record: Mapping[str, Any] | None = None) -> str | None:
        """Return the user's pairs revision; on a server from `record` when the caller read it."""
        if self._local:
            return LOCAL_REVISIONS.current(self._revision_key(scope))
        record = self._user_record(scope) if record is None else record
        return cast(str | None, record.get("pairs_revision"))

    def _renew_pairs_revision(self, scope: _UserScope) -> str:
        """Mark the user's pairs as changed (after the change, so readers never cache too early)."""
        if self._local:
            return LOCAL_REVISIONS.renew(self._revision_key(scope))
        revision = uuid.uuid4().hex
        self._users.upsert(  # upsert merges metadata: the current-version pointer stays
            ids=[scope.record_id("user")],
            embeddings=_placeholder_vectors(1),
            metadatas=[{"user_id": scope.user_id, "pairs_revision": revision}],
        )
        return revision

    def _pairs_changed(self, scope: _UserScope) -> None:
        """Forget the user's vector copy and renew their pairs revision after any change to their pairs."""
        self._vectors.drop(scope.user_id)
        self._renew_pairs_revision(scope)

    # --- pairs ------------------------------------------------------------------------------
    def _validated(self, scope: _UserScope, pairs: Iterable[PreferencePair]) -> list[PreferencePair]:
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
            created = np.array([_micros(pair.created_at) for pair in new], dtype=np.int64)
            rows = UserVectors(
                tuple(pair.id for pair in new), unit_rows(np.vstack(added)), flags, flags, created
            )
            self._vectors.advance(scope.user_id, before, after, rows)
        else:
            self._vectors.drop(scope.user_id)
        return [pair.id for pair in new]

    def _add_pair_records(
        self, scope: _UserScope, chunk: Sequence[PreferencePair], vectors: np.ndarray
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
                    "created_us": _micros(pair.created_at),
                    "source": pair.source,
                    "has_verified_reasoning": False,
                }
                for pair in chunk
            ],
        )

    @staticmethod
    def _pair(row: _Row) -> PreferencePair:
        return PreferencePair.model_validate_json(row.document, context={"limits": STORED_LIMITS})

    @staticmethod
    def _newest_first(rows: list[_Row]) -> list[_Row]:
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
        loaded = {
            row.metadata["pair_id"]: self._pair(row) for row in self._get(self._pairs, scope, keys=keys)
        }
        return [loaded[key] for key in keys if key in loaded]

    def newest_pairs(self, user_id: str, n: int) -> list[PreferencePair]:
        """Return the user's `n` most recent pairs, newest first."""
        return self.list_pairs(user_id, limit=n)

    def get_pair(self, user_id: str, pair_id: str) -> PreferencePair:
        """Return one of the user's pairs, or raise NotFound."""
        scope = self._scope(user_id)
        rows = self._get(self._pairs, scope, keys=[pair_id])
        if not rows:
            raise NotFound(f"user {user_id!r} has no pair {pair_id!r}")
        return self._pair(rows[0])

    def pairs_since_persona(self, user_id: str) -> list[PreferencePair]:
        """Return pairs created after the current persona was (all pairs when there is none), newest first."""
        scope = self._scope(user_id)
        persona = self.current_persona(user_id)
        since = None if persona is None else {"$gt": _micros(persona.created_at)}
        rows = self._newest_first(self._get(self._pairs, scope, created_us=since))
        return [self._pair(row) for row in rows]

    def pair_counts(self, user_id: str) -> PairCounts:
        """Count the user's pairs, in all and since the current persona (the chat turn's check)."""
        scope = self._scope(user_id)
        record = self._user_record(scope)  # one read for the persona pointer and the revision
        persona = self._current_persona(scope, record)
        stored = self._user_vectors(scope, record)
        since = (
            len(stored) if persona is None else int((stored.created_us > _micros(persona.created_at)).sum())
        )
        return PairCounts(total=len(stored), since_persona=since, persona=persona)

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

    # --- personas ---------------------------------------------------------------------------
    def _drop_stale_writes(self, scope: _UserScope) -> None:
        cutoff = time.time_ns() // 1_000 - int(self.stale_write_s * 1_000_000)
        for row in self._get(self._personas, scope, documents=False, complete=False):
            if row.metadata["claimed_us"] <= cutoff:
                self._demos.delete(where=scope.where(version=row.metadata["version"]))
                self._personas.delete(ids=[row.id])

    def _claim_version(self, scope: _UserScope) -> int:
        taken = [row.metadata["version"] for row in self._get(self._personas, scope, documents=False)]
        version = max(taken, default=0) + 1
        token = uuid.uuid4().hex
        for _ in range(1000):
            record_id = scope.record_id(_version_key(version))
            self._personas.add(
                ids=[record_id],
                embeddings=_placeholder_vectors(1),
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
                embeddings=_placeholder_vectors(len(demos)),
                documents=[demo.model_dump_json() for demo in demos],
                metadatas=[
                    {"user_id": scope.user_id, "version": version, "position": position}
                    for position in range(len(demos))
                ],
            )
        self._personas.update(
            ids=[scope.record_id(key)],
            embeddings=_placeholder_vectors(1),
            documents=[stored.model_dump_json()],
            metadatas=[{"complete": True, "created_us": _micros(stored.created_at)}],
        )
        self._set_current(scope, version)
        return stored

    def _set_current(self, scope: _UserScope, version: int) -> None:
        self._users.upsert(
            ids=[scope.record_id("user")],
            embeddings=_placeholder_vectors(1),
            metadatas=[{"user_id": scope.user_id, "current_version": version}],
        )

    def _current_version(self, scope: _UserScope) -> int:
        return int(self._user_record(scope).get("current_version", 0))

    @staticmethod
    def _persona(row: _Row) -> Persona:
        return Persona.model_validate_json(row.document)

    def _persona_row(self, scope: _UserScope, version: int) -> _Row | None:
        rows = self._get(self._personas, scope, keys=[_version_key(version)])
        return rows[0] if rows and rows[0].metadata.get("complete") is True else None

    def current_persona(self, user_id: str) -> Persona | None:
        """Return the user's current persona, or None when none was saved."""
        scope = self._scope(user_id)
        return self._current_persona(scope, self._user_record(scope))

    def _current_persona(self, scope: _UserScope, record: Mapping[str, Any]) -> Persona | None:
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

    # --- leases ----------------------------------------------------------------------------
    def _lease_rows(self, scope: _UserScope, name: str) -> list[_Row]:
        rows = self._get(self._users, scope, documents=False, lease=name)
        return sorted(rows, key=lambda row: int(row.metadata["number"]))

    def acquire_lease(self, user_id: str, name: str = "synthesis") -> Lease | None:
        """Take the user's lease `name`; None while another holder has it (renewed within `lease_s`)."""
        scope = self._scope(user_id)
        rows = self._lease_rows(scope, name)
        now = time.time_ns() // 1_000
        latest = rows[-1].metadata if rows else None
        live_since = now - int(self.lease_s * 1_000_000)
        if latest and not latest.get("released") and int(latest["renewed_us"]) > live_since:
            return None
        number = int(latest["number"]) + 1 if latest else 1
        lease = Lease(scope.user_id, name, number, uuid.uuid4().hex)
        key = f"lease/{name}/{number:010d}"
        self._users.add(  # ignored when another process claimed this number first
            ids=[scope.record_id(key)],
            embeddings=_placeholder_vectors(1),
            metadatas=[
                {
                    "user_id": scope.user_id,
                    "lease": name,
                    "number": number,
                    "token": lease.token,
                    "renewed_us": now,
                    "released": False,
                }
            ],
        )
        winner = self._get(self._users, scope, keys=[key], documents=False)
        if not winner or winner[0].metadata.get("token") != lease.token:
            return None
        self._delete_ids(self._users, [row.id for row in rows])  # earlier leases, all over
        return lease

    def renew_lease(self, lease: Lease) -> bool:
        """Mark a held lease renewed now; False when it was released or taken over."""
        scope = self._scope(lease.user_id)
        rows = self._lease_rows(scope, lease.name)
        if not rows:
            return False
        latest = rows[-1].metadata
        if latest.get("token") != lease.token or latest.get("released"):
            return False
        self._users.update(ids=[rows[-1].id], metadatas=[{"renewed_us": time.time_ns() // 1_000}])
        return True

    def release_lease(self, lease: Lease) -> None:
        """Give a held lease back so the next holder need not wait for its expiry."""
        scope = self._scope(lease.user_id)
        key = f"lease/{lease.name}/{lease.number:010d}"
        rows = self._get(self._users, scope, keys=[key], documents=False)
        if rows and rows[0].metadata.get("token") == lease.token:
            self._users.update(ids=[rows[0].id], metadatas=[{"released": True}])

    # --- retrieval --------------------------------------------------------------------------
    def retrieve_demos(
        self,
        user_id: str,
        query: str | Sequence[Turn],
        k: int,
        *,
        similarity_weight: float = 1.0,
        informativeness_weight: float = 0.3,
        mmr_lambda: float = 0.7,
    ) -> list[Demo]:
        """Pick up to `k` of the user's pairs as demos for a conversation.

        Relevance is ``similarity_weight * cosine(query, pair context) + informativeness_weight *
        informativeness``, where informativeness is 0.5 if the default judge got the pair wrong plus
        0.5 if it has verified reasoning. Maximal marginal relevance then trades relevance
        (weight `mmr_lambda`) against similarity to the demos already picked.
        """
        scope = self._scope(user_id)
        if k <= 0:
            return []
        if isinstance(query, str):
            text = query.strip()[:RETRIEVAL_LAST_CHARS]
            if not text:
                raise InvalidPreference("query: must not be empty")
        else:
            text = retrieval_text(tuple(query))
        query_vector = unit_rows(self._embeddings.embed([text]))[0]
        stored = self._user_vectors(scope)
        if not len(stored):
            return []
        vectors = stored.vectors
        similarity = vectors @ query_vector
        wrong, verified = stored.judge_wrong, stored.verified
        informativeness = 0.5 * wrong + 0.5 * verified
        relevance = similarity_weight * similarity + informativeness_weight * informativeness
        pool = np.argsort(-relevance, kind="stable")[: max(5 * k, 25)]
        candidates = [stored.pair_ids[i] for i in pool]
        similarity, wrong, verified = similarity[pool], wrong[pool], verified[pool]
        informativeness, relevance = informativeness[pool], relevance[pool]
        overlap = vectors[pool] @ vectors[pool].T
        picked: list[int] = []
        redundancy = np.full(len(candidates), -np.inf)
        while len(picked) < min(k, len(candidates)):
            penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
            gain = mmr_lambda * relevance - (1.0 - mmr_lambda) * penalty
            gain[picked] = -np.inf
            best = int(np.argmax(gain))
            picked.append(best)
            redundancy = np.maximum(redundancy, overlap[best])
        found = {
            row.metadata["pair_id"]: row
            for row in self._get(self._pairs, scope, keys=[candidates[i] for i in picked])
        }
        demos = []
        for rank, index in enumerate(picked):
            row = found.get(candidates[index])
            if row is None:  # deleted between the two reads
                continue
            reasons = [f"similarity {similarity[index]:.2f} to this conversation"]
            if wrong[index]:
                reasons.append("the default judge got it wrong")
            if verified[index]:
                reasons.append("it has verified reasoning")
            if rank:
                closest = max(float(overlap[index, other]) for other in picked[:rank])
                reasons.append(f"closest earlier demo {closest:.2f} similar")
            demos.append(
                Demo(
                    pair=self._pair(row),
                    reasoning=row.metadata.get("reasoning") if verified[index] else None,
                    similarity=float(similarity[index]),
                    informativeness=float(informativeness[index]),
                    score=float(relevance[index]),
                    why="; ".join(reasons),
                )
            )
        return demos

    def _user_vectors(self, scope: _UserScope, record: Mapping[str, Any] | None = None) -> UserVectors:
        """Return the user's pair vectors and flags: the cached copy if still current, else from Chroma.

        `record` is the user's record when the caller has just read it (saves a read on a server).
        """
        revision = self._pairs_revision(scope, record)
        cached = self._vectors.get(scope.user_id, revision)
        if cached is not None:
            return cached
        rows = self._get(self._pairs, scope, documents=False, embeddings=True)
        stored = UserVectors(
            tuple(row.metadata["pair_id"] for row in rows),
            unit_rows(np.asarray([row.embedding for row in rows], dtype=np.float32)),
            np.array([row.metadata.get("default_judge_correct") is False for row in rows], dtype=bool),
            np.array([bool(row.metadata.get("has_verified_reasoning")) for row in rows], dtype=bool),
            np.array([row.metadata["created_us"] for row in rows], dtype=np.int64),
        )
        self._vectors.put(scope.user_id, revision, stored)
        return stored

    # --- users ------------------------------------------------------------------------------
    def list_users(self) -> list[str]:
        """Return every user id with anything stored, sorted."""
        result = self._users.get(include=["metadatas"])
        return sorted({str(metadata["user_id"]) for metadata in result["metadatas"] or [] if metadata})

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
        return counts

    def export_user(self, user_id: str) -> str:
        """Return everything about a user as JSONL: pair records, then one line per persona version."""
        scope = self._scope(user_id)
        rows = self._get(self._pairs, scope)
        personas = self.persona_history(user_id)
        if not rows and not personas:
            raise UnknownUser(f"nothing is stored for user {user_id!r}")
        current = self._current_version(scope)
        lines = []
        for row in sorted(rows, key=lambda row: (row.metadata["created_us"], row.metadata["pair_id"])):
            record = pair_to_record(self._pair(row))
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
        return "\n".join(lines) + "\n"

    def import_user(self, jsonl_text: str, *, user_id: str | None = None) -> dict[str, int]:
        """Load an export (or plain PersonalRewardBench pairs) for one user; validate all, then write.

        `user_id` overrides the owner named in the records. Pairs already stored are skipped;
        persona versions are appended after the user's own, skipping any with the same text and
        creation time as one already there. Returns counts of pairs and personas added.
        """
        records = list(parse_jsonl(jsonl_text))
        pair_records = [record for record in records if not (isinstance(record, dict) and "kind" in record)]
        persona_records = [record for record in records if isinstance(record, dict) and "kind" in record]
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
        return {"pairs": len(added), "personas": imported}
