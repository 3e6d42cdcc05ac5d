"""Start and stop a local `chroma run` server: the multi-process mode, used by tests and scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from persona_agent.benchmarks.ports import free_port


def chroma_executable() -> Path:
    """Find the `chroma` command installed beside the running Python, else on PATH."""
    beside = Path(sys.executable).parent / "chroma"
    if beside.exists():
        return beside
    found = shutil.which("chroma")
    if found is None:
        raise FileNotFoundError("the `chroma` command is not installed (it comes with the chromadb wheel)")
    return Path(found)


class ChromaServer:
    """A `chroma run --path DIR` child process on a free local port; a context manager."""

    def __init__(self, path: str | Path, *, port: int | None = None, startup_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.path.parent / f"{self.path.name}-chroma-{self.port}.log"

    @property
    def address(self) -> str:
        """The server as host:port, the form settings and `make_client(server=...)` take."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server."""
        return self.process.pid if self.process else None

    def _heartbeat(self) -> bool:
        try:
            url = f"http://{self.host}:{self.port}/api/v2/heartbeat"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start(self) -> ChromaServer:
        """Start the server and wait until its heartbeat answers."""
        self.path.mkdir(parents=True, exist_ok=True)
        command = [str(chroma_executable()), "run", "--path", str(self.path)]
        command += ["--host", self.host, "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chroma server exited early: {self.log_path.read_text()[-2000:]}")
            if self._heartbeat():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"chroma server did not answer within {self.startup_timeout_s} s")

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process (Linux), or None when unknown."""
        if self.process is None:
            return None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def stop(self) -> None:
        """Stop the server by its pid (terminate, then kill after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
