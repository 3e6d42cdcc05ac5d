"""The synthesis graph on its own: split, fit, gate, save, annotate, and failures."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from agent.records import Persona
from agent.splits import split_train_val
from graphs.state import SynthesisContext
from tests.fakes import (
    BAD,
    GOOD,
    CountingChatModel,
    make_memory,
    make_pair,
    store_pairs,
    synthesis_graph,
    taste_responder,
)


async def test_a_pair_used_by_a_fit_never_validates_the_next() -> None:
    memory = make_memory()
    model = CountingChatModel(responder=taste_responder(GOOD))
    graph = synthesis_graph(memory, model)
    fitted_on: set[str] = set()
    validated: list[set[str]] = []
    for count in (5, 8, 11, 14, 17):  # the first persona at 5 pairs, then a re-synthesis every 3
        pairs = [
            make_pair(
                "alice",
                f"alice question {n} about soup",
                chosen=f"Short {n}.",
                rejected=f"Long {n} " * 5,
                minutes=n,
            )
            for n in range(count - 3 if count > 5 else 0, count)
        ]
        memory.add_pairs("alice", pairs)
        final = await graph.ainvoke({}, context=SynthesisContext(user_id="alice"))
        result = final["result"]
        if result is None:  # too few train pairs yet: nothing was fitted
            continue
        val = set(result["val_pair_ids"])
        assert not val & fitted_on, "a pair an earlier persona was fitted on validates this one"
        assert not val & set(result["train_pair_ids"])
        fitted_on |= set(result["train_pair_ids"])
        validated.append(val)
    assert len(validated) >= 3 and any(validated)


async def test_a_standalone_run_saves_an_accepted_persona_and_annotates_pairs() -> None:
    memory = make_memory()
    ids = store_pairs(memory, "alice", 9)
    store_pairs(memory, "bob", 4)
    model = CountingChatModel(responder=taste_responder(GOOD))
    final = await synthesis_graph(memory, model).ainvoke({}, context=SynthesisContext(user_id="alice"))
    outcome = final["outcome"]
    assert outcome["status"] == "accepted" and outcome["persona_version"] == 1
    train, val = split_train_val(memory.newest_pairs("alice", 40))
    assert (outcome["train_pairs"], outcome["val_pairs"]) == (len(train), len(val))
    assert outcome["llm_calls"] == len(model.calls) > 0
    persona = memory.current_persona("alice")
    assert persona is not None and persona.text == GOOD and set(persona.pair_ids) == set(ids)
    notes = memory.annotations("alice")
    annotated = {pair_id for pair_id, note in notes.items() if "default_judge_correct" in note}
    assert annotated == {p.id for p in train} and annotated < set(ids)
    assert all(
        notes[i]["default_judge_correct"] is True and notes[i]["has_verified_reasoning"] for i in annotated
    )
    # only alice's pairs were read: no prompt mentions bob's questions
    assert not any("bob question" in m.text for call in model.calls for m in call.messages)
    assert memory.current_persona("bob") is None


async def test_a_worse_persona_is_rejected_by_the_gate_and_not_saved() -> None:
    memory = make_memory()
    store_pairs(memory, "alice", 9)
    memory.save_persona(Persona(user_id="alice", text=GOOD))
    model = CountingChatModel(responder=taste_responder(BAD))
    final = await synthesis_graph(memory, model).ainvoke({}, context={"user_id": "alice"})
    outcome = final["outcome"]
    assert outcome["status"] == "rejected" and outcome["persona_version"] is None
    assert outcome["baseline_val_accuracy"] == 1.0 and outcome["val_accuracy"] == 0.0
    assert memory.current_persona("alice").text == GOOD  # type: ignore[union-attr]
    assert [p.version for p in memory.persona_history("alice")] == [1]


async def test_too_few_pairs_skip_without_model_calls() -> None:
    memory = make_memory()
    store_pairs(memory, "alice", 1)
    model = CountingChatModel(responder=taste_responder(GOOD))
    final = await synthesis_graph(memory, model).ainvoke({}, context={"user_id": "alice"})
    assert final["outcome"]["status"] == "skipped" and model.calls == []


async def test_a_failing_fit_is_an_outcome_not_an_exception() -> None:
    memory = make_memory()
    store_pairs(memory, "alice", 6)
    memory.save_persona(Persona(user_id="alice", text=GOOD))

    def broken(messages: list[BaseMessage]) -> AIMessage:
        raise ConnectionError("endpoint unreachable")

    model = CountingChatModel(responder=broken)
    graph = synthesis_graph(memory, model, attempts=2, retry_interval_s=0.01)
    updates = [
        update async for update in graph.astream({}, context={"user_id": "alice"}, stream_mode="updates")
    ]
    assert list(updates[0]) == ["load_pairs"] and list(updates[-1]) == ["__error_handler__fit_persona"]
    final = updates[-1]["__error_handler__fit_persona"]["outcome"]
    assert final["status"] == "failed" and "ConnectionError" in final["detail"]
    assert [p.version for p in memory.persona_history("alice")] == [1]


async def test_the_fit_respects_the_synthesizers_pair_cap() -> None:
    memory = make_memory()
    store_pairs(memory, "alice", 12)
    model = CountingChatModel(responder=taste_responder(GOOD))
    final = await synthesis_graph(memory, model, max_pairs=6).ainvoke({}, context={"user_id": "alice"})
    persona = memory.current_persona("alice")
    assert final["outcome"]["status"] == "accepted" and persona is not None
    newest = {p.id for p in memory.newest_pairs("alice", 6)}
    assert set(persona.pair_ids) <= newest


async def test_a_second_synthesis_of_a_user_is_skipped_while_the_first_holds_the_lease() -> None:
    memory = make_memory()
    store_pairs(memory, "alice", 6)
    store_pairs(memory, "bob", 6)
    other_process = memory.acquire_lease("alice")  # another process is synthesizing alice
    assert other_process is not None
    model = CountingChatModel(responder=taste_responder(GOOD))
    graph = synthesis_graph(memory, model)
    final = await graph.ainvoke({}, context={"user_id": "alice"})
    assert final["outcome"]["status"] == "skipped" and "another synthesis" in final["outcome"]["detail"]
    assert model.calls == [] and memory.persona_history("alice") == []
    # bob is not held up by alice's lease
    assert (await graph.ainvoke({}, context={"user_id": "bob"}))["outcome"]["status"] == "accepted"
    memory.release_lease(other_process)
    assert (await graph.ainvoke({}, context={"user_id": "alice"}))["outcome"]["status"] == "accepted"


async def test_every_way_out_of_a_synthesis_releases_its_lease() -> None:
    memory = make_memory()
    store_pairs(memory, "alice", 1)  # too few pairs
    model = CountingChatModel(responder=taste_responder(GOOD))
    await synthesis_graph(memory, model).ainvoke({}, context={"user_id": "alice"})
    assert memory.acquire_lease("alice") is not None  # skipped: released

    memory = make_memory()
    store_pairs(memory, "alice", 6)
    memory.save_persona(Persona(user_id="alice", text=GOOD))

    def broken(messages: list[BaseMessage]) -> AIMessage:
        raise ConnectionError("endpoint unreachable")

    graph = synthesis_graph(memory, CountingChatModel(responder=broken), attempts=1)
    assert (await graph.ainvoke({}, context={"user_id": "alice"}))["outcome"]["status"] == "failed"
    assert memory.acquire_lease("alice") is not None  # failed: released

    memory = make_memory()
    store_pairs(memory, "alice", 9)
    memory.save_persona(Persona(user_id="alice", text=GOOD))
    graph = synthesis_graph(memory, CountingChatModel(responder=taste_responder(BAD)))
    assert (await graph.ainvoke({}, context={"user_id": "alice"}))["outcome"]["status"] == "rejected"
    assert memory.acquire_lease("alice") is not None  # rejected: released

    memory = make_memory()
    store_pairs(memory, "alice", 6)
    graph = synthesis_graph(memory, CountingChatModel(responder=taste_responder(GOOD)))
    assert (await graph.ainvoke({}, context={"user_id": "alice"}))["outcome"]["status"] == "accepted"
    assert memory.acquire_lease("alice") is not None  # accepted: released


async def test_a_synthesis_whose_lease_was_taken_over_does_not_save() -> None:
    memory = make_memory()
    store_pairs(memory, "alice", 6)
    memory.lease_s = 0.05
    model = CountingChatModel(responder=taste_responder(GOOD))
    graph = synthesis_graph(memory, model)
    successor: list[object] = []

    async def slow_save(state: Any) -> None:
        await asyncio.sleep(0.1)  # past the lease; another process takes over
        successor.append(memory.acquire_lease("alice"))

    updates = []
    async for update in graph.astream({}, context={"user_id": "alice"}, stream_mode="updates"):
        updates.append(update)
        if "annotate_pairs" in update:
            await slow_save(update)
    final = updates[-1]["save_persona"]["outcome"]
    assert successor[0] is not None
    assert final["status"] == "failed" and "lease expired" in final["detail"]
    assert memory.persona_history("alice") == []
