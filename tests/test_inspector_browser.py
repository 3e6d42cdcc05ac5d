"""The memory inspector in headless Chromium, against `persona-agent serve`, driven over DevTools."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from memory.chroma_server import free_port
from tests.langgraph_server import REPO_ROOT, LangGraphServer

pytestmark = pytest.mark.slow

TOKEN = "carol-browser-token"
ARTIFACTS = REPO_ROOT / "test-artifacts"
PERSONA_V1 = "Carol likes short answers."
PERSONA_V2 = "Carol likes short answers that end with one concrete example."


def chromium_executable() -> str:
    """Find Chromium (Debian's `chromium`, or `chromium-browser` / `google-chrome`)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("Chromium is not installed: run `make browser` (apt-get install chromium)")


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result, skipping the events that arrive meanwhile."""
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv(timeout=30))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its JSON value."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 20.0) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"still false after {timeout_s} s: {expression}")


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[str]:
    """Start headless Chromium with a debugging port; yield its DevTools HTTP address; stop it by pid."""
    port = free_port()
    process = subprocess.Popen(
        [
            chromium_executable(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{address}/json/version", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("Chromium did not start its DevTools endpoint") from None
                time.sleep(0.2)
        yield address
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _seed(url: str) -> None:
    """Import pairs (one the default judge got wrong, with verified reasoning) and two persona versions."""
    lines = []
    for i, (question, chosen) in enumerate(
        [
            ("How do I boil pasta?", "Salt the water, boil 9 minutes. Example: spaghetti."),
            ("How do I fix a flat bicycle tyre?", "Find the hole, patch it. Example: a glueless patch."),
            ("What is a good houseplant for a dark room?", "A ZZ plant. Example: mine lives in a hallway."),
        ]
    ):
        record: dict[str, Any] = {
            "context": [{"role": "user", "content": question}],
            "chosen": {"role": "assistant", "content": chosen},
            "rejected": {"role": "assistant", "content": f"A very long essay about question {i}..."},
            "created_at": f"2026-01-0{i + 1}T10:00:00+00:00",
        }
        if i == 0:
            record["annotations"] = {
                "default_judge_correct": False,
                "has_verified_reasoning": True,
                "reasoning": "Carol wants the short answer with an example.",
            }
        lines.append(record)
    for version, text in ((1, PERSONA_V1), (2, PERSONA_V2)):
        persona = {"user_id": "carol", "text": text, "version": version, "model": "stub"}
        persona["created_at"] = f"2026-02-0{version}T10:00:00+00:00"
        lines.append({"kind": "persona", "current": version == 2, "persona": persona, "demos": []})
    body = "\n".join(json.dumps(line) for line in lines)
    response = httpx.post(
        f"{url}/memory/pairs/import", content=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    assert response.status_code == 201, response.text
    assert response.json()["imported"] == {"pairs": 3, "personas": 2}


def test_inspector_shows_persona_history_pairs_and_retrieval(
    tmp_path: Path, chromium: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PERSONA_AGENT_TOKENS": f"{TOKEN}=carol,other-user-token=dave"}
    with LangGraphServer(tmp_path / "server", env=env) as server:
        _seed(server.url)
        request = urllib.request.Request(f"{chromium}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            target = json.loads(response.read())
        with connect(target["webSocketDebuggerUrl"], max_size=2**26) as socket:
            page = DevTools(socket)
            page.call("Page.enable")
            page.call("Runtime.enable")
            page.call(
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=1600,
                deviceScaleFactor=1,
                mobile=False,
            )
            page.call("Page.navigate", url=f"{server.url}/inspector#token={TOKEN}")
            page.wait_for("document.body && document.body.dataset.loaded === 'true'")

            # The token left the address bar; the persona and its history rendered.
            assert page.evaluate("location.hash") == ""
            assert page.evaluate("document.getElementById('persona-text').textContent") == PERSONA_V2
            assert "Signed in as carol" in page.evaluate("document.getElementById('whoami').textContent")
            versions = page.evaluate(
                "[...document.querySelectorAll('#history-body tr')].map(r => r.dataset.version)"
            )
            assert versions == ["2", "1"]

            # The diff between the two versions marks the added words.
            page.evaluate("document.getElementById('diff-button').click()")
            inserted = page.wait_for(
                "[...document.querySelectorAll('#diff ins')].map(n => n.textContent).join('')"
            )
            assert "example" in inserted and "concrete" in inserted
            assert page.evaluate("document.querySelectorAll('#diff del').length") >= 1

            # Pairs: newest first, with what the default judge made of each.
            rows = page.evaluate(
                "[...document.querySelectorAll('#pairs-body tr')].map(r => r.children[2].textContent)"
            )
            assert rows == [
                "What is a good houseplant for a dark room?",
                "How do I fix a flat bicycle tyre?",
                "How do I boil pasta?",
            ]
            badges = page.evaluate("document.querySelector('#pairs-body tr:last-child').textContent")
            assert "judged wrong" in badges and "verified reasoning" in badges

            # Demo retrieval for a question finds the pasta pair first and says why.
            page.evaluate(
                "document.getElementById('query').value = 'how long should pasta boil';"
                "document.getElementById('k').value = '2';"
                "document.getElementById('retrieval-form').requestSubmit()"
            )
            demos = page.wait_for(
                "[...document.querySelectorAll('#demo-results li.demo')].map(li => li.textContent)"
            )
            assert len(demos) == 2
            assert "How do I boil pasta?" in demos[0] and "similarity" in demos[0]

            ARTIFACTS.mkdir(exist_ok=True)
            shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            (ARTIFACTS / "inspector.png").write_bytes(base64.b64decode(shot["data"]))

            # Rolling back from the page makes version 1 current.
            page.evaluate("document.querySelector('#history-body tr[data-version=\"1\"] button').click()")
            page.wait_for(f"document.getElementById('persona-text').textContent === {json.dumps(PERSONA_V1)}")

            # Another user's token opens an empty memory, not Carol's.
            page.call("Page.navigate", url=f"{server.url}/inspector#token=other-user-token")
            page.wait_for(
                "document.body.dataset.loaded === 'true'"
                " && document.getElementById('whoami').textContent.includes('dave')"
            )
            assert page.evaluate("document.querySelectorAll('#pairs-body tr[data-pair-id]').length") == 0
            assert page.evaluate("document.getElementById('persona-empty').hidden") is False

            # A wrong token shows an error instead of any memory.
            page.call("Page.navigate", url=f"{server.url}/inspector#token=not-a-real-token")
            error = page.wait_for("document.getElementById('error').textContent")
            assert "401" in error
            assert page.evaluate("document.getElementById('content').hidden") is True
    assert (ARTIFACTS / "inspector.png").stat().st_size > 10_000
