"""Probes behind the memory store's unmet targets (BENCHMARKS.md, section 5): what bounds them.

Each subcommand prints one measurement, alternating the variants it compares:

- ``embed-threads``: the bulk run's retrieval keys embedded by one two-thread onnxruntime
  session, by two one-thread sessions side by side on halves of the keys, and by one thread;
- ``add-beside-embed``: pairs stored in chunks, each chunk's Chroma ``add`` either after the
  chunk's embedding or in a thread while the next chunk embeds;
- ``chroma-reads``: reads of a bare Chroma collection of ``--records`` records over 1,000 users
  (the store's metadata, random vectors): a user filter, ``get(limit=1)``, ``count()``, and a
  get by 100 known ids;
- ``static-table``: a word-piece table distilled from MiniLM (each piece run alone) against
  MiniLM itself, by how many real retrieval keys keep their top-3 neighbours.

They reach into `memory.embeddings._MiniLM` and `PreferenceStore._add_pair_records` to time one
part alone. Run: ``PYTHONPATH=. .venv/bin/python scripts/probe_memory_limits.py chroma-reads``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from agent.formats import read_pairs  # noqa: E402
from agent.records import PreferencePair  # noqa: E402
from memory.chroma import make_client  # noqa: E402
from memory.embeddings import _MiniLM, bundled_model_dir  # noqa: E402
from memory.retrieval import RETRIEVAL_KEY_TOKENS, retrieval_embeddings, retrieval_text  # noqa: E402
from memory.store import PreferenceStore  # noqa: E402
from scripts.bench_memory import DEFAULT_DATA, load_corpus, make_turn  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data"


def bulk_turns(count: int, users: int) -> list[list[PreferencePair]]:
    """Return `count` chat turns built as `scripts/bench_memory.py` builds them."""
    corpus, rng = load_corpus(DEFAULT_DATA), random.Random(0)
    return [make_turn(corpus, rng, users, 3, serial) for serial in range(count)]


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def embed_threads(rounds: int) -> None:
    texts = [retrieval_text(turn[0].context) for turn in bulk_turns(960, 20)]
    two, one = (_MiniLM(bundled_model_dir(), threads=n) for n in (2, 1))

    def side_by_side() -> None:
        workers = [
            threading.Thread(target=one.encode, args=(half,), kwargs={"max_tokens": RETRIEVAL_KEY_TOKENS})
            for half in (texts[0::2], texts[1::2])
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    print(f"{len(texts)} keys, {statistics.mean(len(text) for text in texts):.0f} characters on average")
    two.encode(texts[:50])
    for _ in range(rounds):
        one_session = timed(lambda: two.encode(texts, max_tokens=RETRIEVAL_KEY_TOKENS))
        halves = timed(side_by_side)
        single = timed(lambda: one.encode(texts, max_tokens=RETRIEVAL_KEY_TOKENS))
        print(
            f"two threads {one_session:.2f} s | two one-thread sessions {halves:.2f} s"
            f" | one thread {single:.2f} s"
        )


def add_beside_embed(rounds: int) -> None:
    pairs = [pair for turn in bulk_turns(400, 1) for pair in turn]
    user = pairs[0].user_id
    with tempfile.TemporaryDirectory() as tmp:
        model = retrieval_embeddings()  # called directly: every chunk is embedded, no cache
        store = PreferenceStore(make_client(path=Path(tmp) / "chroma"), model)
        scope = store._scope(user)
        chunks = [pairs[start : start + 100] for start in range(0, len(pairs), 100)]
        model.embed(["warm up"])

        def after() -> None:
            for chunk in chunks:
                vectors = model.embed([retrieval_text(pair.context) for pair in chunk])
                store._add_pair_records(scope, chunk, vectors)

        def beside() -> None:
            pending: threading.Thread | None = None
            for chunk in chunks:
                vectors = model.embed([retrieval_text(pair.context) for pair in chunk])
                if pending is not None:
                    pending.join()
                pending = threading.Thread(target=store._add_pair_records, args=(scope, chunk, vectors))
                pending.start()
            if pending is not None:
                pending.join()

        for _ in range(rounds):
            rates = []
            for run in (after, beside):
                store.delete_user(user)
                rates.append(len(pairs) / timed(run))
            print(
                f"add after embedding {rates[0]:.1f} pairs/s"
                f" | add beside the next embedding {rates[1]:.1f} pairs/s"
            )


def chroma_reads(records: int, queries: int) -> None:
    users, batch = 1000, 2000
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        collection = make_client(path=Path(tmp) / "chroma").get_or_create_collection(
            "pairs", embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
        )
        for start in range(0, records, batch):
            numbers = range(start, min(records, start + batch))
            collection.add(
                ids=[f"user{i % users:05d}/pair{i}" for i in numbers],
                embeddings=rng.standard_normal((len(numbers), 384)).astype(np.float32),
                metadatas=[
                    {
                        "user_id": f"user{i % users:05d}",
                        "pair_id": f"pair{i}",
                        "created_us": i,
                        "source": "import",
                    }
                    for i in numbers
                ],
                documents=["x" * 800] * len(numbers),
            )

        reads: dict[str, Callable[[int], object]] = {
            "where user_id, ids only": lambda n: collection.get(
                where={"user_id": f"user{n:05d}"}, include=[]
            ),
            "get(limit=1)": lambda n: collection.get(limit=1, include=[]),
            "count()": lambda n: collection.count(),
            "by the user's ids, with metadata and vectors": lambda n: collection.get(
                ids=[f"user{n:05d}/pair{i}" for i in range(n, records, users)],
                include=["metadatas", "embeddings"],
            ),
        }
        print(f"{records} records over {users} users, medians of {queries} reads:")
        for name, read in reads.items():
            times = []
            for number in (random.randrange(users) for _ in range(queries)):
                started = time.perf_counter()
                read(number)
                times.append(time.perf_counter() - started)
            print(f"  {name}: {statistics.median(times) * 1e3:.2f} ms")


def static_table() -> None:
    model = _MiniLM(bundled_model_dir(), threads=2)
    tokenizer = model.tokenizer
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    vocabulary = tokenizer.get_vocab_size()
    started = time.perf_counter()
    table = np.zeros((vocabulary, 384), np.float32)
    for start in range(0, vocabulary, 512):
        ids = np.array([[cls, i, sep] for i in range(start, min(vocabulary, start + 512))], np.int64)
        table[start : start + len(ids)] = model.encode_batch(ids, np.ones_like(ids))
    print(f"table of {vocabulary} word pieces in {time.perf_counter() - started:.1f} s")
    texts = sorted(
        {
            retrieval_text(pair.context)
            for name in ("mt_bench_human", "prism_examples")
            for pair in read_pairs(DATA / name / "pairs.jsonl", skip_invalid=True)
        }
    )
    reference = model.encode(texts, max_tokens=RETRIEVAL_KEY_TOKENS)
    weightings = {
        "mean": np.ones(vocabulary, np.float32),
        "log-rank": np.log1p(np.arange(vocabulary, dtype=np.float32)),
    }
    for name, weights in weightings.items():
        vectors = np.zeros_like(reference)
        for row, encoding in enumerate(tokenizer.encode_batch(texts)):
            ids = encoding.ids[1:-1][: RETRIEVAL_KEY_TOKENS - 2] or encoding.ids
            summed = (table[ids] * weights[ids, None]).sum(0)
            vectors[row] = summed / max(float(np.linalg.norm(summed)), 1e-12)
        same = members = 0.0
        for i in range(len(texts)):
            tops = []
            for matrix in (reference, vectors):
                similarity = matrix @ matrix[i]
                similarity[i] = -np.inf
                tops.append(set(np.argsort(-similarity)[:3].tolist()))
            same += tops[0] == tops[1]
            members += len(tops[0] & tops[1]) / 3
        cosine = float((vectors * reference).sum(1).mean())
        print(
            f"{name}: {len(texts)} keys, same top-3 {same / len(texts):.0%}, "
            f"top-3 members shared {members / len(texts):.0%}, mean cosine to MiniLM {cosine:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "probe", choices=["embed-threads", "add-beside-embed", "chroma-reads", "static-table"]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=100_000, help="chroma-reads: collection size")
    parser.add_argument("--queries", type=int, default=40, help="chroma-reads: reads per figure")
    args = parser.parse_args()
    if args.probe == "embed-threads":
        embed_threads(args.rounds)
    elif args.probe == "add-beside-embed":
        add_beside_embed(args.rounds)
    elif args.probe == "chroma-reads":
        chroma_reads(args.records, args.queries)
    else:
        static_table()


if __name__ == "__main__":
    main()
