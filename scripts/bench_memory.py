"""Benchmark the memory store: ingest rate, demo-retrieval latency and memory, local and on a server.

Pairs are built from the real MT-Bench questions and answers in ``../shared/data``. Each chat
turn has ``--candidates`` replies, so it yields ``candidates - 1`` pairs sharing one context (the
best reply against each other one), as the agent stores them; every turn's context is made
distinct, so the embedding cache helps only within a turn, not across turns. Turns are spread
at random over ``--users`` users and stored one turn per `add_pairs` call (the online path) or
up to ``--turns-per-call`` turns of one user at once (an import of a user's history). With
``--contexts-seen`` each turn's retrieval key is embedded before the clock starts, as in the chat
graph, where feedback pairs share the context that the turn they answer already embedded to
retrieve its demos (the store's embedding cache then serves them): the rate is the store's own.

The store grows through ``--sizes`` (cumulative); at each size the script measures
``retrieve_demos`` latency over ``--queries`` queries for random users, with a new query text
each time, so the query embedding is always computed and counted: once as a user's first
retrieval in the process (their vectors read from Chroma) and once as a later one (the store's
in-process copy of their vectors is current). Targets: retrieval p95
<= 25 ms at 100k pairs, ingest >= 200 pairs/s, RSS < 1 GB.

    PYTHONPATH=. .venv/bin/python scripts/bench_memory.py --sizes 1000,10000,100000 --modes local,server
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from agent.formats import read_pairs  # noqa: E402
from agent.records import PreferencePair, Turn  # noqa: E402
from devtools.chroma_server import ChromaServer  # noqa: E402
from memory.chroma import make_client  # noqa: E402
from memory.retrieval import retrieval_embeddings, retrieval_text  # noqa: E402
from memory.store import PreferenceStore  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mt_bench_human" / "pairs.jsonl"
WORDS = (
    "today", "quickly", "please", "simply", "again", "briefly", "honestly", "exactly", "carefully",
    "really", "maybe", "now", "for work", "in winter", "on a budget", "for beginners", "step by step",
    "with examples", "for my sister", "in detail",
)  # fmt: skip


class HashedVectors:
    """Instant stand-in vectors (a seeded random unit vector per text), for ``--quick-fill``."""

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = [
            np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8])).normal(size=384)
            for text in texts
        ]
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), 384)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass(frozen=True)
class Corpus:
    """Real questions and answers to build synthetic turns from."""

    questions: list[str]
    answers: list[str]


def load_corpus(path: Path) -> Corpus:
    """Read MT-Bench pairs and keep their distinct questions and answers."""
    pairs = read_pairs(path, skip_invalid=True)
    questions = sorted({pair.query for pair in pairs})
    answers = sorted({text for pair in pairs for text in (pair.chosen, pair.rejected)})
    return Corpus(questions, answers)


def make_turn(
    corpus: Corpus, rng: random.Random, users: int, candidates: int, serial: int
) -> list[PreferencePair]:
    """Return the pairs of one chat turn of a random user: best reply against each other one."""
    user = f"user{rng.randrange(users):05d}"
    tail = " ".join(rng.sample(WORDS, 3))
    question = f"{rng.choice(corpus.questions)} ({tail}, #{serial})"
    replies = rng.sample(corpus.answers, candidates)
    context = (Turn(role="user", content=question),)
    return [
        PreferencePair(user_id=user, context=context, chosen=replies[0], rejected=other, source="implicit")
        for other in replies[1:]
    ]


def rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process, in MB."""
    current = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_mb": round(current, 1), "peak_rss_mb": round(peak, 1)}


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ingest(
    store: PreferenceStore, turns: list[list[PreferencePair]], turns_per_call: int
) -> tuple[float, int]:
    """Store the turns, each alone or (bulk) up to `turns_per_call` of one user per call.

    Returns seconds taken and pairs stored.
    """
    if turns_per_call > 1:  # an import of each user's history: group turns by user
        turns = sorted(turns, key=lambda turn: turn[0].user_id)
    calls: list[list[PreferencePair]] = []
    turns_in_call = 0
    for turn in turns:
        if calls and calls[-1][0].user_id == turn[0].user_id and turns_in_call < turns_per_call:
            calls[-1].extend(turn)
            turns_in_call += 1
        else:
            calls.append(list(turn))
            turns_in_call = 1
    started = time.perf_counter()
    stored = sum(len(store.add_pairs(pairs[0].user_id, pairs)) for pairs in calls)
    return time.perf_counter() - started, stored


def measure_retrieval(
    stores: tuple[PreferenceStore, PreferenceStore],
    corpus: Corpus,
    users: list[str],
    rng: random.Random,
    queries: int,
    k: int,
) -> dict[str, float]:
    """Time `retrieve_demos` (query embedding included) for random users and fresh query texts.

    Each query is timed twice for the same user: on a store that holds no vector copies (a user's
    first turn after the process started: vectors read from Chroma) and on the long-lived store
    after one earlier retrieval for that user (their later turns: the copy is current).
    """
    cached, uncached = stores
    latencies: dict[str, list[float]] = {"first": [], "later": []}
    embed_only = []
    for serial in range(queries):
        user = rng.choice(users)
        text = f"{rng.choice(corpus.questions)} {' '.join(rng.sample(WORDS, 4))} q{serial}"
        cached.retrieve_demos(user, f"{text} earlier", k=k)
        for label, store, query in (("first", uncached, text), ("later", cached, f"{text} later")):
            started = time.perf_counter()
            demos = store.retrieve_demos(user, query, k=k)
            latencies[label].append((time.perf_counter() - started) * 1000)
            if not demos:
                raise RuntimeError(f"no demos for {user}")
        started = time.perf_counter()
        cached.embeddings.model.embed([text + " again"])
        embed_only.append((time.perf_counter() - started) * 1000)
    row = {"query_embedding_p50_ms": round(percentile(embed_only, 50), 2)}
    for label, values in latencies.items():
        row |= {
            f"retrieval_{label}_p50_ms": round(percentile(values, 50), 2),
            f"retrieval_{label}_p95_ms": round(percentile(values, 95), 2),
            f"retrieval_{label}_p99_ms": round(percentile(values, 99), 2),
        }
    return row


def run_mode(mode: str, args: argparse.Namespace, corpus: Corpus, workdir: Path) -> list[dict[str, Any]]:
    """Grow one store through every size and measure at each."""
    server: ChromaServer | None = None
    if mode == "server":
        server = ChromaServer(workdir / "server-db").start()
        client = make_client(server=server.address)
    else:
        client = make_client(path=workdir / "local-db")
    store = PreferenceStore(client, retrieval_embeddings(), prefix=f"bench_{mode}")
    uncached = PreferenceStore(client, store.embeddings, prefix=f"bench_{mode}", cached_vectors=0)
    filler = PreferenceStore(client, HashedVectors(), prefix=f"bench_{mode}")
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    serial = 0
    stored = 0
    users: set[str] = set()
    try:
        for size in sorted(args.sizes):
            turns: list[list[PreferencePair]] = []
            planned = stored
            while planned < size:
                turns.append(make_turn(corpus, rng, args.users, args.candidates, serial))
                planned += len(turns[-1])
                serial += 1
            quick = args.quick_fill is not None and size > args.quick_fill
            if args.contexts_seen and not quick:
                store.embeddings.embed([retrieval_text(turn[0].context) for turn in turns])
            misses_before = store.embeddings.misses
            seconds, added = ingest(filler if quick else store, turns, 100 if quick else args.turns_per_call)
            stored += added
            users.update(turn[0].user_id for turn in turns)
            row: dict[str, Any] = {
                "mode": mode,
                "stored_pairs": stored,
                "users_with_pairs": len(users),
                "ingested_pairs": added,
                "ingest_pairs_per_s": round(added / seconds, 1) if seconds and not quick else None,
                "contexts_embedded": store.embeddings.misses - misses_before,
            }
            row |= measure_retrieval((store, uncached), corpus, sorted(users), rng, args.queries, args.k)
            row |= rss_mb()
            if server is not None:
                server_rss = server.rss_bytes()
                row["server_rss_mb"] = round(server_rss / 2**20, 1) if server_rss else None
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        if server is not None:
            server.stop()
    return rows


def main() -> None:
    """Parse arguments, run the benchmark, print one JSON line per measurement."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10000, 100000]
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=3, help="demos per retrieval")
    parser.add_argument("--candidates", type=int, default=3, help="replies per turn (pairs per turn + 1)")
    parser.add_argument("--turns-per-call", type=int, default=1, help="turns stored per add_pairs call")
    parser.add_argument(
        "--contexts-seen",
        action="store_true",
        help="embed each turn's context before timing its ingest (the chat feedback path)",
    )
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["local", "server"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the stores go (default: a temp dir)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write all rows to this JSON file")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--quick-fill",
        type=int,
        default=None,
        metavar="N",
        help="grow the store past N pairs with instant stand-in vectors (no ingest rate is reported "
        "for those sizes; retrieval still embeds every query with MiniLM)",
    )
    args = parser.parse_args()
    # Turn a `timeout`/`kill` into SystemExit so the Chroma server is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.candidates < 2:
        parser.error("--candidates must be at least 2")

    corpus = load_corpus(args.data)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        workdir = args.workdir or Path(scratch)
        for mode in args.modes:
            rows += run_mode(mode, args, corpus, workdir / mode)
    summary = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
