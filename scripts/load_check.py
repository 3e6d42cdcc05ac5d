"""Load check of the served chat graph: concurrent turns for several users, nothing lost, no leaks.

Starts an OpenAI-compatible stub (`devtools.openai_stub`) and `persona-agent serve` on loopback (or
uses ``--url`` with ``--tokens`` of a running server), then runs ``--rounds`` rounds; in each,
``--concurrency`` chat turns run at once, spread over ``--users`` users (each turn on its own
thread). From the second round on every turn also picks a candidate of the previous one, so
pairs are stored (and personas synthesized) while other turns run. Afterwards it checks:

- every turn was answered with an AI message;
- no pair was lost: each user has exactly the pairs their picks made;
- each user's memory holds only their pairs, and persona versions are unique;

and prints p50/p95 turn latency. Run: ``python scripts/load_check.py [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from langgraph_sdk import get_client

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from devtools.langgraph_server import LangGraphServer  # noqa: E402
from devtools.openai_stub import OpenAIStub  # noqa: E402

QUESTIONS = (
    "How do I keep basil alive indoors?",
    "What is a quick weeknight dinner?",
    "How should I start running?",
    "Explain compound interest simply.",
    "How do I fix a squeaky door?",
    "What's a good first programming language?",
)


@dataclass
class Report:
    """What the load check saw."""

    latencies_s: list[float] = field(default_factory=list)
    answered: int = 0
    failed: list[str] = field(default_factory=list)
    expected_pairs: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Return the figures as JSON-ready values."""
        ordered = sorted(self.latencies_s)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

        return {
            "turns": len(self.latencies_s) + len(self.failed),
            "answered": self.answered,
            "failed": self.failed[:10],
            "latency_p50_s": round(statistics.median(ordered), 3) if ordered else None,
            "latency_p95_s": pct(0.95),
            "latency_max_s": round(ordered[-1], 3) if ordered else None,
            "problems": self.problems,
            "ok": not self.failed and not self.problems,
        }


async def one_turn(
    client: Any,
    thread_id: str,
    question: str,
    pick: int | None,
    report: Report,
    durability: str | None = None,
) -> int:
    """Run one chat turn; return how many candidates it offered."""
    payload: dict[str, Any] = {"messages": [{"role": "user", "content": question}]}
    if pick is not None:
        payload["feedback"] = {"choice": pick}
    started = time.perf_counter()
    try:
        result = await client.runs.wait(
            thread_id, "chat", input=payload, raise_error=True, durability=durability
        )
    except Exception as exc:
        report.failed.append(f"{type(exc).__name__}: {exc}"[:300])
        return 0
    report.latencies_s.append(time.perf_counter() - started)
    messages = result.get("messages") or []
    if messages and messages[-1].get("type") == "ai" and messages[-1].get("content"):
        report.answered += 1
    else:
        report.failed.append(f"thread {thread_id}: no AI answer")
    return len(result.get("candidates") or [])


async def run_load(
    url: str, tokens: dict[str, str], *, concurrency: int, rounds: int, durability: str | None = None
) -> Report:
    """Run the rounds of concurrent turns against a server and check every user's memory."""
    report = Report()
    users = list(tokens.items())
    clients = {
        user: get_client(url=url, headers={"Authorization": f"Bearer {token}"}) for token, user in users
    }
    slots = [users[i % len(users)][1] for i in range(concurrency)]
    threads = [(user, (await clients[user].threads.create())["thread_id"]) for user in slots]
    report.expected_pairs = {user: 0 for _, user in users}
    offered = [0] * len(threads)
    for round_index in range(rounds):
        jobs = []
        for slot, (user, thread_id) in enumerate(threads):
            pick = None
            if round_index and offered[slot] > 1:
                pick = (slot + round_index) % offered[slot]
                report.expected_pairs[user] += offered[slot] - 1
            question = QUESTIONS[(slot + round_index) % len(QUESTIONS)] + f" (round {round_index})"
            jobs.append(one_turn(clients[user], thread_id, question, pick, report, durability))
        offered = list(await asyncio.gather(*jobs))
    # runs.wait returns when the whole run, including a deferred synthesis, has finished.
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for token, user in users:
            headers = {"Authorization": f"Bearer {token}"}
            pairs = (await http.get("/memory/pairs", params={"limit": 200}, headers=headers)).json()
            if pairs["total"] != report.expected_pairs[user]:
                report.problems.append(
                    f"{user}: {pairs['total']} pairs stored, {report.expected_pairs[user]} expected"
                )
            owners = {pair["user_id"] for pair in pairs["pairs"]}
            if owners - {user}:
                report.problems.append(f"{user}: memory holds pairs of {sorted(owners - {user})}")
            persona = (await http.get("/memory/persona", headers=headers)).json()
            versions = [p["version"] for p in persona["history"]]
            if len(versions) != len(set(versions)):
                report.problems.append(f"{user}: duplicate persona versions {versions}")
            if {p["user_id"] for p in persona["history"]} - {user}:
                report.problems.append(f"{user}: persona history holds another user's persona")
    return report


def main() -> None:
    """Parse arguments, start the servers unless --url is given, run the check, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=20, help="Chat turns in flight at once.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="A running server (then --tokens is required).")
    parser.add_argument("--tokens", help="token=user,... of the running server's users.")
    parser.add_argument(
        "--stub-delay-s", type=float, default=0.0, help="Latency the stub model adds per call."
    )
    parser.add_argument(
        "--durability",
        choices=["exit", "async", "sync"],
        help="Checkpoint durability each run asks for (default: the server's, a checkpoint per step).",
    )
    parser.add_argument("--out", type=Path, help="Also write the summary JSON here.")
    args = parser.parse_args()

    with ExitStack() as stack:
        if args.url:
            if not args.tokens:
                parser.error("--url needs --tokens")
            url = args.url.rstrip("/")
            tokens = dict(item.split("=", 1) for item in args.tokens.split(","))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-check-")))
            stub = stack.enter_context(OpenAIStub(delay_s=args.stub_delay_s))
            tokens = {f"load-token-{i:04d}": f"load-user-{i}" for i in range(args.users)}
            env = {
                **os.environ,
                "OPENAI_BASE_URL": stub.base_url,
                "OPENAI_API_KEY": "stub-key",
                "PERSONA_AGENT_DATA_DIR": str(workdir / "data"),
                "PERSONA_AGENT_TOKENS": ",".join(f"{t}={u}" for t, u in tokens.items()),
            }
            server = stack.enter_context(LangGraphServer(workdir / "state", env=env))
            url = server.url
        started = time.perf_counter()
        report = asyncio.run(
            run_load(
                url, tokens, concurrency=args.concurrency, rounds=args.rounds, durability=args.durability
            )
        )
        summary = {
            "users": len(tokens),
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "durability": args.durability or "server default",
            "wall_s": round(time.perf_counter() - started, 2),
            "pairs_expected": report.expected_pairs,
            **report.summary(),
        }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
