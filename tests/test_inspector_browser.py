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

from agent.archetypes import load_archetypes
from devtools.langgraph_server import REPO_ROOT, LangGraphServer
from persona_agent.benchmarks.ports import free_port

pytestmark = pytest.mark.slow

TOKEN = "carol-browser-token"
ARTIFACTS = REPO_ROOT / "test-artifacts"
PERSONA_V1 = "Carol likes short answers."
PERSONA_V2 = "Carol likes short answers that end with one concrete example."
# The offline reward model's persona: what it renders, and the statements the chart draws.
STATEMENTS = [
    {"feature": "length", "direction": "less", "text": "prefers shorter replies than most people",
     "weight": -0.9, "population_weight": 2.1, "deviation": -3.0, "n_pairs": 3},
    {"feature": "lists", "direction": "more", "text": "favours bullet lists",
     "weight": 0.8, "population_weight": 0.0, "deviation": 0.8, "n_pairs": 3},
    {"feature": "hedging", "direction": "less", "text": "dislikes hedging",
     "weight": -0.6, "population_weight": 0.4, "deviation": -1.0, "n_pairs": 3},
]  # fmt: skip
PERSONA_V3 = (
    "Measured on 3 of this user's choices, compared with most people's:\n- prefers shorter replies than "
    "most people\n- favours bullet lists\n- dislikes hedging\nWriting for them: keep it short; use a "
    "bullet list; no hedging."
)
# Whether the judge had ranked each seeded pick first, oldest first.
AGREED = [True, False, True]


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

    def open(self, url: str) -> None:
        """Load `url` as a new document: only the fragment differs from the inspector's own address,
        so navigating there directly would run in the old page, whose state could pass a wait."""
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)
        self.wait_for("location.protocol !== 'about:' && document.readyState === 'complete'")

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
            "metadata": {"judge_agreed": AGREED[i], "persona_version": 1},
        }
        if i == 0:
            record["annotations"] = {
                "default_judge_correct": False,
                "has_verified_reasoning": True,
                "reasoning": "Carol wants the short answer with an example.",
            }
        lines.append(record)
    # A reply the user asked to have redone, then kept the new one: an inferred, lighter pair.
    lines.append(
        {
            "context": [{"role": "user", "content": "Which tea suits an evening?"}],
            "chosen": {"role": "assistant", "content": "Chamomile. Example: a cup after dinner."},
            "rejected": {"role": "assistant", "content": "There are many teas to consider..."},
            "created_at": "2026-01-04T10:00:00+00:00",
            "source": "regenerate",
        }
    )
    for version, text, accuracy in ((1, PERSONA_V1, 0.5), (2, PERSONA_V2, 0.75)):
        persona = {
            "user_id": "carol",
            "text": text,
            "version": version,
            "model": "stub",
            "val_accuracy": accuracy,
        }
        persona["created_at"] = f"2026-02-0{version}T10:00:00+00:00"
        lines.append({"kind": "persona", "current": version == 2, "persona": persona, "demos": []})
    body = "\n".join(json.dumps(line) for line in lines)
    response = httpx.post(
        f"{url}/memory/pairs/import", content=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    assert response.status_code == 201, response.text
    assert response.json()["imported"] == {"pairs": 4, "personas": 2}


def _seed_offline_persona(url: str) -> None:
    """Import a third version, written by the offline reward model, as the current persona."""
    persona = {
        "user_id": "carol",
        "text": PERSONA_V3,
        "version": 3,
        "model": "offline reward model (features v1)",
        "source": "offline",
        "statements": STATEMENTS,
        "pair_ids": ["p1", "p2", "p3"],
        "val_accuracy": 0.625,
        "created_at": "2026-02-03T10:00:00+00:00",
    }
    body = json.dumps({"kind": "persona", "current": True, "persona": persona, "demos": []})
    response = httpx.post(
        f"{url}/memory/pairs/import", content=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    assert response.status_code == 201, response.text


def test_inspector_shows_persona_history_charts_agreement_pairs_and_retrieval(
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
            # Her persona was learnt from her pairs: no starting archetype is offered any more.
            assert page.evaluate("document.getElementById('start-choice').hidden") is True

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
                "Which tea suits an evening?",
                "What is a good houseplant for a dark room?",
                "How do I fix a flat bicycle tyre?",
                "How do I boil pasta?",
            ]
            badges = page.evaluate("document.querySelector('#pairs-body tr:last-child').textContent")
            assert "judged wrong" in badges and "verified reasoning" in badges
            # Each pair's source and weight; the inferred one is marked, the imported ones not.
            sources = page.evaluate(
                "[...document.querySelectorAll('#pairs-body tr')].map(r => r.children[1].textContent)"
            )
            assert sources == ["regenerateweight 0.3inferred"] + ["importweight 1"] * 3
            # The source filter offers every source and shows only the pairs of the one chosen.
            options = page.evaluate("[...document.getElementById('source').options].map(o => o.value)")
            assert options == ["", "explicit", "import", "implicit", "edit", "regenerate"]
            for source, shown in (("regenerate", 1), ("", 4)):
                page.evaluate(
                    f"(() => {{ const s = document.getElementById('source'); s.value = {json.dumps(source)};"
                    " s.dispatchEvent(new Event('change')); })()"
                )
                page.wait_for(f"document.querySelectorAll('#pairs-body tr').length === {shown}")
                first = page.evaluate("document.querySelector('#pairs-body tr').textContent")
                assert "Which tea" in first

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

            # An LLM wrote the current persona: what the offline model measures is shown beside it.
            source = page.wait_for("document.getElementById('learnt-source').textContent")
            assert "What the offline reward model measured on your 4 newest pairs" in source
            # Judge agreement: of the 3 picks, the judge had ranked 2 first; one dot per pick.
            agreement = page.evaluate("document.getElementById('agreement-text').textContent")
            assert agreement == "Of your last 3 picks, the judge had ranked your pick first 2 times (67%)."
            dots = page.evaluate(
                "[...document.querySelectorAll('#agreement-chart circle.pick')].map(c => c.classList[1])"
            )
            assert dots == ["agreed" if agreed else "missed" for agreed in AGREED]

            # Rolling back from the page makes version 1 current.
            page.evaluate("document.querySelector('#history-body tr[data-version=\"1\"] button').click()")
            page.wait_for(f"document.getElementById('persona-text').textContent === {json.dumps(PERSONA_V1)}")

            # A persona the offline reward model wrote: its statements as a bar chart, the pairs behind
            # each, and its accuracy in the chart of every version's.
            _seed_offline_persona(server.url)
            page.open(f"{server.url}/inspector#token={TOKEN}")
            page.wait_for(
                "document.body.dataset.loaded === 'true'"
                " && document.querySelectorAll('#statements-chart g.statement').length > 0"
            )
            assert page.evaluate("document.getElementById('persona-text').textContent") == PERSONA_V3
            assert "written by the offline reward model" in page.evaluate(
                "document.getElementById('persona-meta').textContent"
            )
            assert page.evaluate("document.getElementById('learnt-source').textContent") == (
                "The current persona's statements, written by the offline reward model from 3 pairs."
            )
            bars = page.evaluate(
                "[...document.querySelectorAll('#statements-chart g.statement')].map(g => ({"
                " feature: g.dataset.feature, text: g.querySelector('text.label').textContent,"
                " kind: g.querySelector('rect.bar').classList[1],"
                " width: g.querySelector('rect.bar').getBBox().width,"
                " x: g.querySelector('rect.bar').getBBox().x,"
                " pairs: g.querySelector('text.pairs').textContent }))"
            )
            assert [bar["feature"] for bar in bars] == ["length", "lists", "hedging"]
            assert [bar["text"] for bar in bars] == [item["text"] for item in STATEMENTS]
            assert [bar["kind"] for bar in bars] == ["disliked", "liked", "disliked"]
            assert all(bar["pairs"] == "3 pairs" for bar in bars)
            # Bar lengths follow the weights; negative weights extend left of the axis.
            assert bars[0]["width"] > bars[1]["width"] > bars[2]["width"] > 0
            assert bars[0]["x"] < bars[1]["x"] and bars[2]["x"] < bars[1]["x"]
            points = page.evaluate(
                "[...document.querySelectorAll('#accuracy-chart circle.point')]"
                ".map(c => [c.dataset.version, c.classList.contains('current'),"
                " Number(c.getAttribute('cy'))])"
            )
            assert [(version, current) for version, current, _ in points] == [
                ("1", False),
                ("2", False),
                ("3", True),
            ]
            heights = [cy for _, _, cy in points]  # SVG y grows downward: 75% sits above 62.5% above 50%
            assert heights[1] < heights[2] < heights[0]

            # Pinning a statement and removing another from the page: each makes a new version that
            # says so in the history; the removed statement leaves the persona.
            first, second = (item["text"] for item in STATEMENTS[:2])
            row = "document.querySelector('#statements-list li:nth-child({})')"
            page.evaluate(row.format(1) + ".querySelector('button[data-action=pin]').click()")
            page.wait_for(row.format(1) + ".dataset.origin === 'pinned'")
            page.evaluate(row.format(2) + ".querySelector('button[data-action=remove]').click()")
            page.wait_for(
                f"!document.getElementById('persona-text').textContent.includes({json.dumps(second)})"
            )
            assert first in page.evaluate("document.getElementById('persona-text').textContent")
            edits = page.evaluate(
                "[...document.querySelectorAll('#history-body tr')]"
                ".map(r => r.querySelector('td.edits').textContent)"
            )
            assert "pinned" in edits[0] and "removed" in edits[0] and "kept out" in edits[0]
            assert edits[1].startswith("pinned") and "removed" not in edits[1] and edits[2] == ""

            ARTIFACTS.mkdir(exist_ok=True)
            shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            (ARTIFACTS / "inspector.png").write_bytes(base64.b64decode(shot["data"]))

            # Another user's token opens an empty memory, not Carol's.
            page.open(f"{server.url}/inspector#token=other-user-token")
            page.wait_for(
                "document.body.dataset.loaded === 'true'"
                " && document.getElementById('whoami').textContent.includes('dave')"
            )
            assert page.evaluate("document.querySelectorAll('#pairs-body tr[data-pair-id]').length") == 0
            assert page.evaluate("document.getElementById('persona-empty').hidden") is False
            assert page.evaluate("document.getElementById('persona-start').hidden") is True

            # Dave, with no pairs, is offered the shipped archetypes, each with how many people it holds.
            assert page.evaluate("document.getElementById('start-choice').hidden") is False
            offered = page.evaluate(
                "[...document.querySelectorAll('#archetype-list li')].map(li => li.textContent)"
            )
            assert offered == [
                f"{item.key} \u2014 {item.title} ({item.users} {'person' if item.users == 1 else 'people'})"
                "start here"
                for item in load_archetypes()
            ]
            # He starts from "concise" with its button: its persona shows at once, with where it came from.
            page.evaluate(
                "document.querySelector('#archetype-list li[data-archetype=concise] button').click()"
            )
            page.wait_for(
                "!document.getElementById('persona-start').hidden"
                " && document.querySelector('#archetype-list li[data-archetype=concise] .badge') !== null"
            )
            assert "prefers shorter replies" in page.evaluate(
                "document.getElementById('persona-text').textContent"
            )
            assert "a starting archetype you chose" in page.evaluate(
                "document.getElementById('persona-meta').textContent"
            )
            assert "Started from the archetype \u201cconcise\u201d" in page.evaluate(
                "document.getElementById('persona-start').textContent"
            )
            versions = page.evaluate(
                "[...document.querySelectorAll('#history-body tr')].map(r => r.textContent)"
            )
            assert (
                len(versions) == 1
                and versions[0].startswith("v1 (current)")
                and "archetype concise" in versions[0]
            )
            chosen = page.evaluate(
                "document.querySelector('#archetype-list li[data-archetype=concise]').textContent"
            )
            assert "your start" in chosen and chosen.endswith("chosen")
            assert page.evaluate("document.getElementById('error').hidden") is True
            # The choice is stored, not only drawn: it is still there when the page is opened again.
            page.open(f"{server.url}/inspector#token=other-user-token")
            page.wait_for(
                "document.body.dataset.loaded === 'true' && !document.getElementById('persona-start').hidden"
            )
            assert "prefers shorter replies" in page.evaluate(
                "document.getElementById('persona-text').textContent"
            )

            # A wrong token shows an error instead of any memory.
            page.open(f"{server.url}/inspector#token=not-a-real-token")
            error = page.wait_for("document.getElementById('error').textContent")
            assert "401" in error
            assert page.evaluate("document.getElementById('content').hidden") is True
    assert (ARTIFACTS / "inspector.png").stat().st_size > 10_000
