"""SynthesizeMe fits with scripted fakes: verified reasoning only, demo selection, the gate,
malformed output, the call budget and per-stage usage."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from pydantic import ValidationError

from agent.demo_sets import CandidateScore, select_best
from agent.errors import BudgetExceeded, NotEnoughPreferences
from agent.fit_stages import InducedPersona
from agent.formats import read_pairs, split_of
from agent.prompts import in_chosen_terms
from agent.records import Persona, PreferencePair, Turn
from agent.synthesis import SynthesizeMe
from tests.fakes import (
    T0,
    CountingChatModel,
    MalformedChatModel,
    default_responder,
    demo_count,
    liked_pairs,
    persona_message,
    persona_of,
    pick,
    replies_of,
    task_of,
    verdict_message,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


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
    result = await SynthesizeMe(model).fit(liked_pairs(6), [])

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
        await SynthesizeMe(model, seed=seed).fit(liked_pairs(10), [])
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
    result = await SynthesizeMe(model).fit(liked_pairs(6), liked_pairs(3, offset=100))

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
        liked_pairs(6), liked_pairs(3, offset=100)
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
    result = await SynthesizeMe(model).fit(liked_pairs(6), liked_pairs(4, offset=100), current=current)

    assert result.accepted is False
    assert result.baseline_val_accuracy == 1.0
    assert result.persona.baseline_val_accuracy == 1.0
    assert result.persona.val_accuracy == 0.0
    assert result.usage.stages["gate"].calls == 2 * 4


async def test_gate_accepts_a_new_persona_that_scores_at_least_as_well() -> None:
    current = Persona(user_id="u1", text="OLD: likes the liked answers.", version=3)
    result = await SynthesizeMe(persona_sensitive("OLD and still likes them.")).fit(
        liked_pairs(6), liked_pairs(4, offset=100), current=current
    )
    assert result.accepted is True
    assert result.persona.val_accuracy == result.persona.baseline_val_accuracy == 1.0


async def test_no_val_pairs_skips_the_search_and_accepts() -> None:
    model = CountingChatModel(responder=default_responder())
    result = await SynthesizeMe(model).fit(liked_pairs(4), [])
    assert result.accepted is True
    assert [c.val_accuracy for c in result.candidates] == [None]
    assert result.persona.val_accuracy is None
    assert "select" not in result.usage.stages
    assert result.persona.version == 0


async def test_malformed_output_is_retried_reported_and_never_crashes_the_fit() -> None:
    # Two bad answers: the first bootstrap pair spends both of its attempts and is skipped.
    model = MalformedChatModel(responder=default_responder(), bad_calls=2, tasks=("judge",))
    result = await SynthesizeMe(model, attempts=2).fit(liked_pairs(5), liked_pairs(2, offset=100))
    assert len(result.skipped_pair_ids) == 1
    assert result.skipped_pair_ids[0] not in result.default_judge_correct
    assert len(result.reasoning) == 4
    # 5 first orders, 1 retry, and the swapped order of each pair the first order got right
    verified = sum(r.verified for r in result.reasoning)
    assert verified and result.usage.stages["bootstrap"].calls == 5 + 1 + verified

    induce_twice = MalformedChatModel(responder=default_responder(), bad_calls=1, tasks=("induce",))
    result = await SynthesizeMe(induce_twice).fit(liked_pairs(4), [])
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
        liked_pairs(4), liked_pairs(2, offset=100)
    )
    assert result.judge_fallbacks > 0
    assert result.candidates and all(c.val_accuracy == 0.0 for c in result.candidates)


async def test_budget_is_checked_before_any_call() -> None:
    model = CountingChatModel(responder=default_responder())
    fitter = SynthesizeMe(model, max_calls=4)
    assert fitter.plan_calls(2, 0) == 7  # both orders of 2 pairs, induction, 2 corrections
    with pytest.raises(BudgetExceeded):
        await fitter.fit(liked_pairs(6), liked_pairs(3, offset=100))
    assert model.calls == []


async def test_pairs_are_trimmed_to_fit_the_budget_and_calls_stay_under_it() -> None:
    model = CountingChatModel(responder=default_responder())
    result = await SynthesizeMe(model, max_calls=30, max_pairs=40).fit(
        liked_pairs(20), liked_pairs(10, offset=100)
    )
    assert result.planned_calls <= 30
    assert len(model.calls) <= 30
    newest_train = {p.id for p in liked_pairs(20)[-len(result.train_pair_ids) :]}
    assert set(result.train_pair_ids) == newest_train
    assert 1 <= len(result.val_pair_ids) < 10


async def test_fewer_than_two_train_pairs_is_not_enough() -> None:
    with pytest.raises(NotEnoughPreferences):
        await SynthesizeMe(CountingChatModel(responder=default_responder())).fit(liked_pairs(1), [])


async def test_usage_is_reported_by_stage_and_matches_the_calls_made() -> None:
    model = CountingChatModel(responder=default_responder())
    result = await SynthesizeMe(model, concurrency=4).fit(liked_pairs(8), liked_pairs(3, offset=100))
    stages = result.usage.stages
    assert {"bootstrap", "induce", "select"} <= set(stages)
    verified = sum(r.verified for r in result.reasoning)  # each asked in both orders
    assert stages["bootstrap"].calls == 8 + verified and stages["induce"].calls == 1
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


# --- Stage 1 as the reference runs it ------------------------------------------------------------


def judged_pair(messages: list[BaseMessage], pairs: list[PreferencePair]) -> PreferencePair:
    """Return the pair a judge prompt asks about (by its replies)."""
    first, second = replies_of(messages)
    return next(p for p in pairs if {p.chosen, p.rejected} == {first, second})


async def test_the_stage_1_teacher_is_shown_four_other_labelled_pairs() -> None:
    pairs = liked_pairs(8)
    model = CountingChatModel(responder=default_responder())
    await SynthesizeMe(model).fit(pairs, [])

    bootstrap = [call for call in model.calls_of("judge") if persona_of(call.messages) is None]
    assert len(bootstrap) >= len(pairs)
    for call in bootstrap:
        prompt = call.messages[-1].text
        assert demo_count(call.messages) == 4
        assert "<why>" not in prompt  # labels only: which reply the user chose
        assert prompt.count("<chosen_reply>") == prompt.count("<rejected_reply>") == 4
        judged = judged_pair(call.messages, pairs)
        examples = prompt.split("</examples>")[0]
        assert f"question {pairs.index(judged)}\n" not in examples  # never the pair being judged
        assert judged.chosen not in examples


async def test_reasoning_is_verified_only_when_the_swapped_order_agrees() -> None:
    def always_first(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Prefers whatever comes first.")
        return verdict_message("First", "First is better.")

    model = CountingChatModel(responder=always_first)
    result = await SynthesizeMe(model).fit(liked_pairs(6), [])

    # right in the order it first saw (chosen shown first), wrong once swapped: never verified
    assert not any(r.verified for r in result.reasoning)
    assert {r.predicted for r in result.reasoning} == {"tie", "rejected"}
    ties = sum(r.predicted == "tie" for r in result.reasoning)
    assert result.usage.stages["bootstrap"].calls == 6 + ties
    assert "<reasoning>" not in model.calls_of("induce")[0].messages[-1].text


async def test_a_confident_log_probability_verifies_in_one_order() -> None:
    def confident(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Likes the liked answers.")
        first, _ = replies_of(messages)
        prob_first = 0.9 if "liked" in first else 0.1
        return verdict_message("First" if prob_first > 0.5 else "Second", "sure", prob_first=prob_first)

    model = CountingChatModel(responder=confident)
    result = await SynthesizeMe(model).fit(liked_pairs(6), [])
    assert len(result.reasoning) == 6 and all(r.verified for r in result.reasoning)
    assert result.usage.stages["bootstrap"].calls == 6  # no second order asked


async def test_verified_reasoning_is_rewritten_in_chosen_and_rejected_terms() -> None:
    def positional(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Likes the liked answers.")
        first, _ = replies_of(messages)
        if "liked" in first:
            return verdict_message("First", "First is better: the second reply is padded.")
        return verdict_message("Second", "Second is better: the first reply is padded.")

    pairs = liked_pairs(6)
    result = await SynthesizeMe(CountingChatModel(responder=positional)).fit(pairs, [])
    expected = "The chosen reply is better: the rejected reply is padded."
    assert result.reasoning and all(r.verified and r.text == expected for r in result.reasoning)
    assert result.demos and all(demo.reasoning == expected for demo in result.demos)
    notes = result.pair_annotations()
    assert {note["reasoning"] for note in notes.values()} == {expected}


@pytest.mark.parametrize(
    ("text", "chosen_first", "expected"),
    [
        ("Second is better.", False, "The chosen reply is better."),
        (
            "I prefer Response 1 over the second one.",
            True,
            "I prefer the chosen reply over the rejected reply.",
        ),
        ("First, the first reply is vague.", False, "First, the rejected reply is vague."),
        (
            "First of all, at first glance the second is longer.",
            True,
            "First of all, at first glance the rejected reply is longer.",
        ),
    ],
)
def test_position_words_are_renamed_but_ordinary_firsts_stay(
    text: str, chosen_first: bool, expected: str
) -> None:
    assert in_chosen_terms(text, chosen_first) == expected


# --- persona induction ---------------------------------------------------------------------------


def long_conversation(turns: int, *, words: int = 60) -> tuple[Turn, ...]:
    """A conversation of `turns` turns (user first, last user), each turn marked TURN-i."""
    roles = ["user", "assistant"]
    return tuple(
        Turn(role=roles[i % 2] if i < turns - 1 else "user", content=f"TURN-{i} " + "word " * words)  # type: ignore[arg-type]
        for i in range(turns)
    )


def conversation_pairs(count: int, turns: int) -> list[PreferencePair]:
    return [
        PreferencePair(
            user_id="u1",
            context=long_conversation(turns),
            chosen=f"liked answer {n} " + "detail " * 300,
            rejected=f"other reply {n} " + "filler " * 300,
            created_at=T0 + timedelta(minutes=n),
        )
        for n in range(count)
    ]


def liked_judge(messages: list[BaseMessage]) -> AIMessage:
    if task_of(messages) == "induce":
        return persona_message("Likes the liked answers.")
    return pick(messages, liked=True)


async def test_induction_sees_the_whole_conversation_and_replies_within_the_budget() -> None:
    pairs = conversation_pairs(3, turns=23)
    model = CountingChatModel(responder=liked_judge)
    await SynthesizeMe(model, induction_max_tokens=64_000).fit(pairs, [])

    (induction,) = model.calls_of("induce")
    prompt = induction.messages[-1].text
    for turn in range(23):
        assert prompt.count(f"TURN-{turn} ") == 3  # every turn of every choice
    assert "earlier turns omitted" not in prompt
    for pair in pairs:
        assert pair.chosen in prompt and pair.rejected in prompt  # replies unclipped
    assert count_tokens_approximately(induction.messages) <= 64_000


async def test_induction_drops_the_oldest_turns_first_past_the_budget() -> None:
    pairs = conversation_pairs(3, turns=23)
    model = CountingChatModel(responder=liked_judge)
    budget = 4_000
    await SynthesizeMe(model, induction_max_tokens=budget).fit(pairs, [])

    (induction,) = model.calls_of("induce")
    prompt = induction.messages[-1].text
    assert count_tokens_approximately(induction.messages) <= budget
    kept = [turn for turn in range(23) if f"TURN-{turn} " in prompt]
    assert kept and kept[-1] == 22 and kept == list(range(kept[0], 23))  # newest, contiguous
    assert kept[0] > 0 and prompt.count(f"({kept[0]} earlier turns omitted)") == 3
    assert all(pair.chosen[:200] in prompt for pair in pairs)


async def test_the_persona_is_written_by_the_judge_model() -> None:
    chat = CountingChatModel(responder=default_responder("from the chat model"))
    judge = CountingChatModel(responder=default_responder("Prefers short, direct replies."))
    result = await SynthesizeMe(chat, judge_model=judge).fit(liked_pairs(4), [])
    assert chat.calls == []
    assert result.persona.text == "Prefers short, direct replies."
    assert len(judge.calls_of("induce")) == 1


# --- budgets degrade -------------------------------------------------------------------------------


async def test_a_spent_budget_ends_the_fit_with_the_best_candidate_so_far() -> None:
    def flaky_with_reasoned_demos(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Likes the liked answers.")
        if persona_of(messages) is not None and "<why>" in messages[-1].text:
            return AIMessage(content="not structured")  # every attempt fails and is charged
        return pick(messages, liked=True)

    train, val = liked_pairs(6), liked_pairs(3, offset=100)
    fitter = SynthesizeMe(CountingChatModel(responder=flaky_with_reasoned_demos), attempts=3)
    fitter.max_calls = fitter.plan_calls(len(train), len(val))
    model = fitter.judge_model
    assert isinstance(model, CountingChatModel)

    result = await fitter.fit(train, val)

    assert result.budget_exhausted is True
    assert len(model.calls) <= fitter.max_calls
    names = {c.name for c in result.candidates}
    assert "verified" not in names and names  # the failing set dropped out, the rest competed
    assert result.persona.val_accuracy == max(c.val_accuracy or 0.0 for c in result.candidates) == 1.0
    assert result.persona.text == "Likes the liked answers." and result.accepted


async def test_a_budget_spent_before_any_candidate_is_scored_keeps_the_current_persona() -> None:
    def flaky_gate(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Likes the liked answers.")
        if "OLD" in (persona_of(messages) or ""):
            return AIMessage(content="not structured")
        return pick(messages, liked=True)

    train, val = liked_pairs(6), liked_pairs(3, offset=100)
    current = Persona(user_id="u1", text="OLD: likes the liked answers.", version=3)
    # The gate judges 3 val pairs in 2 orders, 4 attempts each: 24 calls, all the plan keeps for
    # scoring (2 x 3 pairs x (3 sets + the gate)).
    fitter = SynthesizeMe(CountingChatModel(responder=flaky_gate), attempts=4)
    fitter.max_calls = fitter.plan_calls(len(train), len(val), has_current=True)
    result = await fitter.fit(train, val, current=current)
    # the gate is scored first (its failures are ties); its retries leave nothing for the sets
    assert result.budget_exhausted is True
    assert result.baseline_val_accuracy == 0.0
    assert [c.val_accuracy for c in result.candidates] == [None]
    assert result.accepted is False and result.persona.val_accuracy is None
