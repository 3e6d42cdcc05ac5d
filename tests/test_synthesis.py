"""SynthesizeMe fits with scripted fakes: verified reasoning only, demo selection, the gate,
malformed output, the call budget and per-stage usage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import ValidationError

from agent.errors import BudgetExceeded, NotEnoughPreferences
from agent.formats import read_pairs, split_of
from agent.records import Persona, PreferencePair, Turn
from agent.synthesis import CandidateScore, InducedPersona, SynthesizeMe, select_best
from tests.fakes import (
    CountingChatModel,
    MalformedChatModel,
    default_responder,
    demo_count,
    persona_message,
    persona_of,
    replies_of,
    task_of,
    verdict_message,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
START = datetime(2026, 1, 1, tzinfo=UTC)


def make_pairs(
    count: int, *, user: str = "u1", offset: int = 0, shorter_chosen_every: int = 2
) -> list[PreferencePair]:
    """Pairs whose chosen reply says 'liked'; every `shorter_chosen_every`-th one is also shorter."""
    pairs = []
    for n in range(offset, offset + count):
        chosen_short = n % shorter_chosen_every == 0
        liked = f"liked answer {n}" if chosen_short else f"liked answer {n} with many extra words added"
        other = f"other reply {n} padded out with words" if chosen_short else f"other {n}"
        pairs.append(
            PreferencePair(
                user_id=user,
                context=(Turn(role="user", content=f"question {n}"),),
                chosen=liked,
                rejected=other,
                created_at=START + timedelta(minutes=n),
            )
        )
    return pairs


def pick(messages: list[BaseMessage], *, liked: bool, reasoning: str = "because") -> AIMessage:
    """Answer a judge prompt with the reply that does (or does not) say 'liked'."""
    first, _ = replies_of(messages)
    first_liked = "liked" in first
    return verdict_message("First" if first_liked == liked else "Second", reasoning)


def shorter(messages: list[BaseMessage], reasoning: str = "shorter") -> AIMessage:
    first, second = replies_of(messages)
    return verdict_message("First" if len(first) <= len(second) else "Second", reasoning)


async def test_only_verified_reasoning_reaches_persona_induction() -> None:
    def respond(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Prefers short replies.")
        first, second = replies_of(messages)
        return shorter(messages, reasoning=f"REASON[{first}|{second}]")

    model = CountingChatModel(responder=respond)
    result = await SynthesizeMe(model).fit(make_pairs(6), [])

    wrong = [r for r in result.reasoning if r.predicted == "rejected"]
    right = [r for r in result.reasoning if r.verified]
    assert len(wrong) == 3 and len(right) == 3
    assert sorted(result.default_judge_correct.values()) == [False] * 3 + [True] * 3
    (induction,) = model.calls_of("induce")
    prompt = induction.messages[-1].text
    assert all(r.text in prompt for r in right)
    assert not any(r.text in prompt for r in wrong)


async def test_reply_order_is_randomized_per_pair_and_seeded() -> None:
    async def firsts(seed: int) -> list[str]:
        model = CountingChatModel(responder=default_responder())
        await SynthesizeMe(model, seed=seed).fit(make_pairs(10), [])
        return [replies_of(call.messages)[0] for call in model.calls_of("judge")[:10]]

    once, again = await firsts(0), await firsts(0)
    assert sorted(once) == sorted(again)
    chosen_first = sum("liked" in first for first in once)
    assert 0 < chosen_first < 10
    assert sorted(await firsts(1)) != sorted(once)


def test_select_best_prefers_accuracy_then_fewer_demos() -> None:
    scores = [
        CandidateScore(name="a", demo_pair_ids=("p1", "p2"), val_accuracy=0.75),
        CandidateScore(name="b", demo_pair_ids=("p3",), val_accuracy=0.75),
        CandidateScore(name="c", demo_pair_ids=(), val_accuracy=0.5),
    ]
    assert select_best(scores).name == "b"
    scores.append(CandidateScore(name="d", demo_pair_ids=("p1", "p2", "p3"), val_accuracy=1.0))
    assert select_best(scores).name == "d"


async def test_demo_selection_keeps_the_set_that_scores_best_on_val() -> None:
    def respond(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Likes what they like.")
        if persona_of(messages) is None:
            return shorter(messages)
        return pick(messages, liked=demo_count(messages) > 0)  # demos make the persona judge right

    model = CountingChatModel(responder=respond)
    result = await SynthesizeMe(model).fit(make_pairs(6), make_pairs(3, offset=100))

    by_name = {c.name: c.val_accuracy for c in result.candidates}
    assert by_name["persona only"] == 0.0
    assert by_name["verified"] == 1.0
    assert result.demos and all(d.reasoning for d in result.demos)
    assert result.persona.demo_pair_ids == tuple(d.pair.id for d in result.demos)
    assert result.persona.val_accuracy == 1.0


async def test_demo_selection_prefers_no_demos_on_a_tie() -> None:
    def respond(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Likes what they like.")
        return shorter(messages) if persona_of(messages) is None else pick(messages, liked=True)

    result = await SynthesizeMe(CountingChatModel(responder=respond)).fit(
        make_pairs(6), make_pairs(3, offset=100)
    )
    assert len(result.candidates) >= 2
    assert all(c.val_accuracy == 1.0 for c in result.candidates)
    assert result.demos == []


def persona_sensitive(new_text: str) -> CountingChatModel:
    """Induce `new_text`; the persona judge is right only with a persona mentioning 'OLD'."""

    def respond(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message(new_text)
        persona = persona_of(messages)
        if persona is None:
            return shorter(messages)
        return pick(messages, liked="OLD" in persona)

    return CountingChatModel(responder=respond)


async def test_gate_keeps_the_current_persona_when_the_new_one_scores_lower() -> None:
    current = Persona(user_id="u1", text="OLD: likes the liked answers.", version=3)
    model = persona_sensitive("Likes a new kind of answer.")
    result = await SynthesizeMe(model).fit(make_pairs(6), make_pairs(4, offset=100), current=current)

    assert result.accepted is False
    assert result.baseline_val_accuracy == 1.0
    assert result.persona.baseline_val_accuracy == 1.0
    assert result.persona.val_accuracy == 0.0
    assert result.usage.stages["gate"].calls == 2 * 4


async def test_gate_accepts_a_new_persona_that_scores_at_least_as_well() -> None:
    current = Persona(user_id="u1", text="OLD: likes the liked answers.", version=3)
    result = await SynthesizeMe(persona_sensitive("OLD and still likes them.")).fit(
        make_pairs(6), make_pairs(4, offset=100), current=current
    )
    assert result.accepted is True
    assert result.persona.val_accuracy == result.persona.baseline_val_accuracy == 1.0


async def test_no_val_pairs_skips_the_search_and_accepts() -> None:
    model = CountingChatModel(responder=default_responder())
    result = await SynthesizeMe(model).fit(make_pairs(4), [])
    assert result.accepted is True
    assert [c.val_accuracy for c in result.candidates] == [None]
    assert result.persona.val_accuracy is None
    assert "select" not in result.usage.stages
    assert result.persona.version == 0


async def test_malformed_output_is_retried_reported_and_never_crashes_the_fit() -> None:
    # Two bad answers: the first bootstrap pair spends both of its attempts and is skipped.
    model = MalformedChatModel(responder=default_responder(), bad_calls=2, tasks=("judge",))
    result = await SynthesizeMe(model, attempts=2).fit(make_pairs(5), make_pairs(2, offset=100))
    assert len(result.skipped_pair_ids) == 1
    assert result.skipped_pair_ids[0] not in result.default_judge_correct
    assert len(result.reasoning) == 4
    assert result.usage.stages["bootstrap"].calls == 5 + 1

    induce_twice = MalformedChatModel(responder=default_responder(), bad_calls=1, tasks=("induce",))
    result = await SynthesizeMe(induce_twice).fit(make_pairs(4), [])
    assert result.usage.stages["induce"].calls == 2
    assert result.persona.text == "Prefers short, direct replies."


async def test_failing_val_comparisons_become_counted_fallbacks() -> None:
    def respond(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Prefers plain replies.")
        if persona_of(messages) is not None:
            return AIMessage(content="not structured")
        return shorter(messages)

    result = await SynthesizeMe(CountingChatModel(responder=respond), attempts=1, max_calls=200).fit(
        make_pairs(4), make_pairs(2, offset=100)
    )
    assert result.judge_fallbacks > 0
    assert all(c.val_accuracy == 0.0 for c in result.candidates)


async def test_budget_is_checked_before_any_call() -> None:
    model = CountingChatModel(responder=default_responder())
    fitter = SynthesizeMe(model, max_calls=4)
    assert fitter.plan_calls(2, 0) == 5
    with pytest.raises(BudgetExceeded):
        await fitter.fit(make_pairs(6), make_pairs(3, offset=100))
    assert model.calls == []


async def test_pairs_are_trimmed_to_fit_the_budget_and_calls_stay_under_it() -> None:
    model = CountingChatModel(responder=default_responder())
    result = await SynthesizeMe(model, max_calls=30, max_pairs=40).fit(
        make_pairs(20), make_pairs(10, offset=100)
    )
    assert result.planned_calls <= 30
    assert len(model.calls) <= 30
    newest_train = {p.id for p in make_pairs(20)[-len(result.train_pair_ids) :]}
    assert set(result.train_pair_ids) == newest_train
    assert 1 <= len(result.val_pair_ids) < 10


async def test_fewer_than_two_train_pairs_is_not_enough() -> None:
    with pytest.raises(NotEnoughPreferences):
        await SynthesizeMe(CountingChatModel(responder=default_responder())).fit(make_pairs(1), [])


async def test_usage_is_reported_by_stage_and_matches_the_calls_made() -> None:
    model = CountingChatModel(responder=default_responder())
    result = await SynthesizeMe(model, concurrency=4).fit(make_pairs(8), make_pairs(3, offset=100))
    stages = result.usage.stages
    assert {"bootstrap", "induce", "select"} <= set(stages)
    assert stages["bootstrap"].calls == 8 and stages["induce"].calls == 1
    assert result.usage.total.calls == len(model.calls) <= result.planned_calls
    assert result.usage.total.prompt_tokens == model.prompt_tokens


def real_user_pairs(train: int, val: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """The train and val pairs of the MT-Bench judge with the most votes (long real replies)."""
    pairs = read_pairs(DATA / "mt_bench_human" / "pairs.jsonl", skip_invalid=True)
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair.user_id] = counts.get(pair.user_id, 0) + 1
    user = max(counts, key=lambda u: counts[u])
    mine = [p for p in pairs if p.user_id == user and split_of(p) != "population"]
    return mine[:train], mine[train : train + val]


@pytest.mark.parametrize(("n_train", "n_val"), [(5, 3), (10, 5), (15, 7)])
async def test_cost_of_one_fit_on_real_pairs(
    n_train: int, n_val: int, capsys: pytest.CaptureFixture[str]
) -> None:
    train, val = real_user_pairs(n_train, n_val)
    model = CountingChatModel(responder=default_responder())
    result = await SynthesizeMe(model).fit(train, val)

    calls, prompt = len(model.calls), model.prompt_tokens
    assert calls == result.usage.total.calls <= result.planned_calls
    if (n_train, n_val) == (10, 5):
        assert calls <= 60 and prompt < 100_000
    stages = {name: (u.calls, u.prompt_tokens) for name, u in result.usage.stages.items()}
    with capsys.disabled():
        print(
            "\nfit cost",
            json.dumps(
                {
                    "train": n_train,
                    "val": n_val,
                    "calls": calls,
                    "prompt_tokens": prompt,
                    "completion_tokens": model.completion_tokens,
                    "stages": stages,
                }
            ),
        )


@pytest.mark.parametrize("echo", ["<the statements>", "<persona>", "...", "…"])
def test_an_echoed_format_placeholder_is_not_accepted_as_a_persona(echo: str) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        InducedPersona(persona=echo)
    assert InducedPersona(persona="Prefers short answers.\nDislikes hedging.").persona.startswith("Prefers")
