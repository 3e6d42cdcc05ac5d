"""Crash during re-synthesis: SIGKILL a process that keeps re-synthesizing, 20 times, at seeded moments.

The worker (`tests.reliability.crash_worker`) runs the product's synthesis graph in a loop over
a real on-disk Chroma store and notes every persona version it stored. Workers are forked from a
forkserver that has imported everything once, so a kill lands within a fraction of a second of
work. After each kill the store is opened afresh and must show: the current persona is complete
and no older than the last version the worker reported stored; no half-written version or demo set
is visible through the API; the current demos are exactly the saved set; and the next trigger
re-runs the synthesis, stores a newer version and (with the stale-claim window at 0) cleans up
whatever the killed writer left behind.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.errors import NotFound
from graphs.state import SynthesisContext
from memory.store import PreferenceStore
from tests.fakes import make_pair
from tests.reliability import crash_worker
from tests.reliability.crash_worker import USER, open_store, synthesis_graph
from tests.reliability.summary import write_summary

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

KILLS = 20
SEED = 2026
MAX_DELAY_S = 0.8


def _release_chroma() -> None:
    """Drop this process's cached Chroma systems, so the next open reads what the worker wrote."""
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


def _saved_versions(progress: Path) -> list[int]:
    lines = progress.read_text(encoding="utf-8").split("\n")[:-1]  # a torn last line is ignored
    return [int(line.split()[1]) for line in lines if line.startswith("saved ")]


def _raw_persona_rows(store: PreferenceStore) -> list[dict[str, Any]]:
    got = store.collections["personas"].get(where={"user_id": USER}, include=["metadatas"])
    return [dict(metadata) for metadata in got["metadatas"] or [] if metadata]


def check_consistent(store: PreferenceStore, reported: int) -> dict[str, int]:
    """Assert what the API shows after a crash is whole; return counts of leftovers seen raw."""
    current = store.current_persona(USER)
    assert current is not None
    assert current.version >= reported, f"v{current.version} is older than reported v{reported}"
    history = store.persona_history(USER)
    assert current.version in [p.version for p in history]
    assert [p.version for p in history] == sorted({p.version for p in history})
    demos = store.current_demos(USER)
    assert tuple(d.pair.id for d in demos) == current.demo_pair_ids, "the demo set is partial"
    for persona in history:
        assert store.get_persona(USER, persona.version) == persona
    raw = _raw_persona_rows(store)
    incomplete = [row for row in raw if row.get("complete") is not True]
    for row in incomplete:
        with pytest.raises(NotFound):
            store.get_persona(USER, int(row["version"]))
    newer_complete = [p for p in history if p.version > current.version]
    # Only the one version whose save the kill interrupted between "complete" and "current" may be newer.
    assert len(newer_complete) <= 1
    return {"incomplete_claims": len(incomplete), "complete_but_not_current": len(newer_complete)}


def test_sigkill_during_resynthesis_leaves_a_whole_current_persona(tmp_path: Path) -> None:
    path, prefix = tmp_path / "chroma", f"crash{uuid.uuid4().hex[:8]}"
    store = open_store(path, prefix)
    pairs = [
        make_pair(
            USER,
            f"question {i} about gardens",
            chosen="Short." if i % 3 else "A long, winding answer.",
            rejected="A long, winding answer." if i % 3 else "Short.",
            minutes=i,
        )
        for i in range(12)
    ]
    store.add_pairs(USER, pairs)
    first = asyncio.run(synthesis_graph(store, "seed").ainvoke({}, context=SynthesisContext(user_id=USER)))
    assert first["outcome"]["status"] == "accepted"
    _release_chroma()

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.reliability.crash_worker"])
    rng = random.Random(SEED)
    figures: dict[str, Any] = {
        "kills": 0,
        "versions_saved_by_killed_workers": 0,
        "reruns_accepted": 0,
        "incomplete_claims_seen": 0,
        "complete_but_not_current_seen": 0,
    }
    delays = []
    for kill in range(KILLS):
        progress = tmp_path / f"progress-{kill}.txt"
        progress.touch()
        worker = context.Process(
            target=crash_worker.synthesize_until_killed, args=(str(path), prefix, str(progress), f"w{kill}")
        )
        worker.start()
        deadline = time.monotonic() + 60
        while "ready" not in progress.read_text(encoding="utf-8"):
            assert worker.is_alive() and time.monotonic() < deadline, "worker did not start"
            time.sleep(0.01)
        delay = rng.uniform(0.0, MAX_DELAY_S)
        delays.append(round(delay, 3))
        time.sleep(delay)
        assert worker.is_alive(), f"worker {kill} died on its own (exit {worker.exitcode})"
        worker.kill()  # SIGKILL
        worker.join(timeout=30)
        assert worker.exitcode == -9
        figures["kills"] += 1
        saved = _saved_versions(progress)
        figures["versions_saved_by_killed_workers"] += len(saved)

        # Zero windows: the killed writer's claim is stale and its synthesis lease over at once.
        reopened = open_store(path, prefix, stale_write_s=0.0, lease_s=0.0)
        before = reopened.current_persona(USER)
        assert before is not None
        leftovers = check_consistent(reopened, max(saved, default=0))
        figures["incomplete_claims_seen"] += leftovers["incomplete_claims"]
        figures["complete_but_not_current_seen"] += leftovers["complete_but_not_current"]

        # The next trigger re-runs the synthesis and cleans up the killed writer's claim.
        rerun = asyncio.run(
            synthesis_graph(reopened, f"rerun{kill}").ainvoke({}, context=SynthesisContext(user_id=USER))
        )
        assert rerun["outcome"]["status"] == "accepted", rerun["outcome"]
        current = reopened.current_persona(USER)
        assert current is not None and current.version == rerun["outcome"]["persona_version"]
        assert current.version > before.version and f"rerun{kill}" in current.text
        assert all(row.get("complete") is True for row in _raw_persona_rows(reopened))
        check_consistent(reopened, current.version)
        figures["reruns_accepted"] += 1
        _release_chroma()

    final = open_store(path, prefix)
    figures["final_version"] = final.current_persona(USER).version  # type: ignore[union-attr]
    figures["kill_delays_s"] = delays
    write_summary("crash_resynthesis", figures)
    assert figures["kills"] == KILLS and figures["reruns_accepted"] == KILLS
    assert figures["versions_saved_by_killed_workers"] > 0  # kills landed after some saves, too
