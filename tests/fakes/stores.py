"""Stores and pairs for tests: `make_pair`, `make_memory`, and the memory fixtures.

The fixtures (`chroma_server`, `client_kind`, `make_store`, `store`) give one store per test over
each Chroma client kind; a test module uses them by importing their names from `tests.fakes`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.records import Limits, PreferencePair, Turn
from devtools.chroma_server import ChromaServer
from memory.chroma import make_client
from memory.store import PreferenceStore
from tests.fakes.embeddings import WordHashEmbeddings

CLIENT_KINDS = ["ephemeral", "persistent", pytest.param("http", marks=pytest.mark.slow)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_pair(
    user_id: str,
    question: str,
    chosen: str = "A careful, complete answer.",
    rejected: str = "meh",
    *,
    minutes: int = 0,
    source: str = "explicit",
    history: Sequence[tuple[str, str]] = (),
) -> PreferencePair:
    """Build a valid pair created `minutes` after a fixed start time."""
    context = [Turn(role=role, content=content) for role, content in history]  # type: ignore[arg-type]
    context.append(Turn(role="user", content=question))
    return PreferencePair(
        user_id=user_id,
        context=tuple(context),
        chosen=chosen,
        rejected=rejected,
        created_at=T0 + timedelta(minutes=minutes),
        source=source,  # type: ignore[arg-type]
    )


def make_memory(path: Path | None = None, prefix: str | None = None) -> PreferenceStore:
    """A store over an in-memory (or on-disk) Chroma with the word-hash embedder."""
    client = make_client(path=path) if path else make_client(ephemeral=True)
    return PreferenceStore(client, WordHashEmbeddings(), prefix=prefix or f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A real `chroma run` server on a free port for the whole session, stopped by pid afterwards."""
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server") / "db").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    """Which Chroma client the store under test talks to."""
    return str(request.param)


StoreFactory = Callable[..., PreferenceStore]


@pytest.fixture
def make_store(client_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> StoreFactory:
    """Return a factory of stores over this test's own collections, on the parametrized client kind."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    server = request.getfixturevalue("chroma_server") if client_kind == "http" else None

    def build(
        embeddings: Any | None = None, *, fresh_client: bool = False, **options: Any
    ) -> PreferenceStore:
        del fresh_client  # every call opens a new client; Chroma shares state per path/process anyway
        if client_kind == "ephemeral":
            client = make_client(ephemeral=True)
        elif client_kind == "persistent":
            client = make_client(path=tmp_path / "chroma")
        else:
            assert server is not None
            client = make_client(server=server.address)
        options.setdefault("limits", Limits(max_text_chars=5_000))
        return PreferenceStore(client, embeddings or WordHashEmbeddings(), prefix=prefix, **options)

    return build


@pytest.fixture
def store(make_store: StoreFactory) -> PreferenceStore:
    """A store with the fake word-hash embedder."""
    return make_store()
