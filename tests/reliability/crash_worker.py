"""The process the crash test kills: it re-synthesizes one user's persona over and over.

It opens a real on-disk Chroma store, runs the synthesis graph with a scripted fake model in a
loop, and appends one line per event to a progress file (``ready``, then ``saved <version>``
after each stored persona), so the test knows what had completed before the SIGKILL.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage

from agent.synthesis import SynthesizeMe
from graphs import synthesis
from graphs.state import SynthesisContext
from memory.chroma import make_client
from memory.store import PreferenceStore
from tests.fakes import (
    CountingChatModel,
    WordHashEmbeddings,
    persona_message,
    replies_of,
    task_of,
    verdict_message,
)

USER = "alice"


def scripted_model(tag: str) -> CountingChatModel:
    """A judge that prefers the shorter reply and writes a persona naming `tag` and the call number."""
    counter = itertools.count()

    def respond(messages: list[BaseMessage]) -> AIMessage:
        number = next(counter)
        if task_of(messages) == "induce":
            return persona_message(f"Prefers short, direct replies ({tag}, call {number}).")
        first, second = replies_of(messages)
        return verdict_message("First" if len(first) <= len(second) else "Second", "shorter is better")

    return CountingChatModel(responder=respond, keep_messages=False)


def open_store(
    path: Path, prefix: str, *, stale_write_s: float = 300.0, lease_s: float = 120.0
) -> PreferenceStore:
    """Open the store the test and the worker share (the worker never sets stale_write_s to 0)."""
    return PreferenceStore(
        make_client(path=path),
        WordHashEmbeddings(),
        prefix=prefix,
        stale_write_s=stale_write_s,
        lease_s=lease_s,
    )


def synthesis_graph(store: PreferenceStore, tag: str) -> object:
    """The product's synthesis graph over a scripted model."""
    model = scripted_model(tag)
    return synthesis.build_graph(
        synthesizer=SynthesizeMe(model, max_calls=80, max_pairs=12, seed=3),
        memory=store,
        retry_interval_s=0.01,
    )


def _note(progress: Path, line: str) -> None:
    with progress.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def synthesize_until_killed(path: str, prefix: str, progress: str, tag: str) -> None:
    """Re-synthesize the user's persona in a loop, noting each stored version, until killed."""
    store = open_store(Path(path), prefix)
    graph = synthesis_graph(store, tag)
    _note(Path(progress), "ready")

    async def loop() -> None:
        while True:
            final = await graph.ainvoke({}, context=SynthesisContext(user_id=USER))  # type: ignore[attr-defined]
            outcome = final["outcome"]
            if outcome["status"] == "accepted":
                _note(Path(progress), f"saved {outcome['persona_version']}")

    asyncio.run(loop())
