"""Several processes share one `chroma run` server: no pair is lost, persona versions stay unique."""

from __future__ import annotations

# ruff: noqa: F811 - the fixtures imported from tests.fakes are redefined as test parameters
import multiprocessing
import uuid

import pytest

from devtools.chroma_server import ChromaServer
from memory.chroma import make_client
from memory.store import PreferenceStore
from tests.fakes import WordHashEmbeddings, chroma_server, make_pair  # noqa: F401

pytestmark = pytest.mark.slow

WORKERS = 4
BATCHES = 5
PAIRS_PER_BATCH = 10


def _worker(address: str, prefix: str, worker: int, start: multiprocessing.synchronize.Event) -> list[int]:
    """Add pairs and save personas for one shared user and a private one; return versions won."""
    from agent.records import Persona

    store = PreferenceStore(make_client(server=address), WordHashEmbeddings(), prefix=prefix)
    start.wait(timeout=60)
    versions = []
    for batch in range(BATCHES):
        pairs = [make_pair("shared", f"p{worker} b{batch} q{i}", minutes=i) for i in range(PAIRS_PER_BATCH)]
        store.add_pairs("shared", pairs)
        store.add_pairs(f"own{worker}", [make_pair(f"own{worker}", f"only mine {batch}")])
        versions.append(
            store.save_persona(Persona(user_id="shared", text=f"Likes lists, p{worker} b{batch}"), []).version
        )
    return versions


def test_processes_lose_nothing_and_versions_stay_strictly_increasing(chroma_server: ChromaServer) -> None:
    prefix = f"mp{uuid.uuid4().hex[:10]}"
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    with context.Pool(WORKERS) as pool:
        jobs = [
            pool.apply_async(_worker, (chroma_server.address, prefix, worker, start))
            for worker in range(WORKERS)
        ]
        start.set()
        won = [job.get(timeout=300) for job in jobs]

    store = PreferenceStore(make_client(server=chroma_server.address), WordHashEmbeddings(), prefix=prefix)
    assert store.count_pairs("shared") == WORKERS * BATCHES * PAIRS_PER_BATCH
    for worker in range(WORKERS):
        assert store.count_pairs(f"own{worker}") == BATCHES
        assert {p.user_id for p in store.list_pairs(f"own{worker}")} == {f"own{worker}"}
        # Each process saw its own versions strictly increase.
        assert won[worker] == sorted(won[worker]) and len(set(won[worker])) == BATCHES
    history = store.persona_history("shared")
    assert [p.version for p in history] == list(range(1, WORKERS * BATCHES + 1))
    assert sorted(v for versions in won for v in versions) == [p.version for p in history]
    assert len({p.text for p in history}) == WORKERS * BATCHES
    assert store.current_persona("shared") is not None
