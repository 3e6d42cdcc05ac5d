"""The per-user vector copy behind demo retrieval: revisions, write-through and eviction."""

from __future__ import annotations

import numpy as np

from memory.vector_cache import UserVectors, VectorCache, unit_rows


def rows(*pair_ids: str) -> UserVectors:
    vectors = unit_rows(np.arange(1, 3 * len(pair_ids) + 1, dtype=np.float32).reshape(len(pair_ids), 3))
    flags = np.zeros(len(pair_ids), dtype=bool)
    return UserVectors(tuple(pair_ids), vectors, flags, flags, np.arange(len(pair_ids), dtype=np.int64))


def test_a_copy_is_used_only_at_its_revision() -> None:
    cache = VectorCache()
    cache.put("alice", "r1", rows("a", "b"))
    assert cache.get("alice", "r1") is not None
    assert cache.get("alice", "r2") is None
    assert cache.get("alice", None) is None
    assert cache.get("bob", "r1") is None
    cache.put("bob", None, rows("c"))  # no revision on record: nothing is held
    assert len(cache) == 1


def test_an_own_write_moves_the_copy_forward_only_from_the_revision_it_read() -> None:
    cache = VectorCache()
    cache.put("alice", "r1", rows("a"))
    cache.advance("alice", "r1", "r2", rows("b", "a"))
    copy = cache.get("alice", "r2")
    assert copy is not None and copy.pair_ids == ("a", "b")
    np.testing.assert_allclose(np.linalg.norm(copy.vectors, axis=1), 1.0, atol=1e-6)
    # A writer that read r1 while the copy already moved to r2 missed a change: the copy goes.
    cache.advance("alice", "r1", "r3", rows("c"))
    assert cache.get("alice", "r2") is None and cache.get("alice", "r3") is None
    cache.advance("alice", "r3", "r4", rows("d"))  # nothing held: nothing to move
    assert len(cache) == 0


def test_least_recently_used_users_are_evicted_by_vectors_held() -> None:
    cache = VectorCache(max_vectors=4)
    cache.put("alice", "r", rows("a", "b"))
    cache.put("bob", "r", rows("c", "d"))
    assert cache.get("alice", "r") is not None  # alice is now the most recent
    cache.put("carol", "r", rows("e", "f"))
    assert cache.get("bob", "r") is None
    assert cache.get("alice", "r") is not None and cache.get("carol", "r") is not None
