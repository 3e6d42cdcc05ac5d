"""Several app processes serve the same users over one PostgreSQL and one `chroma run` server.

`run_scaleout` starts ``workers`` worker processes (this module run with ``--worker``), each an
app process that builds the chat graph from settings as `persona-agent chat` does: threads in
PostgreSQL (`checkpoint_url`), memory on the Chroma server (`chroma_server`), models at an
OpenAI-compatible endpoint. Each worker answers ``POST /turn`` (one chat turn, optionally with
feedback on the thread's previous turn) and ``GET /thread`` (a thread's messages) on loopback,
as an app behind a load balancer would.

The traffic: every user holds two threads and talks in both at once; the user's turns are
numbered in the order they are made, and turn ``t`` of user ``u`` goes to worker ``(u + t) %
workers``, so consecutive turns of one user land on different processes, and a synthesis that
one turn triggers runs while another process serves the same user's other thread. Half of the
turns (chosen with a seeded generator among those with a previous turn) carry feedback that
picks a candidate of the thread's previous turn.

Afterwards `check_run` verifies what a user would notice if processes trampled each other:

- every turn was answered; every feedback stored its pairs once, and each user has exactly
  those pairs;
- each thread's history holds every message sent to it, in order, each followed by one reply;
- every turn's pair count, read through that process's vector copy, includes every pair stored
  by turns that had finished before it began (and none that did not exist yet);
- persona versions run 1..n, each saved after the one before, one for each accepted synthesis;
- no two fits of one user overlapped in time (each worker logs when its fits ran).

It returns throughput, latency and the workers' CPU time per turn beside the problems found
(none on success).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.fit_stages import StageReporter, SynthesisResult
from agent.records import Demo, Persona, PreferencePair
from agent.synthesis import SynthesizeMe
from persona_agent.benchmarks.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = (
    "Which houseplants survive a dark flat?",
    "How long should pasta rest after draining?",
    "What is a gentle first week of cycling?",
    "How does a credit score work?",
    "How do I unclog a slow sink?",
    "Should I learn Python or JavaScript first?",
    "How do I stop waking up at 4am?",
    "What goes in a basic first-aid kit?",
)
THREADS_PER_USER = 2


# --- the worker process ------------------------------------------------------------------------
class TimedSynthesizeMe(SynthesizeMe):
    """SynthesizeMe that appends when each fit ran, and for whom, to `fit_log` (one JSON line each)."""

    fit_log: Path | None = None

    async def fit(
        self,
        train: Sequence[PreferencePair],
        val: Sequence[PreferencePair],
        *,
        current: Persona | None = None,
        current_demos: Sequence[Demo] = (),
        on_stage: StageReporter | None = None,
    ) -> SynthesisResult:
        """Fit as SynthesizeMe does; log the wall-clock interval it took."""
        started = time.time()
        try:
            return await super().fit(
                train, val, current=current, current_demos=current_demos, on_stage=on_stage
            )
        finally:
            if self.fit_log is not None:
                line = {"user_id": train[0].user_id, "pid": os.getpid(), "start": started, "end": time.time()}
                with self.fit_log.open("a") as log:  # one short append per line: lines never interleave
                    log.write(json.dumps(line) + "\n")


class _Server(ThreadingHTTPServer):
    """A thread per request, and a listen backlog for every turn in flight (the default is 5)."""

    daemon_threads = True
    request_queue_size = 512


async def _serve_worker(port: int, fit_log: Path) -> None:
    """Serve chat turns over the graph built from settings until the process is told to stop."""
    from langchain_core.messages import HumanMessage

    from graphs.state import ChatContext
    from persona_agent.factory import (
        build_chat_graph,
        build_chat_model,
        build_checkpointer,
        build_judge_model,
        build_store,
        build_synthesize_me,
    )
    from persona_agent.settings import load_settings

    settings = load_settings()
    store = build_store(settings)
    chat_model, judge_model = build_chat_model(settings), build_judge_model(settings)
    synthesizer = build_synthesize_me(settings, chat_model, judge_model, kind=TimedSynthesizeMe)
    synthesizer.fit_log = fit_log  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    async with build_checkpointer(settings) as checkpointer:
        graph = build_chat_graph(
            settings,
            store=store,
            checkpointer=checkpointer,
            chat_model=chat_model,
            judge_model=judge_model,
            synthesizer=synthesizer,
        )

        async def turn(body: dict[str, Any]) -> dict[str, Any]:
            payload: dict[str, Any] = {"messages": [HumanMessage(body["message"])]}
            if body.get("choice") is not None:
                payload["feedback"] = {"choice": body["choice"]}
            config: Any = {"configurable": {"thread_id": body["thread_id"]}}
            seen: dict[str, Any] = {}
            async for update in graph.astream(
                payload,
                config,
                context=ChatContext(user_id=body["user_id"]),
                stream_mode="updates",
                durability=settings.checkpoint_durability,
            ):
                for node, values in update.items():
                    seen[node] = values or {}
            feedback = seen.get("record_feedback", {})
            reply = seen.get("judge_replies", {}).get("messages") or [None]
            synthesis = seen.get("synthesize_persona", {}).get("synthesis")
            return {
                "reply": reply[-1].text if reply[-1] is not None else None,
                "pairs_added": feedback.get("pairs_added", []),
                "pair_count": feedback.get("pair_count"),
                "candidates": len(seen.get("draft_replies", {}).get("candidates") or []),
                "synthesis": synthesis,
            }

        async def thread(thread_id: str) -> dict[str, Any]:
            state = await graph.aget_state({"configurable": {"thread_id": thread_id}})
            messages = state.values.get("messages") or []
            return {"messages": [{"type": m.type, "content": m.text} for m in messages]}

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _run(self, work: Any) -> None:
                try:
                    self._answer(200, asyncio.run_coroutine_threadsafe(work, loop).result())
                except Exception as exc:
                    self._answer(500, {"error": f"{type(exc).__name__}: {exc}"})

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/health":
                    self._answer(200, {"pid": os.getpid(), "cpu_s": time.process_time()})
                elif url.path == "/thread":
                    self._run(thread(parse_qs(url.query)["thread_id"][0]))
                else:
                    self._answer(404, {"error": "unknown route"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/turn":
                    self._run(turn(body))
                elif self.path == "/stop":
                    self._answer(200, {})
                    loop.call_soon_threadsafe(stop.set)
                else:
                    self._answer(404, {"error": "unknown route"})

            def log_message(self, format: str, *args: Any) -> None:
                """Stay quiet: the coordinator reports."""

        server = _Server(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            await stop.wait()
        finally:
            server.shutdown()
            server.server_close()


# --- the coordinator ---------------------------------------------------------------------------
@dataclass
class Turn:
    """One turn as the coordinator sent it and what came back."""

    user_id: str
    thread_id: str
    worker: int
    message: str
    choice: int | None
    started: float = 0.0
    ended: float = 0.0
    expected_pairs: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def pairs(self) -> int:
        """How many pairs this turn's feedback stored."""
        return len(self.result.get("pairs_added", []))


@contextmanager
def worker_processes(
    count: int, *, env: dict[str, str], folder: Path, startup_timeout_s: float = 180.0
) -> Iterator[list[str]]:
    """Start `count` worker processes with settings from `env`; yield their base URLs."""
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    with ExitStack() as stack:
        for index in range(count):
            port = free_port()
            log = stack.enter_context((folder / f"worker-{index}-{port}.log").open("wb"))
            command = [sys.executable, "-m", "persona_agent.benchmarks.scaleout", "--worker"]
            command += ["--port", str(port), "--fit-log", str(folder / "fits.jsonl")]
            processes.append(
                subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
            )
            urls.append(f"http://127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + startup_timeout_s
            for process, url in zip(processes, urls, strict=True):
                while not _healthy(url):
                    if process.poll() is not None or time.monotonic() > deadline:
                        logs = "".join(p.read_text()[-1500:] for p in folder.glob("worker-*.log"))
                        raise RuntimeError(f"worker at {url} did not start:\n{logs}")
                    time.sleep(0.2)
            yield urls
        finally:
            for url in urls:
                _post_quietly(f"{url}/stop")
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _worker_cpu_s(url: str) -> float:
    """Return the CPU seconds a worker process has used so far."""
    with urllib.request.urlopen(f"{url}/health", timeout=30.0) as response:
        return float(json.loads(response.read())["cpu_s"])


def _post_quietly(url: str) -> None:
    try:
        request = urllib.request.Request(url, data=b"{}", method="POST")
        urllib.request.urlopen(request, timeout=5.0).close()
    except OSError:
        pass


def _thread_of(turn: int) -> int:
    """Return the thread of a user's turn: two turns in one, two in the other, and so on.

    With consecutive turns on different workers, each thread then moves between processes too.
    """
    return (turn // 2) % THREADS_PER_USER


def plan_turns(users: Sequence[str], turns: int, workers: int, *, seed: int = 0) -> list[list[Turn]]:
    """Return each user's turns in order: alternating threads, consecutive turns on other workers."""
    per_user = turns // len(users)
    plans = []
    for u, user in enumerate(users):
        plan = [
            Turn(
                user_id=user,
                thread_id=f"{user}-t{_thread_of(t)}",
                worker=(u + t) % workers,
                message=f"{QUESTIONS[(u + t) % len(QUESTIONS)]} ({user}, turn {t})",
                choice=None,
            )
            for t in range(per_user)
        ]
        plans.append(plan)
    # Feedback needs a previous turn on the same thread; half of all turns get it.
    follow_ups = [t for t in range(per_user) if _thread_of(t) in {_thread_of(e) for e in range(t)}]
    eligible = [(u, t) for u in range(len(users)) for t in follow_ups]
    for u, t in random.Random(seed).sample(eligible, min(len(eligible), (per_user * len(users)) // 2)):
        plans[u][t].choice = (u + t) % 3
    return plans


async def _send(client: Any, url: str, turn: Turn, candidates_before: int) -> None:
    """Send one turn; its feedback picks a candidate the thread's previous turn offered."""
    if turn.choice is not None:
        turn.choice = turn.choice % candidates_before if candidates_before > 1 else None
        turn.expected_pairs = candidates_before - 1 if turn.choice is not None else 0
    body = {
        "user_id": turn.user_id,
        "thread_id": turn.thread_id,
        "message": turn.message,
        "choice": turn.choice,
    }
    turn.started = time.monotonic()
    try:
        response = await client.post(f"{url}/turn", json=body)
        turn.result = response.json()
        if response.status_code != 200:
            turn.error = turn.result.get("error", f"HTTP {response.status_code}")
    except Exception as exc:
        turn.error = f"{type(exc).__name__}: {exc}"
    turn.ended = time.monotonic()


async def drive(urls: Sequence[str], plans: Sequence[Sequence[Turn]]) -> float:
    """Run every user's threads at once, each thread's turns in order; return the seconds taken."""
    import httpx

    async def thread_of(client: Any, turns: Sequence[Turn]) -> None:
        offered = 0
        for turn in turns:
            await _send(client, urls[turn.worker], turn, offered)
            offered = int(turn.result.get("candidates") or 0)

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.monotonic()
        jobs = []
        for plan in plans:
            for thread in range(THREADS_PER_USER):
                jobs.append(thread_of(client, [t for i, t in enumerate(plan) if _thread_of(i) == thread]))
        await asyncio.gather(*jobs)
        return time.monotonic() - started


def check_run(
    plans: Sequence[Sequence[Turn]], store: Any, urls: Sequence[str], fits: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Verify the run (see the module docstring); return counts and the problems found."""
    problems: list[str] = []
    turns = [turn for plan in plans for turn in plan]
    for turn in turns:
        if turn.error or not turn.result.get("reply"):
            problems.append(f"{turn.thread_id} '{turn.message}': not answered ({turn.error})")
    accepted = skipped_busy = 0
    for plan in plans:
        user = plan[0].user_id
        added = [pair_id for turn in plan for pair_id in turn.result.get("pairs_added", [])]
        expected = sum(turn.expected_pairs for turn in plan)
        if len(added) != len(set(added)):
            problems.append(f"{user}: a pair was stored twice")
        if len(added) != expected:
            problems.append(f"{user}: feedback stored {len(added)} pairs, {expected} expected")
        stored = store.count_pairs(user)
        if stored != len(added):
            problems.append(f"{user}: {stored} pairs stored, {len(added)} made")
        # The pair count each turn saw: at least what finished turns stored, at most what existed.
        for turn in plan:
            seen = turn.result.get("pair_count")
            if seen is None:
                continue
            floor = turn.pairs + sum(other.pairs for other in plan if other.ended < turn.started)
            ceiling = sum(other.pairs for other in plan if other.started < turn.ended)
            if not floor <= seen <= ceiling:
                problems.append(f"{user} turn '{turn.message}': saw {seen} pairs, {floor}-{ceiling} existed")
        # Threads: every message, in order, each answered once.
        for thread in range(THREADS_PER_USER):
            sent = [t for i, t in enumerate(plan) if _thread_of(i) == thread]
            thread_id = sent[0].thread_id
            other = urls[(sent[-1].worker + 1) % len(urls)]  # read through another process
            with urllib.request.urlopen(f"{other}/thread?thread_id={thread_id}", timeout=60) as response:
                messages = json.loads(response.read())["messages"]
            humans = [m["content"] for m in messages if m["type"] == "human"]
            kinds = [m["type"] for m in messages]
            if humans != [t.message for t in sent] or kinds != ["human", "ai"] * len(sent):
                problems.append(f"{thread_id}: history {kinds} does not hold the {len(sent)} turns in order")
        # Personas: versions 1..n, saved in order, one per accepted synthesis.
        outcomes = [turn.result["synthesis"] for turn in plan if turn.result.get("synthesis")]
        won = sorted(o["persona_version"] for o in outcomes if o["status"] == "accepted")
        accepted += len(won)
        skipped_busy += sum("another synthesis" in o["detail"] for o in outcomes)
        history = store.persona_history(user)
        versions = [persona.version for persona in history]
        if versions != list(range(1, len(versions) + 1)) or won != versions:
            problems.append(f"{user}: persona versions {versions}, accepted syntheses saved {won}")
        created = [persona.created_at for persona in history]
        if created != sorted(created):
            problems.append(f"{user}: persona versions were not saved in order")
        # Fits of one user never overlapped, whichever processes ran them.
        intervals = sorted((fit["start"], fit["end"], fit["pid"]) for fit in fits if fit["user_id"] == user)
        for before, after in itertools.pairwise(intervals):
            if after[0] < before[1]:
                problems.append(f"{user}: fits in processes {before[2]} and {after[2]} overlapped")
    return {
        "turns": len(turns),
        "answered": sum(1 for turn in turns if turn.result.get("reply") and not turn.error),
        "feedback_turns": sum(1 for turn in turns if turn.choice is not None),
        "pairs": sum(turn.pairs for turn in turns),
        "fits": sum(1 for fit in fits if any(fit["user_id"] == plan[0].user_id for plan in plans)),
        "accepted_syntheses": accepted,
        "skipped_while_another_ran": skipped_busy,
        "problems": problems,
    }


def run_scaleout(
    *,
    workers: int,
    users: int,
    turns: int,
    checkpoint_url: str,
    chroma_server: str,
    openai_base_url: str,
    run_id: str,
    folder: Path | None = None,
) -> dict[str, Any]:
    """Start `workers` processes, run the traffic for fresh users, check it; return the figures."""
    from persona_agent.factory import build_store
    from persona_agent.settings import load_settings

    with ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scaleout-")))
        folder.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            # The workers import this checkout, whatever the environment's install points at.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "OPENAI_BASE_URL": openai_base_url,
            "OPENAI_API_KEY": "stub",
            "PERSONA_AGENT_CHECKPOINT_URL": checkpoint_url,
            "PERSONA_AGENT_CHROMA_SERVER": chroma_server,
            "PERSONA_AGENT_DATA_DIR": str(folder / "data"),
            "PERSONA_AGENT_JUDGE": "llm",
            "ANONYMIZED_TELEMETRY": "False",
            "TOKENIZERS_PARALLELISM": "false",
        }
        names = [f"{run_id}-u{index:02d}" for index in range(users)]
        plans = plan_turns(names, turns, workers)
        with worker_processes(workers, env=env, folder=folder) as urls:
            cpu_before = sum(_worker_cpu_s(url) for url in urls)
            seconds = asyncio.run(drive(urls, plans))
            cpu_s = sum(_worker_cpu_s(url) for url in urls) - cpu_before
            fits_path = folder / "fits.jsonl"
            lines = fits_path.read_text().splitlines() if fits_path.exists() else []
            fits = [json.loads(line) for line in lines]
            store = build_store(load_settings(chroma_server=chroma_server, data_dir=folder / "data"))
            report = check_run(plans, store, urls, fits)
    latencies = sorted(turn.ended - turn.started for plan in plans for turn in plan)
    report.update(
        workers=workers,
        users=users,
        seconds=round(seconds, 2),
        turns_per_s=round(len(latencies) / seconds, 2),
        latency_p50_s=round(statistics.median(latencies), 3),
        latency_p95_s=round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
        worker_cpu_ms_per_turn=round(1000 * cpu_s / len(latencies), 1),
        load_average_1min=round(os.getloadavg()[0], 1),
    )
    return report


def main() -> None:
    """Run as a worker process (``--worker``); the coordinator starts these."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fit-log", type=Path, required=True)
    arguments = parser.parse_args()
    asyncio.run(_serve_worker(arguments.port, arguments.fit_log))


if __name__ == "__main__":
    main()
