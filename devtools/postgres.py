"""A throwaway PostgreSQL cluster on a free loopback port, for the scale-out tests and check.

`PostgresCluster` runs the server binaries of the installed PostgreSQL (Debian's
``/usr/lib/postgresql/<version>/bin``, else whatever is on PATH): `initdb` into a fresh temporary
folder with trust authentication for the ``postgres`` role, `pg_ctl start` listening on
127.0.0.1 and a socket in that folder, and on exit `pg_ctl stop` and the folder removed. The
server refuses to run as root, so under root both commands run as the ``postgres`` system user
(`runuser`), which owns the folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from persona_agent.benchmarks.ports import free_port

_SYSTEM_USER = "postgres"


def postgres_bindir() -> Path:
    """Return the folder of `initdb` and `pg_ctl`: the newest Debian install, else PATH's."""
    installed = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3])
    )
    if installed:
        return Path(installed[-1]).parent
    found = shutil.which("initdb")
    if found is None:
        raise FileNotFoundError(
            "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"
        )
    return Path(found).parent


class PostgresCluster:
    """A PostgreSQL server in a temporary folder, for as long as the context lasts."""

    def __init__(self, *, port: int | None = None, startup_timeout_s: int = 60) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.folder: Path | None = None
        self._bindir = postgres_bindir()
        self._as_user = ["runuser", "-u", _SYSTEM_USER, "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        """The connection URL of the ``postgres`` database, the form `checkpoint_url` takes."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [*self._as_user, str(self._bindir / args[0]), *args[1:]]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            log = self.folder / "server.log" if self.folder else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}{tail}")

    def start(self) -> PostgresCluster:
        """Create the cluster and start the server; return when it accepts connections."""
        self.folder = Path(tempfile.mkdtemp(prefix="persona-agent-pg-"))
        if self._as_user:
            shutil.chown(self.folder, user=_SYSTEM_USER)
        data = self.folder / "data"
        try:
            self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
            options = f"-p {self.port} -k {self.folder} -h {self.host}"
            self._run(
                "pg_ctl", "-D", str(data), "-o", options, "-l", str(self.folder / "server.log"),
                "-w", "-t", str(self.startup_timeout_s), "start",
            )  # fmt: skip
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        if self.folder is None:
            return
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
