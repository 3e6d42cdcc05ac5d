"""Start `persona-agent serve` (langgraph dev) on a free loopback port for tests and load checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from persona_agent.benchmarks.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


class LangGraphServer:
    """`persona-agent serve` as a child process group on 127.0.0.1; a context manager."""

    def __init__(
        self,
        state_dir: Path,
        *,
        env: Mapping[str, str],
        port: int | None = None,
        dev_auth: bool = False,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.env = dict(env)
        self.port = port or free_port()
        self.dev_auth = dev_auth
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.state_dir / f"langgraph-{self.port}.log"

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the `persona-agent serve` process (the leader of its group)."""
        return self.process.pid if self.process else None

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ok", timeout=1.0) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start(self) -> LangGraphServer:
        """Start the server and wait until it answers /ok."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "persona_agent.cli", "serve", "--port", str(self.port)]
        command += ["--state-dir", str(self.state_dir)]
        if self.dev_auth:
            command.append("--dev")
        env = {**self.env, "PYTHONPATH": str(REPO_ROOT)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"the server did not answer within {self.startup_timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server's process group (serve and the langgraph dev it started), by its pid."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LangGraphServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
