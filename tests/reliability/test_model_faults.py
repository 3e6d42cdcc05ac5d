"""Model faults: the chat graph over ChatOpenAI against a stub endpoint that fails ~30% of requests.

The stub (`devtools.openai_stub`) injects, each with its own seeded probability, HTTP 500, HTTP 429,
hangs past the client timeout, malformed JSON, responses with no choices and judge verdicts
outside First/Second. The models are built by `persona_agent.factory` from settings with a short
request timeout and one client retry, the graph by the factory too, so the retries, timeouts and
fallbacks under test are the ones the product ships. Several users chat and pick replies at once.

Every turn must be answered (the judge's pick, the first candidate when judging failed, or the
apology when drafting failed), every synthesis must either be stored as the new current persona
or leave the previous one current, and every fault the graph handles must be logged once, with
its cause.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from devtools.openai_stub import OpenAIStub
from graphs.chat import APOLOGY
from memory.chroma import make_client
from memory.store import PreferenceStore
from persona_agent.factory import build_chat_graph, build_chat_model, build_judge_model
from persona_agent.settings import Settings
from tests.fakes import WordHashEmbeddings
from tests.reliability.summary import write_summary

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

# Drawn independently per request: about 30% of the structured requests meet one fault or more.
FAULT_RATES = {
    "error_rate": 0.07,
    "rate_limit_rate": 0.07,
    "timeout_rate": 0.05,
    "malformed_rate": 0.06,
    "empty_choices_rate": 0.05,
    "bad_verdict_rate": 0.06,
}
USERS = ("ann", "ben", "cai")
TURNS_PER_USER = 7
QUESTIONS = (
    "How do I keep basil alive indoors?",
    "What is a good first programming language?",
    "How long should I boil an egg?",
    "Any tips for a first marathon?",
    "How do I fix a squeaky door?",
    "What should I read after Dune?",
    "How do I clean a cast iron pan?",
)
_TIES = re.compile(r"^(\d+) comparisons had no usable verdict")


def fault_settings(base_url: str) -> Settings:
    """Settings of a deployment against a flaky endpoint: short timeout, one client retry."""
    return Settings(  # type: ignore[call-arg]
        openai_base_url=base_url,
        request_timeout_s=0.5,
        max_retries=1,
        logprobs=False,
        first_synthesis_at=4,
        resynthesize_every=4,
        max_calls_per_synthesis=40,
        candidates=3,
    )


def _records(caplog: pytest.LogCaptureFixture, logger: str, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and needle in r.getMessage()]


def _cause_logged(record: logging.LogRecord, cause: str) -> bool:
    """True when a log record names the exception type `cause` in its text or its traceback."""
    if cause in record.getMessage():
        return True
    kind = record.exc_info[0] if record.exc_info else None
    return kind is not None and kind.__name__ == cause


async def test_every_turn_is_answered_and_every_synthesis_completes_or_keeps_the_old_persona(
    caplog: pytest.LogCaptureFixture, no_network: list[object]
) -> None:
    caplog.set_level(logging.INFO)
    figures: Counter[str] = Counter()
    causes: dict[str, list[str]] = {"apology": [], "first_candidate": [], "synthesis": []}
    stub = OpenAIStub(seed=11, hang_s=1.0, **FAULT_RATES).start()
    try:
        settings = fault_settings(stub.base_url)
        store = PreferenceStore(
            make_client(ephemeral=True), WordHashEmbeddings(), prefix=f"flt{uuid.uuid4().hex[:10]}"
        )
        graph = build_chat_graph(
            settings,
            store=store,
            checkpointer=InMemorySaver(),
            chat_model=build_chat_model(settings),
            judge_model=build_judge_model(settings),
        )

        async def run(user: str, payload: dict[str, Any]) -> dict[str, Any]:
            """Run one input; check the synthesis it may have run against the store; return the state."""
            config: Any = {"configurable": {"thread_id": user}}
            before = await asyncio.to_thread(store.current_persona, user)
            previous = (await graph.aget_state(config)).values.get("synthesis")
            await graph.ainvoke(payload, config, context={"user_id": user})
            state = (await graph.aget_state(config)).values
            after = await asyncio.to_thread(store.current_persona, user)
            outcome = state.get("synthesis")
            if outcome is not None and outcome != previous:
                figures[f"syntheses.{outcome['status']}"] += 1
                if outcome["status"] == "accepted":
                    assert after is not None and after.version == outcome["persona_version"]
                    assert before is None or after.version > before.version
                else:
                    assert (after.version if after else None) == (before.version if before else None)
                    if outcome["status"] == "failed":
                        causes["synthesis"].append(outcome["detail"].split(":")[0])
            else:
                assert (after.version if after else None) == (before.version if before else None)
            return state

        async def converse(user: str) -> None:
            for turn in range(TURNS_PER_USER):
                figures["turns_attempted"] += 1
                state = await run(user, {"messages": [HumanMessage(QUESTIONS[turn % len(QUESTIONS)])]})
                reply = state["messages"][-1]
                assert isinstance(reply, AIMessage) and reply.text.strip(), f"{user} turn {turn} unanswered"
                figures["turns_answered"] += 1
                candidates = state.get("candidates") or []
                if state.get("reply_fallback"):
                    figures["fallback.apology"] += 1
                    causes["apology"].append(state["reply_fallback"].split(":")[0])
                    assert reply.text.startswith(APOLOGY.split("(")[0]) and not candidates
                elif (state.get("judge_fallback") or "").startswith("judging failed"):
                    figures["fallback.first_candidate"] += 1
                    cause = re.search(r"\((\w+):", state["judge_fallback"])
                    causes["first_candidate"].append(cause.group(1) if cause else "?")
                    assert reply.text == candidates[0]
                else:
                    assert reply.text == state["ranking"][0]["content"] and reply.text in candidates
                    ties = _TIES.match(state.get("judge_fallback") or "")
                    figures["judged"] += 1
                    if ties:
                        figures["turns_with_tied_comparisons"] += 1
                        figures["tied_comparisons"] += int(ties.group(1))
                if len(candidates) >= 2:
                    figures["feedback_runs"] += 1
                    await run(user, {"feedback": {"choice": turn % len(candidates)}})

        await asyncio.gather(*(converse(user) for user in USERS))
    finally:
        stub.stop()

    # Every fault the graph handled was logged once, naming its cause.
    apologies = _records(caplog, "graphs.chat", "drafting failed")
    assert len(apologies) == figures["fallback.apology"]
    for cause in causes["apology"]:
        assert any(_cause_logged(r, cause) for r in apologies), cause
    judged_first = _records(caplog, "graphs.chat", "judging failed")
    assert len(judged_first) == figures["fallback.first_candidate"]
    for cause in causes["first_candidate"]:
        assert any(_cause_logged(r, cause) for r in judged_first), cause
    if figures["turns_with_tied_comparisons"]:
        assert _records(caplog, "agent.judge", "judge: ")
    failed = _records(caplog, "graphs.synthesis", "synthesis failed")
    assert len(failed) == len(causes["synthesis"])
    for cause in causes["synthesis"]:
        assert any(_cause_logged(r, cause) for r in failed), cause

    faults = {
        key.removeprefix("fault."): value for key, value in stub.counts.items() if key.startswith("fault.")
    }
    faults["http_500"] = stub.counts["error"]
    client_retries = len(_records(caplog, "openai._base_client", "Retrying request"))
    requests = sum(value for key, value in stub.counts.items() if not key.startswith("fault.")) + sum(
        stub.counts[f"fault.{kind}"] for kind in ("rate_limit", "empty_choices", "timeout")
    )
    write_summary(
        "model_faults",
        {
            **dict(sorted(figures.items())),
            "fault_rates": FAULT_RATES,
            "faults_served": dict(sorted(faults.items())),
            "requests_served": requests,
            "fault_share": round(sum(faults.values()) / max(requests, 1), 3),
            "client_retries_logged": client_retries,
        },
    )
    assert figures["turns_answered"] == figures["turns_attempted"] == len(USERS) * TURNS_PER_USER
    assert all(faults.get(kind, 0) > 0 for kind in ("http_500", "rate_limit", "timeout", "bad_verdict"))
    assert client_retries > 0
    assert figures["syntheses.accepted"] > 0
