"""One worker of the concurrency tests: add pairs and chat (with feedback) for several users.

A worker runs the product's chat graph over scripted fakes and a shared `PreferenceStore`. Each
round, for each of its users, it adds two pairs of its own and one pair every worker adds too,
asks one question and picks a candidate (which stores more pairs and may trigger a synthesis).
It returns every pair id it meant to store and every persona version its syntheses stored, so
the test can check that each pair is there exactly once and versions only go up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent.records import PreferencePair, Turn
from agent.synthesis import SynthesizeMe
from graphs.chat import ChatOptions, build_graph
from graphs.feedback import apply_feedback
from memory.chroma import make_client
from memory.store import PreferenceStore
from tests.fakes import (
    CountingChatModel,
    WordHashEmbeddings,
    persona_message,
    replies_of,
    task_of,
    verdict_message,
)

OPTIONS = ChatOptions(attempts=2, retry_interval_s=0.01, first_synthesis_at=5, resynthesize_every=3, demo_k=2)


def respond(messages: list[BaseMessage]) -> AIMessage:
    """Draft by style hint, judge shorter-first, induce a fixed persona."""
    task = task_of(messages)
    if task == "induce":
        return persona_message("Prefers short, direct replies.")
    if task == "judge":
        first, second = replies_of(messages)
        return verdict_message("First" if len(first) <= len(second) else "Second", "shorter")
    style = messages[0].text.split("\n")[0].removeprefix("You are a helpful assistant. ")
    return AIMessage(f"{style} reply to: {messages[-1].text[:60]}")


def _pair(user: str, question: str, chosen: str) -> PreferencePair:
    return PreferencePair(
        user_id=user,
        context=(Turn(role="user", content=question),),
        chosen=chosen,
        rejected="A long and rambling reply that never quite gets to the point.",
    )


def exercise(store: PreferenceStore, worker: int, users: Sequence[str], rounds: int) -> dict[str, Any]:
    """Add pairs and chat for `users`; return the pair ids meant to be stored and versions won."""
    model = CountingChatModel(responder=respond, keep_messages=False)
    graph = build_graph(
        chat_model=model,
        judge_model=model,
        memory=store,
        checkpointer=InMemorySaver(),
        synthesizer=SynthesizeMe(model, max_pairs=10, max_calls=60),
        options=OPTIONS,
    )
    meant: dict[str, set[str]] = {user: set() for user in users}
    versions: dict[str, list[int]] = {user: [] for user in users}
    turns = 0

    async def run() -> None:
        nonlocal turns
        for number in range(rounds):
            for user in users:
                batch = [
                    _pair(user, f"worker {worker} round {number} question {i}", f"Short {i}.")
                    for i in range(2)
                ]
                batch.append(_pair(user, f"the question every worker asks in round {number}", "Short."))
                await asyncio.to_thread(store.add_pairs, user, batch)
                meant[user] |= {pair.id for pair in batch}
                config: Any = {"configurable": {"thread_id": f"w{worker}-{user}"}}
                context = {"user_id": user}
                question = HumanMessage(f"worker {worker} asks {user} question {number}")
                await graph.ainvoke({"messages": [question]}, config, context=context)
                turns += 1
                state = (await graph.aget_state(config)).values
                assert state["messages"][-1].text.strip()
                await _record_synthesis(state, user)
                picked = apply_feedback({**state, "feedback": {"choice": 0}}, user, store.limits)  # type: ignore[typeddict-item]
                meant[user] |= {pair.id for pair in picked.pairs}
                await graph.ainvoke({"feedback": {"choice": 0}}, config, context=context)
                await _record_synthesis((await graph.aget_state(config)).values, user)

    seen: dict[str, Any] = {}

    async def _record_synthesis(state: dict[str, Any], user: str) -> None:
        outcome = state.get("synthesis")
        if outcome and outcome != seen.get(user):
            seen[user] = outcome
            if outcome["status"] == "accepted":
                versions[user].append(int(outcome["persona_version"]))

    asyncio.run(run())
    return {
        "meant": {user: sorted(ids) for user, ids in meant.items()},
        "versions": versions,
        "turns": turns,
    }


def exercise_on_server(
    address: str, prefix: str, worker: int, users: list[str], rounds: int
) -> dict[str, Any]:
    """Run `exercise` in a process of its own against a `chroma run` server."""
    store = PreferenceStore(make_client(server=address), WordHashEmbeddings(), prefix=prefix)
    return exercise(store, worker, users, rounds)
