"""Concurrency: threads on the local store and processes on a `chroma run` server add pairs and chat.

Workers (`tests.reliability.chat_load`) share users: every pair they meant to store must be there
exactly once (in Chroma, in demo retrieval and in the pair counts), nothing may land under
another user, and each user's persona versions must be
1, 2, ..., n with every version won by exactly one synthesis, in increasing order per worker.
"""

from __future__ import annotations

# ruff: noqa: F811 - the fixture imported from tests.fakes is redefined as a test parameter
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from devtools.chroma_server import ChromaServer
from memory.chroma import make_client
from memory.store import PreferenceStore
from tests.fakes import WordHashEmbeddings, chroma_server  # noqa: F401
from tests.reliability.chat_load import exercise, exercise_on_server
from tests.reliability.summary import write_summary

pytestmark = pytest.mark.reliability

USERS = ["ann", "ben", "cai", "dee"]


def check_outcome(
    store: PreferenceStore, results: Sequence[dict[str, Any]], users: Sequence[str]
) -> dict[str, Any]:
    """Assert every meant pair is stored once and versions only go up; return the figures."""
    figures: dict[str, Any] = {"pairs": 0, "persona_versions": 0, "syntheses_accepted": 0}
    for user in users:
        meant = set().union(*(set(result["meant"].get(user, ())) for result in results))
        stored = store.list_pairs(user, limit=100_000)
        ids = [pair.id for pair in stored]
        assert len(ids) == len(set(ids)), f"{user}: a pair is stored twice"
        assert set(ids) == meant, (
            f"{user}: {len(meant - set(ids))} missing, {len(set(ids) - meant)} unexpected"
        )
        assert store.count_pairs(user) == len(meant)
        assert {pair.user_id for pair in stored} == {user}
        raw = store.collections["pairs"].get(where={"user_id": user}, include=["metadatas"])
        raw_ids = [metadata["pair_id"] for metadata in raw["metadatas"] or []]
        assert sorted(raw_ids) == sorted(ids)
        # What retrieval and the re-synthesis check read (the store's in-process copy of each
        # user's vectors, moved forward by the workers' writes) must agree with Chroma.
        retrieved = store.retrieve_demos(user, "any question", k=len(meant)) if meant else []
        assert {demo.pair.id for demo in retrieved} == meant
        assert store.pair_counts(user).total == len(meant)

        history = [persona.version for persona in store.persona_history(user)]
        assert history == list(range(1, len(history) + 1)), f"{user}: versions {history}"
        won = [version for result in results for version in result["versions"].get(user, [])]
        assert len(won) == len(set(won)), f"{user}: two syntheses stored the same version: {won}"
        assert set(won) <= set(history)
        for result in results:
            own = result["versions"].get(user, [])
            assert own == sorted(own) and len(own) == len(set(own))
        current = store.current_persona(user)
        assert (current is None) == (not history)
        figures["pairs"] += len(ids)
        figures["persona_versions"] += len(history)
        figures["syntheses_accepted"] += len(won)
    figures["turns"] = sum(result["turns"] for result in results)
    return figures


def test_eight_threads_chat_and_add_pairs_for_four_users_on_the_local_store(tmp_path: Path) -> None:
    store = PreferenceStore(make_client(path=tmp_path / "chroma"), WordHashEmbeddings(), prefix="threads")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(exercise, store, worker, [USERS[worker % 4]], 4) for worker in range(8)]
        results = [job.result(timeout=300) for job in jobs]
    figures = check_outcome(store, results, USERS)
    figures.update(threads=8, users=len(USERS), seconds=round(time.perf_counter() - started, 1))
    write_summary("concurrency_threads", figures)
    assert figures["turns"] == 32 and figures["persona_versions"] >= len(USERS)


@pytest.mark.slow
def test_four_processes_chat_and_add_pairs_for_four_users_on_a_chroma_server(
    chroma_server: ChromaServer,
) -> None:
    prefix = f"procs{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        jobs = [
            pool.apply_async(exercise_on_server, (chroma_server.address, prefix, worker, USERS, 2))
            for worker in range(4)
        ]
        results = [job.get(timeout=300) for job in jobs]
    store = PreferenceStore(make_client(server=chroma_server.address), WordHashEmbeddings(), prefix=prefix)
    figures = check_outcome(store, results, USERS)
    figures.update(processes=4, users=len(USERS), seconds=round(time.perf_counter() - started, 1))
    figures["versions_won_per_process"] = [
        sum(len(v) for v in result["versions"].values()) for result in results
    ]
    write_summary("concurrency_processes", figures)
    assert figures["turns"] == 32
    assert Counter(len(result["versions"]) for result in results) == Counter({len(USERS): 4})
