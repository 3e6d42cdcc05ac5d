"""Per-turn overhead of the chat graph outside the model: p50/p95 of a turn and of each node.

The graph runs with real parts except the language models: a `PersistentClient` Chroma store in
a temporary directory with `stored_pairs` pairs per user (embedded with the real MiniLM model),
the product's SQLite checkpointer (`factory.open_checkpointer`, synchronous=NORMAL) written as the
product writes it (`durability="exit"`: once a turn, when it ends), every user
with a persona (so each turn retrieves demos and the persona judge ranks the candidates), and
instant fake chat and judge models. What remains is the graph's own cost: reading the persona,
embedding the new message and retrieving demos, rendering prompts and parsing structured
answers, ranking, and checkpointing.

Every turn's user message is new text (a question with the turn number), so each turn pays one
real query embedding. Node times come from ``astream(stream_mode="updates")``: a node's time runs
from the previous update (or the start of the turn) to its own update, so the graph's step
overhead (checkpoint writes under ``durability="async"``, scheduling) counts in the node that
follows it, and the turn's own time includes its final checkpoint write. A few warm-up turns
(model loading, first queries) are not counted.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal, cast

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig

from agent.records import Persona, PreferencePair
from persona_agent.benchmarks.cost import synthetic_pairs
from persona_agent.benchmarks.scripted_model import DEFAULT_REASONING, ScriptedPreferenceModel
from persona_agent.settings import DEFAULT_CHECKPOINT_DURABILITY, CheckpointDurability, CheckpointSync

TARGET_P95_MS = 50.0
WARMUP_TURNS = 5
TURNS_PER_THREAD = 20
# Thread checkpoints: the product's SQLite file (synchronous=NORMAL), the same with FULL, or none.
CheckpointerKind = Literal["sqlite", "sqlite-full", "memory"]


def percentile(values: Sequence[float], q: float) -> float:
    """Return the `q`-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Return p50, p95, mean and max of durations in milliseconds."""
    millis = [1000 * value for value in seconds]
    return {
        "p50_ms": round(percentile(millis, 50), 2),
        "p95_ms": round(percentile(millis, 95), 2),
        "mean_ms": round(statistics.fmean(millis), 2) if millis else float("nan"),
        "max_ms": round(max(millis), 2) if millis else float("nan"),
        "count": len(millis),
    }


def latency_pairs(data: Path | None, count: int, *, seed: int = 0) -> tuple[list[PreferencePair], str]:
    """Return real pairs from `data` (synthetic ones when it is absent) to store and to ask about."""
    if data is not None and data.is_file():
        from agent.formats import read_pairs

        pairs = read_pairs(data, skip_invalid=True)
        random.Random(seed).shuffle(pairs)
        return pairs, str(data)
    return synthetic_pairs(count, seed=seed), "synthetic pairs"


def _store_users(
    store: Any, pairs: Sequence[PreferencePair], *, users: int, per_user: int, seed: int
) -> list[str]:
    """Give each bench user `per_user` pairs, annotations like a past synthesis, and a persona."""
    rng = random.Random(seed)
    names = [f"bench_user_{index}" for index in range(users)]
    for name in names:
        own = [
            PreferencePair(user_id=name, context=pair.context, chosen=pair.chosen, rejected=pair.rejected)
            for pair in rng.sample(list(pairs), per_user)
        ]
        store.add_pairs(name, own)
        notes = {}
        for pair in own:
            correct = rng.random() < 0.6
            note: dict[str, Any] = {"default_judge_correct": correct, "has_verified_reasoning": correct}
            if correct:
                note["reasoning"] = DEFAULT_REASONING
            notes[pair.id] = note
        store.annotate_pairs(name, notes)
        store.save_persona(Persona(user_id=name, text="Values direct, concrete answers.\nDislikes padding."))
    return names


async def run_latency_async(
    *,
    data: Path | None,
    turns: int = 200,
    stored_pairs: int = 100,
    users: int = 3,
    candidates: int = 3,
    seed: int = 0,
    workdir: Path | None = None,
    checkpointer: CheckpointerKind = "sqlite",
    durability: CheckpointDurability = DEFAULT_CHECKPOINT_DURABILITY,
) -> dict[str, Any]:
    """Run `turns` chat turns through the graph and return the timing document."""
    from langgraph.checkpoint.memory import InMemorySaver

    from graphs.chat import ChatOptions, build_graph
    from graphs.state import ChatContext
    from memory.chroma import make_client
    from memory.retrieval import retrieval_embeddings
    from memory.store import PreferenceStore
    from persona_agent.factory import open_checkpointer

    pairs, source = latency_pairs(data, stored_pairs, seed=seed)
    replies = tuple(dict.fromkeys(text for pair in pairs[:200] for text in (pair.chosen, pair.rejected)))
    questions = list(dict.fromkeys(pair.query for pair in pairs))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        started = time.perf_counter()
        store = PreferenceStore(make_client(path=Path(tmp) / "chroma"), retrieval_embeddings())
        names = _store_users(store, pairs, users=users, per_user=stored_pairs, seed=seed)
        setup_s = time.perf_counter() - started
        chat_model = ScriptedPreferenceModel(seed=seed, draft_pool=replies, keep_messages=False)
        judge_model = ScriptedPreferenceModel(seed=seed + 1, keep_messages=False)
        per_node: dict[str, list[float]] = defaultdict(list)
        totals: list[float] = []
        judge_labels: set[str] = set()
        async with AsyncExitStack() as stack:
            saver: Any = InMemorySaver()
            if checkpointer != "memory":
                path = Path(tmp) / "checkpoints.sqlite"
                sync: CheckpointSync = "full" if checkpointer == "sqlite-full" else "normal"
                saver = await stack.enter_async_context(open_checkpointer(path, sync=sync))
            graph = build_graph(
                chat_model=chat_model,
                judge_model=judge_model,
                memory=store,
                checkpointer=saver,
                options=ChatOptions(candidates=candidates),
            )
            for turn in range(WARMUP_TURNS + turns):
                user = names[turn % len(names)]
                thread = f"{user}-{turn // (TURNS_PER_THREAD * len(names))}"
                question = f"{questions[turn % len(questions)]} (turn {turn})"
                config = RunnableConfig(configurable={"thread_id": thread})
                timings: dict[str, float] = {}
                begin = last = time.perf_counter()
                async for update in graph.astream(
                    cast(Any, {"messages": [HumanMessage(question)]}),
                    config,
                    context=ChatContext(user_id=user),
                    stream_mode="updates",
                    durability=durability,
                ):
                    now = time.perf_counter()
                    for node, values in update.items():
                        timings[node] = timings.get(node, 0.0) + now - last
                        if node == "judge_replies" and isinstance(values, dict):
                            judge_labels.add(str(values.get("judge")))
                    last = now
                end = time.perf_counter()
                if turn < WARMUP_TURNS:
                    continue
                totals.append(end - begin)
                for node, seconds in timings.items():
                    per_node[node].append(seconds)
    turn_summary = summary_ms(totals)
    return {
        "suite": "latency",
        "model": "instant scripted fakes (chat and judge)",
        "pairs": source,
        "turns": turns,
        "warmup_turns": WARMUP_TURNS,
        "users": users,
        "stored_pairs_per_user": stored_pairs,
        "candidates": candidates,
        "checkpointer": checkpointer,
        "durability": durability,
        "judge_calls_per_turn": candidates * (candidates - 1) if candidates <= 4 else 2 * (candidates - 1),
        "judges": sorted(judge_labels),
        "setup_seconds": round(setup_s, 1),
        "turn": turn_summary,
        "nodes": {node: summary_ms(values) for node, values in per_node.items()},
        "target_p95_ms": TARGET_P95_MS,
        "target_met": turn_summary["p95_ms"] <= TARGET_P95_MS,
    }
