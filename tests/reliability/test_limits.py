"""Limits: text size, pairs per synthesis, candidates per turn and LLM calls per synthesis are enforced.

Each limit is set through `Settings` and the parts are built by `persona_agent.factory`, so the
test exercises the configured product, not a hand-built object.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from agent.errors import BudgetExceeded, ConfigurationError, InvalidPreference
from agent.judge import MAX_RANK_CANDIDATES, DefaultJudge
from agent.prompts import MAX_REPLY_CHARS, judge_messages
from agent.records import PreferencePair, Turn, utc_now
from agent.splits import split_train_val
from graphs import synthesis
from graphs.chat import MAX_CANDIDATES, build_graph
from graphs.state import SynthesisContext
from memory.chroma import make_client
from memory.store import PreferenceStore
from persona_agent.factory import build_synthesizer, chat_options
from persona_agent.settings import Settings, load_settings
from tests.fakes import CountingChatModel, MalformedChatModel, WordHashEmbeddings, replies_of
from tests.reliability.chat_load import respond
from tests.reliability.summary import write_summary

pytestmark = pytest.mark.reliability

FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Any:
    """Write what the limit tests measured when the module is done."""
    yield
    write_summary("limits", FIGURES)


def _settings(**values: Any) -> Settings:
    return load_settings(openai_base_url="http://127.0.0.1:9/v1", **values)


def _store(settings: Settings) -> PreferenceStore:
    return PreferenceStore(
        make_client(ephemeral=True),
        WordHashEmbeddings(),
        limits=settings.limits,
        prefix=f"lim{uuid.uuid4().hex[:8]}",
    )


def _pairs(user: str, count: int) -> list[PreferencePair]:
    start = utc_now() - timedelta(days=1)
    return [
        PreferencePair(
            user_id=user,
            context=(Turn(role="user", content=f"question {n} about gardens"),),
            chosen=f"Short {n}.",
            rejected=f"A much longer and more rambling answer number {n}.",
            created_at=start + timedelta(minutes=n),
        )
        for n in range(count)
    ]


def test_text_size_cap_is_enforced_on_storing_and_long_texts_are_clipped_in_prompts() -> None:
    settings = _settings(max_text_chars=500)
    store = _store(settings)
    ok = PreferencePair(
        user_id="alice", context=(Turn(role="user", content="q"),), chosen="x" * 500, rejected="y"
    )
    assert store.add_pairs("alice", [ok]) == [ok.id]
    over = ok.model_copy(update={"chosen": "x" * 501, "id": ""})
    with pytest.raises(InvalidPreference, match="chosen: is 501 characters, over the limit of 500"):
        store.add_pairs("alice", [over])
    assert store.count_pairs("alice") == 1
    with pytest.raises(ConfigurationError):
        load_settings(max_text_chars=10)

    huge = "z" * 20_000  # accepted under the default limit, but never sent whole to the judge
    prompt = judge_messages((Turn(role="user", content="q"),), huge, "short")[-1].text
    first, _ = replies_of([HumanMessage(prompt)])
    assert len(first) <= MAX_REPLY_CHARS + 40 and "more characters]" in first
    FIGURES["text"] = {"max_text_chars": 500, "judge_reply_chars": MAX_REPLY_CHARS, "clipped_to": len(first)}


async def test_a_synthesis_reads_only_the_most_recent_pairs() -> None:
    settings = _settings(max_pairs_per_synthesis=10)
    store = _store(settings)
    pairs = _pairs("alice", 30)
    store.add_pairs("alice", pairs)
    model = CountingChatModel(responder=respond)
    graph = synthesis.build_graph(synthesizer=build_synthesizer(settings, model, model), memory=store)
    final = await graph.ainvoke({}, context=SynthesisContext(user_id="alice"))
    assert final["outcome"]["status"] == "accepted"
    used = final["outcome"]["train_pairs"] + final["outcome"]["val_pairs"]
    assert 2 <= used <= 10  # the newest 10 are read; the fit may hold out fewer val pairs
    persona = store.current_persona("alice")
    assert persona is not None and set(persona.pair_ids) <= {pair.id for pair in pairs[-10:]}
    judged = {reply for call in model.calls_of("judge") for reply in replies_of(call.messages)}
    assert not any(f"number {n}." in reply for n in range(20) for reply in judged)
    FIGURES["pairs_per_synthesis"] = {"stored": 30, "max_pairs_per_synthesis": 10, "used_by_fit": used}


async def test_candidates_per_turn_are_capped() -> None:
    settings = _settings(candidates=8)
    with pytest.raises(ConfigurationError):
        load_settings(candidates=MAX_CANDIDATES + 1)
    model = CountingChatModel(responder=respond)
    graph = build_graph(
        chat_model=model, judge_model=model, memory=_store(settings), options=chat_options(settings)
    )
    final = await graph.ainvoke(
        {"messages": [HumanMessage("How do I keep basil alive?")]},
        context={"user_id": "alice", "candidates": 50},
    )
    assert len(model.calls_of("other")) == MAX_CANDIDATES and len(final["candidates"]) <= MAX_CANDIDATES
    with pytest.raises(ValueError, match="at most 8"):
        await DefaultJudge(model).rank((Turn(role="user", content="q"),), [f"reply {n}" for n in range(9)])
    FIGURES["candidates_per_turn"] = {
        "asked": 50,
        "drafted": len(model.calls_of("other")),
        "cap": MAX_CANDIDATES,
        "rank_cap": MAX_RANK_CANDIDATES,
    }


async def test_llm_calls_per_synthesis_stay_within_the_budget() -> None:
    settings = _settings(max_calls_per_synthesis=30, max_pairs_per_synthesis=40)
    pairs = _pairs("alice", 40)
    model = CountingChatModel(responder=respond)
    fitter = build_synthesizer(settings, model, model)
    train, val = split_train_val(pairs)
    result = await fitter.fit(train, val)
    assert result.usage.total.calls == len(model.calls) <= 30 and result.planned_calls <= 30
    assert len(result.train_pair_ids) < len(train)  # trimmed to fit, most recent kept

    # Malformed output is retried, and retries are charged: the fit stops at the budget.
    flaky = MalformedChatModel(responder=respond, bad_calls=10**6, tasks=("judge",))
    with pytest.raises(BudgetExceeded):
        await build_synthesizer(settings, flaky, flaky).fit(train, val)
    assert len(flaky.calls) <= 30
    with pytest.raises(BudgetExceeded):
        await build_synthesizer(_settings(max_calls_per_synthesis=3), model, model).fit(train, val)
    FIGURES["llm_calls_per_synthesis"] = {
        "budget": 30,
        "calls_clean": len(model.calls),
        "calls_malformed_until_stopped": len(flaky.calls),
    }
