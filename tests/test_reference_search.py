"""The reference library's search in our code: its candidate programs, teacher passes, stopping
rule and what it costs, with scripted fakes."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from typer.testing import CliRunner

from agent.demo_sets import CandidateScore
from agent.errors import NotEnoughPreferences
from agent.reference_search import ReferenceSearch, pick_with_stop
from persona_agent.benchmarks.accuracy import synthesizer_for
from persona_agent.cli import app
from persona_agent.settings import load_settings
from tests.fakes import CountingChatModel, demo_count, liked_pairs, persona_message, persona_of, pick, task_of


def scores(*accuracies: float) -> list[CandidateScore]:
    return [CandidateScore(name=f"c{n}", demo_pair_ids=(), val_accuracy=a) for n, a in enumerate(accuracies)]


def test_the_stopping_rule_keeps_the_first_best_and_stops_at_the_threshold() -> None:
    assert pick_with_stop(scores(0.5, 0.85, 0.9), 0.8).name == "c1"  # stopped before the 0.9
    assert pick_with_stop(scores(0.4, 0.6, 0.6, 0.7), 0.8).name == "c3"
    assert pick_with_stop(scores(0.6, 0.6), 0.8).name == "c0"  # a tie keeps the earlier one


def judge_that(*, liked: bool) -> CountingChatModel:
    def respond(messages: list[BaseMessage]) -> AIMessage:
        if task_of(messages) == "induce":
            return persona_message("Likes the liked answers.")
        return pick(messages, liked=liked)

    return CountingChatModel(responder=respond)


async def test_a_teacher_that_is_never_right_reads_every_pair_in_eleven_passes_per_stage() -> None:
    train, val = liked_pairs(5), liked_pairs(3, offset=100)
    model = judge_that(liked=False)
    search = ReferenceSearch(model)
    result = await search.fit(train, val)

    stages = {name: usage.calls for name, usage in result.usage.stages.items()}
    # seed -1 and seeds 0-9 each ask the teacher about every train pair: none succeeds
    assert stages["bootstrap"] == 11 * len(train) and stages["demos"] == 11 * len(train)
    assert stages["induce"] == 1
    # each distinct demo set is scored once, in both orders of every val pair
    assert stages["bootstrap-select"] % (2 * len(val)) == 0 and stages["bootstrap-select"] <= 12 * 2 * len(
        val
    )
    assert stages["select"] % (2 * len(val)) == 0 and stages["select"] <= 13 * 2 * len(val)
    assert len(model.calls) == result.usage.total.calls <= search.plan_calls(len(train), len(val))
    assert len(result.candidates) == 13
    assert result.persona.val_accuracy == 0.0


async def test_a_right_judge_stops_at_the_first_candidate_of_each_stage() -> None:
    train, val = liked_pairs(6), liked_pairs(3, offset=100)
    model = judge_that(liked=True)
    result = await ReferenceSearch(model).fit(train, val)

    # Stage 1: the labelled-only program scores 100% first, so the persona reads its 4 labels
    (induction,) = model.calls_of("induce")
    prompt = induction.messages[-1].text
    assert prompt.count("<choice ") == 4 and "<reasoning>" not in prompt
    # Stage 3: the zero-shot persona judge scores 100% first and wins, with no demos
    assert [c.name for c in result.candidates][:2] == ["zero-shot", "labelled only"]
    assert result.persona.val_accuracy == 1.0 and result.demos == []
    assert result.accepted
    persona_calls = [c for c in model.calls_of("judge") if persona_of(c.messages)]
    assert any(demo_count(c.messages) > 4 for c in persona_calls)  # bootstrapped sets beyond 4 demos


async def test_the_reference_search_needs_val_pairs() -> None:
    model = judge_that(liked=True)
    with pytest.raises(NotEnoughPreferences, match="val"):
        await ReferenceSearch(model).fit(liked_pairs(6), [])
    assert model.calls == []


def test_bench_accuracy_runs_the_reference_search_on_request(tmp_path: Path) -> None:
    model = judge_that(liked=True)
    fitter = synthesizer_for("reference", model, model, settings=load_settings(), seed=3)
    assert isinstance(fitter, ReferenceSearch)
    assert (fitter.num_candidates, fitter.labelled_demos, fitter.stop_at) == (10, 4, 0.8)
    assert len(fitter.seeds(zero_shot=False)) == 12 and len(fitter.seeds(zero_shot=True)) == 13

    data = tmp_path / "pairs.jsonl"
    data.write_text("")
    result = CliRunner().invoke(app, ["bench", "accuracy", "--data", str(data), "--search", "widest"])
    assert result.exit_code != 0 and "default, full or reference" in result.output
