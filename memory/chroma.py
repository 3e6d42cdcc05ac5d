"""Build Chroma clients: a local store on disk, a `chroma run` server, or an in-memory one for tests.

Telemetry is always off (the project runs offline). Collection names are checked here because
Chroma accepts only 3-512 characters of ``[a-zA-Z0-9._-]`` that start and end alphanumeric.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from agent.errors import ConfigurationError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.config import Settings

T = TypeVar("T")
# chromadb 1.5.9's server can fail a read that races another client's first writes to a
# collection with "Error creating hnsw segment reader: Nothing found on disk"; the same read
# succeeds a moment later.
_TRANSIENT_READ = "Nothing found on disk"

_COLLECTION_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]{1,510})[a-zA-Z0-9]$")


def _settings() -> Settings:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


def parse_server(server: str) -> tuple[str, int]:
    """Split ``host:port`` (or ``http://host:port``) into its parts."""
    address = server.removeprefix("http://").rstrip("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"Chroma server must be host:port, got {server!r}")
    return host, int(port)


def make_client(
    *, path: str | Path | None = None, server: str | None = None, ephemeral: bool = False
) -> ClientAPI:
    """Return a Chroma client: persistent at `path`, HTTP to `server` (host:port), or in-memory."""
    import chromadb

    chosen = sum([path is not None, server is not None, ephemeral])
    if chosen != 1:
        raise ConfigurationError("give exactly one of path, server or ephemeral=True")
    if server is not None:
        host, port = parse_server(server)
        return chromadb.HttpClient(host=host, port=port, settings=_settings())
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=_settings())
    return chromadb.EphemeralClient(settings=_settings())


# The implementations that run Chroma inside this process (`EphemeralClient`, `PersistentClient`),
# by the dotted name chromadb 1.5.9 keeps in `Settings.chroma_api_impl`: chromadb has no public call
# that says whether a client talks to a server. An implementation not listed here (`HttpClient`,
# `CloudClient`, one a later chromadb adds) counts as a server, which is always correct, only slower.
_IN_PROCESS_APIS = frozenset({"chromadb.api.rust.RustBindingsAPI", "chromadb.api.segment.SegmentAPI"})


def is_in_process(client: ClientAPI) -> bool:
    """True when `client` runs Chroma inside this process, so no other process writes its collections."""
    return str(client.get_settings().chroma_api_impl) in _IN_PROCESS_APIS


def check_collection_name(name: str) -> str:
    """Return `name` if Chroma accepts it as a collection name, else raise ConfigurationError."""
    if not _COLLECTION_NAME.match(name):
        raise ConfigurationError(
            f"collection name {name!r} must be 3-512 characters of letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def read_retrying(read: Callable[[], T], *, attempts: int = 4, pause_s: float = 0.05) -> T:
    """Run a Chroma read, retrying the server's transient "nothing found on disk" failure."""
    from chromadb.errors import InternalError

    for attempt in range(attempts):
        try:
            return read()
        except InternalError as exc:
            if _TRANSIENT_READ not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(pause_s * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")
