"""An in-process copy of each user's pair vectors, so demo retrieval and counts need not re-read Chroma.

Reading one user's vectors back from Chroma is the slow part of a retrieval: a filtered `get`
costs more as the whole collection grows, whatever the user's own size, because the metadata
filter itself does (BENCHMARKS.md, section 5, has the figures). The store therefore keeps, per
user, the vectors, the two informativeness flags and the creation times of their pairs, tagged
with the user's *pairs revision*: a random token renewed after every change to their pairs, and
the copy is used only while the revision matches. Where the revision lives depends on who can write:

- a local store (Chroma in this process) belongs to one process, as Chroma's `PersistentClient`
  does: revisions live in this process (`LocalRevisions`), shared by every store object over the
  same collection, and cost nothing to renew;
- on a `chroma run` server other processes write too: the store keeps the revision on the user's
  record in Chroma (one read by id per retrieval, one more write per change).

Writes made by this process move the copy forward instead of dropping it (`advance`), but only
from the revision the writer read before writing: a copy that missed a change in between is
dropped instead. Entries are evicted least recently used, by number of vectors held.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UserVectors:
    """One user's pairs as retrieval needs them; row i of each array is `pair_ids[i]`."""

    pair_ids: tuple[str, ...]
    vectors: np.ndarray  # (n, d) float32, unit rows
    judge_wrong: np.ndarray  # (n,) bool: the default judge got the pair wrong
    verified: np.ndarray  # (n,) bool: the pair has verified reasoning
    created_us: np.ndarray  # (n,) int64: when the pair was made, microseconds since the epoch

    def __len__(self) -> int:
        return len(self.pair_ids)

    def plus(self, other: UserVectors) -> UserVectors:
        """Return these rows followed by `other`'s (pair ids already here are skipped)."""
        known = set(self.pair_ids)
        keep = [i for i, pair_id in enumerate(other.pair_ids) if pair_id not in known]
        if not keep:
            return self
        if not self.pair_ids:
            return other
        return UserVectors(
            self.pair_ids + tuple(other.pair_ids[i] for i in keep),
            np.vstack([self.vectors, other.vectors[keep]]),
            np.concatenate([self.judge_wrong, other.judge_wrong[keep]]),
            np.concatenate([self.verified, other.verified[keep]]),
            np.concatenate([self.created_us, other.created_us[keep]]),
        )


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Return `vectors` as float32 rows of length one."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        vectors = vectors.reshape(len(vectors), -1) if len(vectors) else np.zeros((0, 0), np.float32)
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


class LocalRevisions:
    """Pairs revisions of in-process Chroma collections, shared by every store of this process."""

    def __init__(self) -> None:
        self._tokens: dict[Hashable, str] = {}
        self._lock = threading.Lock()

    def current(self, key: Hashable) -> str:
        """Return the revision of `key`, starting one if none was recorded yet."""
        with self._lock:
            return self._tokens.setdefault(key, uuid.uuid4().hex)

    def renew(self, key: Hashable) -> str:
        """Record a change to `key`'s pairs; return the new revision."""
        with self._lock:
            self._tokens[key] = token = uuid.uuid4().hex
            return token


LOCAL_REVISIONS = LocalRevisions()


class VectorCache:
    """Revision-tagged `UserVectors` by key, least recently used out past `max_vectors` (0: hold none)."""

    def __init__(self, max_vectors: int = 200_000) -> None:
        self.max_vectors = max_vectors
        self._entries: OrderedDict[Hashable, tuple[str, UserVectors]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, revision: str | None) -> UserVectors | None:
        """Return the copy held for `key` if it was taken at `revision`."""
        if revision is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != revision:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, revision: str | None, rows: UserVectors) -> None:
        """Hold `rows` as `key`'s pairs at `revision` (nothing is held without a revision)."""
        if revision is None or self.max_vectors <= 0:
            return
        with self._lock:
            self._replace(key, (revision, rows))

    def advance(self, key: Hashable, before: str | None, after: str, added: UserVectors) -> None:
        """After this process's write from `before` to `after`: append `added`, or drop a stale copy."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            if before is None or entry[0] != before:
                self._replace(key, None)
                return
            self._replace(key, (after, entry[1].plus(added)))

    def drop(self, key: Hashable) -> None:
        """Forget `key`'s copy."""
        with self._lock:
            self._replace(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _replace(self, key: Hashable, entry: tuple[str, UserVectors] | None) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._held -= len(old[1])
        if entry is None:
            return
        self._entries[key] = entry
        self._held += len(entry[1])
        while self._held > self.max_vectors and len(self._entries) > 1:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._held -= len(evicted)
