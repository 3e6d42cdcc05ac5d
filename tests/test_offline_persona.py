"""The persona the offline reward model writes: a stored version like any other, and what drafting reads.

These run the shipped population prior over the real reply embedder (all-MiniLM-L6-v2), as the
product does offline. What the model concludes about a user is the reward model's business
(tests/test_reward_model.py); here: statements come out with the pairs behind them, become a
persona version with provenance and validation accuracy, can be rolled back, and condition drafting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from agent.evaluation import judge_agreement
from agent.formats import read_pairs
from agent.offline_persona import (
    NO_DEPARTURE,
    WRITING_HINTS,
    OfflinePersonaWriter,
    explain_pick,
    statements_of,
)
from agent.records import PreferencePair, Turn, check_persona_text
from agent.splits import split_train_val
from agent.statements import PreferenceStatement, describe_preferences
from agent.synthesis import SynthesizeMe
from agent.taste import fit_user
from graphs import synthesis
from graphs.chat import ChatOptions, build_graph
from graphs.judges import OfflineJudges
from graphs.state import SynthesisContext
from persona_agent import factory
from persona_agent.factory import OfflineParts, build_offline_parts
from persona_agent.settings import load_settings
from tests.conftest import SAMPLE_USER
from tests.fakes import CountingChatModel, chat_responder, make_memory


@pytest.fixture(scope="module")
def parts() -> OfflineParts:
    return build_offline_parts(load_settings())


def sample_pairs(user_id: str = "sam") -> list[PreferencePair]:
    """The bundled sample user's 12 pairs, one minute apart (oldest first)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        pair.model_copy(update={"created_at": start + timedelta(minutes=i)})
        for i, pair in enumerate(read_pairs(SAMPLE_USER, user_id=user_id, source="import"))
    ]


async def test_the_writer_renders_the_users_statements_with_provenance(parts: OfflineParts) -> None:
    pairs = sample_pairs()
    train, val = split_train_val(pairs)
    result = await OfflinePersonaWriter(parts.prior, parts.extractor).fit(train, val)
    persona = result.persona
    statements = statements_of(persona)
    # The persona is the statements of the model fitted on every pair read, as the judge fits it.
    everything = fit_user(parts.prior, parts.extractor, pairs)
    expected = describe_preferences(everything, parts.prior)
    assert [(s.feature, s.direction, s.text) for s in statements] == [
        (s.feature, s.direction, s.text) for s in expected
    ]
    assert [s.weight for s in statements] == pytest.approx([s.weight for s in expected])
    assert statements, "the sample user's 12 pairs depart from the population somewhere"
    assert all(statement.n_pairs == 12 for statement in statements)
    lines = persona.text.splitlines()
    assert lines[0] == "Measured on 12 of this user's choices, compared with most people's:"
    assert lines[1 : len(statements) + 1] == [f"- {statement.text}" for statement in statements]
    # What the statements ask of a reply closes the persona, in words a drafting model follows.
    asks = [
        WRITING_HINTS[(s.feature, s.direction)]
        for s in statements
        if (s.feature, s.direction) in WRITING_HINTS
    ]
    assert lines[len(statements) + 1 :] == ([f"Writing for them: {'; '.join(asks)}."] if asks else [])
    assert check_persona_text(persona.text) == persona.text
    # Provenance: which pairs, which model and feature version; no LLM was called.
    assert persona.source == "offline" and persona.model.startswith("offline reward model (features v")
    assert set(persona.pair_ids) == {pair.id for pair in pairs}
    assert result.usage.total.calls == 0
    # Validation: the model fitted on the train pairs, scored on the held-out ones, both orders.
    assert result.val_pair_ids == [pair.id for pair in val] and val
    assert persona.val_accuracy in {i / len(val) for i in range(len(val) + 1)}
    assert result.accepted and persona.baseline_val_accuracy is None
    # The population prior is the default judge of every train pair; its misses the user's model
    # predicts are the demos.
    assert set(result.default_judge_correct) == {pair.id for pair in train}
    missed = {pair_id for pair_id, correct in result.default_judge_correct.items() if not correct}
    assert {demo.pair.id for demo in result.demos} <= missed


async def test_choices_that_depart_from_nobody_store_no_persona(parts: OfflineParts) -> None:
    # Replies alike in everything the model can name (length, lists, tone...): nothing to say.
    memory = make_memory()
    words = [("red", "big"), ("ripe", "good"), ("cold", "warm")]
    memory.add_pairs(
        "sam",
        [
            PreferencePair(
                user_id="sam",
                context=(Turn(role="user", content=f"Tell me something, take {i}."),),
                chosen=f"The {a} apple is sweet.",
                rejected=f"The {b} apple is sweet.",
            )
            for i, (a, b) in enumerate(words)
        ],
    )
    writer = OfflinePersonaWriter(parts.prior, parts.extractor)
    graph = synthesis.build_graph(synthesizer=writer, memory=memory)
    final = await graph.ainvoke({}, context=SynthesisContext(user_id="sam"))
    assert final["outcome"]["status"] == "rejected"
    assert final["outcome"]["detail"] == NO_DEPARTURE
    assert memory.current_persona("sam") is None


async def test_offline_personas_are_versions_with_a_gate_and_rollback(parts: OfflineParts) -> None:
    memory = make_memory()
    pairs = sample_pairs()
    memory.add_pairs("sam", pairs[:9])
    graph = synthesis.build_graph(
        synthesizer=OfflinePersonaWriter(parts.prior, parts.extractor), memory=memory
    )
    first = await graph.ainvoke({}, context=SynthesisContext(user_id="sam"))
    assert first["outcome"]["status"] == "accepted" and first["outcome"]["llm_calls"] == 0
    memory.add_pairs("sam", pairs[9:])
    second = await graph.ainvoke({}, context=SynthesisContext(user_id="sam"))
    v1, v2 = memory.persona_history("sam")
    assert (v1.version, len(v1.pair_ids), v2.version, len(v2.pair_ids)) == (1, 9, 2, 12)
    # The second fit was gated against the first one's method on the same held-out pairs.
    assert v2.baseline_val_accuracy is not None and second["outcome"]["baseline_val_accuracy"] is not None
    if second["outcome"]["status"] == "accepted":
        assert v2.val_accuracy is not None and v2.val_accuracy >= v2.baseline_val_accuracy
    # The default judge's verdicts are kept with the pairs (the inspector's badges, demo retrieval).
    notes = memory.annotations("sam")
    train, _ = split_train_val(pairs)
    assert all(isinstance(notes[pair.id]["default_judge_correct"], bool) for pair in train)
    memory.rollback("sam", 1)
    current = memory.current_persona("sam")
    assert current is not None and current.version == 1 and statements_of(current) == statements_of(v1)
    assert memory.current_persona("someone-else") is None


async def test_drafting_is_conditioned_on_the_offline_persona(parts: OfflineParts) -> None:
    memory = make_memory()
    memory.add_pairs("sam", sample_pairs())
    model = CountingChatModel(responder=chat_responder())
    graph = build_graph(
        chat_model=model,
        judge_model=model,
        memory=memory,
        checkpointer=InMemorySaver(),
        synthesizer=OfflinePersonaWriter(parts.prior, parts.extractor),
        judges=OfflineJudges(memory, parts.prior, parts.extractor),
        options=ChatOptions(synthesis_mode="inline", attempts=1),
    )
    state = await graph.ainvoke(
        {"messages": [HumanMessage("How do I keep basil alive?")]},
        {"configurable": {"thread_id": "t"}},
        context={"user_id": "sam"},
    )
    persona = memory.current_persona("sam")
    assert persona is not None and persona.source == "offline"
    assert state["persona"]["version"] == persona.version and state["judge"] == "offline"
    drafts = model.calls_of("other")
    assert len(drafts) == 3 and not model.calls_of("induce") and not model.calls_of("judge")
    for call in drafts:
        system = call.messages[0].text
        assert persona.text in system
        for statement in statements_of(persona):
            assert f"- {statement.text}" in system


async def test_explain_pick_names_the_statements_that_favour_the_pick(parts: OfflineParts) -> None:
    pairs = sample_pairs()
    model = fit_user(parts.prior, parts.extractor, pairs)
    statements = describe_preferences(model, parts.prior)
    query = "How do I store fresh herbs?"
    listed = "- Wrap in a damp towel\n- Keep in the fridge\n- Use within a week"
    hedged = "It depends, but perhaps you might possibly keep them somewhere cool; it is hard to say."
    forward = explain_pick(model, parts.prior, parts.extractor, statements, query, listed, hedged)
    backward = explain_pick(model, parts.prior, parts.extractor, statements, query, hedged, listed)
    favouring = {item.statement.feature for item in forward}
    assert all(item.contribution > 0 for item in forward + backward)
    assert [item.contribution for item in forward] == sorted(
        (item.contribution for item in forward), reverse=True
    )
    # A statement favours one side only; those on neither side separate nothing.
    assert not favouring & {item.statement.feature for item in backward}
    # the sample user dislikes hedging and likes lists: both statements favour the listed reply
    by_feature = {statement.feature: statement for statement in statements}
    assert by_feature["hedging"].direction == "less" and by_feature["lists"].direction == "more"
    assert {"hedging", "lists"} <= favouring


def test_the_persona_source_setting_picks_the_writer(
    parts: OfflineParts, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = CountingChatModel(responder=chat_responder())
    assert load_settings().persona_source == "offline"  # no endpoint: auto means offline
    assert load_settings(openai_base_url="http://127.0.0.1:9/v1").persona_source == "llm"
    assert load_settings(
        openai_base_url="http://127.0.0.1:9/v1", persona_source="offline"
    ).persona_source == ("offline")
    offline = factory.build_synthesizer(load_settings(max_pairs_per_synthesis=7), model, model, offline=parts)
    assert isinstance(offline, OfflinePersonaWriter) and offline.max_pairs == 7
    assert isinstance(
        factory.build_synthesizer(load_settings(persona_source="llm"), model, model), SynthesizeMe
    )
    monkeypatch.setenv("PERSONA_AGENT_PERSONA_SOURCE", "oracle")
    with pytest.raises(Exception, match="persona_source"):
        load_settings()


def _pick(
    user: str, question: str, chosen: str, rivals: list[str], agreed: bool, minute: int
) -> list[PreferencePair]:
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    return [
        PreferencePair(
            user_id=user,
            context=(Turn(role="user", content=question),),
            chosen=chosen,
            rejected=rival,
            created_at=when,
            metadata={"judge_agreed": agreed, "persona_version": 1},
        )
        for rival in rivals
    ]


def test_judge_agreement_counts_picks_not_pairs() -> None:
    pairs = [
        *_pick("sam", "q1", "a", ["b", "c"], True, 1),
        *_pick("sam", "q2", "d", ["e", "f"], False, 2),
        *_pick("sam", "q3", "g", ["h", "i"], True, 3),
        # an imported pair carries no judge verdict: it is no pick
        PreferencePair(user_id="sam", context=(Turn(role="user", content="q4"),), chosen="x", rejected="y"),
    ]
    agreement = judge_agreement(pairs)
    assert (agreement.picks, agreement.agreed, agreement.recent) == (3, 2, (True, False, True))
    assert agreement.rate == pytest.approx(2 / 3)
    last_two = judge_agreement(list(reversed(pairs)), last=2)
    assert (last_two.picks, last_two.agreed, last_two.recent) == (2, 1, (False, True))
    assert judge_agreement(pairs[-1:]).rate is None


def test_statements_round_trip_through_the_stored_persona(parts: OfflineParts) -> None:
    statement = PreferenceStatement(
        feature="lists",
        direction="more",
        text="favours bullet lists",
        weight=0.5,
        population_weight=0.0,
        deviation=0.5,
        n_pairs=12,
    )
    memory = make_memory()
    from agent.records import Persona

    stored = memory.save_persona(
        Persona(
            user_id="sam",
            text="Measured on 12 of this user's choices:\n- favours bullet lists",
            source="offline",
            statements=(statement.model_dump(mode="json"),),
        )
    )
    again = memory.get_persona("sam", stored.version)
    assert statements_of(again) == [statement] and again.source == "offline"
    exported = memory.export_user("sam")
    other = make_memory()
    other.import_user(exported)
    imported = other.current_persona("sam")
    assert imported is not None and statements_of(imported) == [statement]
