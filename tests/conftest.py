"""Shared test setup: offline environment, repo paths, a network guard, a PostgreSQL server."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.postgres import PostgresCluster

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MT_BENCH = SHARED_DATA / "mt_bench_human" / "pairs.jsonl"
PRISM = SHARED_DATA / "prism_examples" / "pairs.jsonl"
SAMPLE_USER = REPO_ROOT / "persona_agent" / "data" / "sample_user.jsonl"


@pytest.fixture(autouse=True)
def _offline_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Give every test its own data directory and no model endpoint, whatever the machine has."""
    for name in (
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "PERSONA_AGENT_OPENAI_BASE_URL",
        "PERSONA_AGENT_OPENAI_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PERSONA_AGENT_DATA_DIR", str(tmp_path / "persona-data"))
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")


class NetworkBlocked(RuntimeError):
    """Raised when code under test tries to reach a non-loopback address."""


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host in ("localhost", "::1") or host.startswith("127.")
    return isinstance(address, str | bytes)  # unix sockets


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Fail any connection to a non-loopback address; yields the list of blocked attempts."""
    attempts: list[object] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def guard(address: object) -> None:
        if not _is_loopback(address):
            attempts.append(address)
            raise NetworkBlocked(f"network access blocked in tests: {address!r}")

    def connect(self: socket.socket, address: object) -> None:
        guard(address)
        real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        guard(address)
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host not in (None, "localhost") and not str(host).startswith(("127.", "::1")):
            attempts.append(host)
            raise NetworkBlocked(f"DNS lookup blocked in tests: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A real PostgreSQL server (Debian's packages) in a temporary folder, removed after the session."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def checkpoint_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's PostgreSQL server, dropped after the test."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_cluster.url.rpartition("/")[0] + f"/{name}"
    with psycopg.connect(postgres_cluster.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
