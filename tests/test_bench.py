"""The benchmarks: accuracy arithmetic, the SQLite LLM cache, the cost suite, and the CLI on real data."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from typer.testing import CliRunner

from agent.evaluation import run_judges, same_judge
from agent.judge import PersonaJudge
from agent.records import PreferencePair, Turn, Verdict
from agent.splits import user_splits
from agent.synthesis import SynthesizeMe
from persona_agent.benchmarks.accuracy import judge_document
from persona_agent.benchmarks.cost import REFERENCE, synthetic_pairs
from persona_agent.benchmarks.llm_cache import SQLiteLLMCache, attach_cache
from persona_agent.benchmarks.scripted_model import ScriptedPreferenceModel
from persona_agent.cli import app
from tests.conftest import MT_BENCH, PRISM
from tests.fakes import CountingChatModel, WordHashEmbeddings, default_responder


def labelled(user: str, split: str, chosen: str, rejected: str, n: int) -> PreferencePair:
    """A pair of `user` in `split` about question `n`."""
    return PreferencePair(
        user_id=user,
        context=(Turn(role="user", content=f"question {n} of {user}"),),
        chosen=chosen,
        rejected=rejected,
        metadata={"split": split},
    )


class KeywordJudge:
    """Prefers the reply saying "good"; both say it: always First; neither: a tie."""

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Judge by the keyword."""
        a, b = "good" in first, "good" in second
        if a and b:
            return Verdict(preferred="first", prob_first=1.0)
        if a != b:
            return Verdict(preferred="first" if a else "second", prob_first=1.0 if a else 0.0)
        return Verdict(preferred="tie", prob_first=0.5)


async def test_accuracy_counts_both_orders_ties_wrong_and_macro_over_users() -> None:
    pairs = [
        *(labelled("alice", "train", f"a{n}", f"b{n}", n) for n in range(2)),
        labelled("alice", "val", "v", "w", 9),
        labelled("alice", "test", "good A", "bad", 10),  # right in both orders: 1 and 1
        labelled("alice", "test", "fine", "plain", 11),  # tie in both orders: 0 and 0
        *(labelled("bob", "train", f"c{n}", f"d{n}", n) for n in range(2)),
        labelled("bob", "test", "good B", "good C", 12),  # always First: per order 0.5, debiased a tie
        labelled("bob", "test", "x", "good D", 13),  # wrong in both orders: 0 and 0
        labelled("carol", "train", "e", "f", 1),  # one train pair: skipped
        labelled("carol", "test", "good", "g", 2),
        labelled("dave", "population", "good", "h", 1),  # population only: not evaluated
    ]
    splits, skipped = user_splits(pairs)
    assert [split.user_id for split in splits] == ["alice", "bob"]
    assert set(skipped) == {"carol"}
    assert [len(splits[0].train), len(splits[0].val), len(splits[0].test)] == [2, 1, 2]

    async def build(split: object) -> object:
        return same_judge(KeywordJudge())

    evaluation = await run_judges(splits, {"keyword": build})  # type: ignore[dict-item]
    document = judge_document(evaluation, "keyword", seed=0)
    per_user = {row["user_id"]: (row["accuracy"], row["accuracy_per_order"]) for row in document["users"]}
    assert per_user == {"alice": (0.5, 0.5), "bob": (0.0, 0.25)}
    assert document["macro_accuracy"] == pytest.approx(0.25)
    assert document["macro_accuracy_per_order"] == pytest.approx(0.375)
    # alice: "good A" named in both orders, the tie in neither; bob: "good D" never, "good B" once.
    assert document["position_consistency"] == pytest.approx((0.5 + 0.5) / 2)
    assert (document["n_users"], document["n_pairs"]) == (2, 4)
    # Resampling two users: the interval runs from the lower to the higher user accuracy.
    assert (document["ci_low"], document["ci_high"]) == (0.0, 0.5)
    assert document["ci_per_order"] == [0.25, 0.5]
    assert splits[1].test[0].chosen == "good B"  # the test pairs came from the file's labels


async def test_a_judge_that_fails_for_a_user_skips_only_that_user() -> None:
    from agent.errors import NotEnoughPreferences

    pairs = [
        *(
            labelled(user, split, f"{user}{n}", f"z{n}", n)
            for user in ("amy", "ben")
            for n, split in enumerate(["train", "train", "test"])
        )
    ]
    splits, _ = user_splits(pairs)

    async def build(split: object) -> object:
        if split.user_id == "amy":  # type: ignore[attr-defined]
            raise NotEnoughPreferences("no fit")
        return same_judge(KeywordJudge())

    evaluation = await run_judges(splits, {"keyword": build})  # type: ignore[dict-item]
    document = judge_document(evaluation, "keyword", seed=0)
    assert document["n_users"] == 1
    assert document["skipped"] == [{"user_id": "amy", "reason": "NotEnoughPreferences: no fit"}]


def _messages(text: str) -> list[BaseMessage]:
    return [SystemMessage("You are terse."), HumanMessage(text)]


def test_llm_cache_second_identical_call_is_a_hit_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "llm.sqlite"
    model = CountingChatModel(responder=lambda messages: AIMessage(f"echo {messages[-1].text}"))
    cache = SQLiteLLMCache(path, namespace="chat")
    attach_cache(model, cache)

    first = model.invoke(_messages("hello"))
    second = model.invoke(_messages("hello"))
    assert first.text == second.text == "echo hello"
    assert len(model.calls) == 1
    assert (cache.hits, cache.misses) == (1, 1)
    model.invoke(_messages("other"))
    assert len(model.calls) == 2
    cache.close()

    reopened = SQLiteLLMCache(path, namespace="chat")
    fresh = CountingChatModel(responder=lambda messages: AIMessage("never asked"))
    attach_cache(fresh, reopened)
    assert fresh.invoke(_messages("hello")).text == "echo hello"
    assert fresh.calls == []
    assert len(reopened) == 2

    other_namespace = SQLiteLLMCache(path, namespace="judge")
    attach_cache(fresh, other_namespace)
    assert fresh.invoke(_messages("hello")).text == "never asked"
    assert len(fresh.calls) == 1


async def test_llm_cache_replays_structured_judge_answers(tmp_path: Path) -> None:
    model = CountingChatModel(responder=default_responder())
    attach_cache(model, SQLiteLLMCache(tmp_path / "llm.sqlite"))
    context = (Turn(role="user", content="How do I boil an egg?"),)
    verdicts = []
    for _ in range(2):  # a new judge each time, so its in-memory cache cannot answer
        judge = PersonaJudge(model, "Likes short replies.", structured_method="function_calling")
        verdicts.append(await judge.judge_once(context, "Boil it 8 minutes.", "A long story about eggs."))
    assert verdicts[0] == verdicts[1]
    assert verdicts[0].preferred == "first"
    assert len(model.calls) == 1


def test_attach_cache_none_turns_caching_off(tmp_path: Path) -> None:
    model = CountingChatModel(responder=lambda messages: AIMessage("hi"))
    cache = SQLiteLLMCache(tmp_path / "llm.sqlite")
    attach_cache(model, cache)
    model.invoke(_messages("x"))
    model.invoke(_messages("x"))
    assert len(model.calls) == 1  # the cache answered the second call

    # Off means neither the cache attached before nor langchain's process-wide cache answers.
    previous = get_llm_cache()
    set_llm_cache(InMemoryCache())
    try:
        attach_cache(model, None)
        model.invoke(_messages("x"))
        model.invoke(_messages("x"))
    finally:
        set_llm_cache(previous)
        cache.close()
    assert len(model.calls) == 3


def test_scripted_fake_is_right_at_the_rate_asked() -> None:
    pairs = synthetic_pairs(200, seed=3)
    from agent.prompts import judge_messages

    for p in (0.0, 0.7, 1.0):
        model = ScriptedPreferenceModel(p_correct=p, seed=1).known_pairs(pairs)
        right = 0
        for pair in pairs:
            answer = model.invoke(judge_messages(pair.context, pair.rejected, pair.chosen))
            right += answer.tool_calls[0]["args"]["choice"] == "Second"
        assert abs(right / len(pairs) - p) <= 0.08


def _run_json(args: list[str]) -> dict[str, object]:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_bench_cost_json_shape_and_budget_at_10_plus_5(tmp_path: Path) -> None:
    document = _run_json(["bench", "cost", "--json", "--data", str(tmp_path / "absent.jsonl")])
    assert document["pairs"] == "synthetic pairs (no data file)"
    fit = document["fit"]
    assert set(fit) == {"5", "10", "15", "25"}
    for row in fit.values():
        assert {"calls", "prompt_tokens", "completion_tokens", "by_stage"} <= set(row)
        assert sum(stage["calls"] for stage in row["by_stage"].values()) == row["calls"]
        assert sum(stage["prompt_tokens"] for stage in row["by_stage"].values()) == row["prompt_tokens"]
        assert row["calls"] <= row["planned_calls"]
    at_10 = fit["10"]
    assert at_10["n_train_used"] == 10 and at_10["n_val_used"] == 5
    assert at_10["calls"] <= 60
    assert at_10["prompt_tokens"] <= REFERENCE[10]["prompt_tokens"][0] / 5
    assert set(at_10["by_stage"]) == {"bootstrap", "induce", "demos", "select"}
    # every pair once, and again with the replies swapped when the first order was right
    assert 10 < at_10["by_stage"]["bootstrap"]["calls"] <= 20
    reference = document["fit_reference_search"]["10"]  # the reference library's search, same pairs
    assert reference["n_train_used"] == 10 and reference["calls"] > 5 * at_10["calls"]
    assert reference["prompt_tokens"] > 5 * at_10["prompt_tokens"]
    turn = document["turn"]
    assert [turn[n]["calls"] for n in ("2", "4", "8")] == [2, 12, 14]
    assert document["targets"]["met"] is True


@pytest.mark.skipif(not MT_BENCH.is_file(), reason="MT-Bench data not present")
def test_bench_cost_runs_on_the_judge_with_most_votes() -> None:
    document = _run_json(["bench", "cost", "--json", "--data", str(MT_BENCH)])
    assert "judge author_4" in document["pairs"]
    assert document["fit"]["10"]["calls"] <= 60


@pytest.mark.skipif(not MT_BENCH.is_file(), reason="MT-Bench data not present")
def test_bench_accuracy_longer_and_offline_on_mt_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs the no-LLM judges through the CLI; a word-hash embedder stands in for MiniLM to stay fast."""
    import persona_agent.factory as factory
    from agent.formats import read_pairs, split_of

    monkeypatch.setattr(
        factory, "build_embeddings", lambda settings, purpose: WordHashEmbeddings(dimensions=48)
    )

    def no_llm(settings: object) -> None:
        raise AssertionError("no language model may be built for these judges")

    monkeypatch.setattr(factory, "build_chat_model", no_llm)
    monkeypatch.setattr(factory, "build_judge_model", no_llm)
    document = _run_json(
        [
            "bench",
            "accuracy",
            "--data",
            str(MT_BENCH),
            "--judge",
            "longer,offline",
            "--json",
            "--users",
            "3",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--compare",
            "offline,longer",
        ]
    )
    judges = document["judges"]
    assert set(judges) == {"longer", "offline"}
    assert document["model_note"] is None
    for row in judges.values():
        assert row["n_users"] == 3
        assert 0.0 <= row["ci_low"] <= row["macro_accuracy"] <= row["ci_high"] <= 1.0
        low, high = row["ci_per_order"]
        assert 0.0 <= low <= row["macro_accuracy_per_order"] <= high <= 1.0
        # Both judges score a pair from the replies alone, so reply order cannot change their pick.
        assert row["macro_accuracy_per_order"] == pytest.approx(row["macro_accuracy"])
    assert document["excluded_users"] == []
    comparison = document["comparison"]
    assert (comparison["a"], comparison["b"], comparison["n_users"]) == ("offline", "longer", 3)
    gains = [
        mine["accuracy"] - theirs["accuracy"]
        for mine, theirs in zip(judges["offline"]["users"], judges["longer"]["users"], strict=True)
    ]
    assert comparison["accuracy"]["difference"] == pytest.approx(sum(gains) / 3)
    low, high = comparison["accuracy"]["ci95"]
    assert min(gains) <= low <= comparison["accuracy"]["difference"] <= high <= max(gains)
    # Prefer-the-longer counted independently from the file: both orders agree, ties score nothing.
    users = [row["user_id"] for row in document["users"]]
    expected = []
    for user in users:
        test = [
            p
            for p in read_pairs(MT_BENCH, skip_invalid=True)
            if p.user_id == user and p.metadata.get("split") == "test"
        ]
        expected.append(sum(len(p.chosen) > len(p.rejected) for p in test) / len(test))
    assert [row["accuracy"] for row in judges["longer"]["users"]] == pytest.approx(expected)
    ties = [
        sum(len(p.chosen) == len(p.rejected) for p in test) / len(test)
        for test in (
            [p for p in read_pairs(MT_BENCH, skip_invalid=True) if p.user_id == u and split_of(p) == "test"]
            for u in users
        )
    ]
    consistency = [row["position_consistency"] for row in judges["longer"]["users"]]
    assert consistency == pytest.approx([1 - tie for tie in ties])
    assert judges["longer"]["macro_accuracy"] == pytest.approx(sum(expected) / 3)
    assert document["offline_prior"].startswith("leave-user-out")
    # each offline judge is fitted with the tastes the file's other users share, unless told not to
    assert re.search(
        r"taste prior learnt from 3 users' train pairs, each user's own left out "
        r"\(the prior's own masses counting as [0-9.]+ users?\)$",
        document["offline_prior"],
    )
    assert list((tmp_path / "cache").glob("minilm_*.npz"))
    alone = _run_json(
        [
            *("bench", "accuracy", "--data", str(MT_BENCH), "--judge", "offline", "--json"),
            *("--users", "3", "--cache-dir", str(tmp_path / "cache"), "--no-shared-tastes"),
        ]
    )
    assert alone["offline_prior"].endswith("the prior's own taste masses")
    assert alone["judges"]["offline"]["n_users"] == 3


async def test_random_sets_add_candidates_within_the_planned_calls() -> None:
    pairs = synthetic_pairs(15, seed=5)
    plain_model = ScriptedPreferenceModel(p_correct=0.6, seed=2).known_pairs(pairs)
    plain = await SynthesizeMe(plain_model, max_calls=1000, seed=2).fit(pairs[:10], pairs[10:])
    model = ScriptedPreferenceModel(p_correct=0.6, seed=2).known_pairs(pairs)
    searcher = SynthesizeMe(model, max_calls=1000, max_demos=4, random_sets=6, seed=2)
    result = await searcher.fit(pairs[:10], pairs[10:])
    assert len(result.candidates) > len(plain.candidates)
    assert any(c.name.startswith("random") for c in result.candidates)
    assert all(len(c.demo_pair_ids) <= 4 for c in result.candidates)
    assert len({frozenset(c.demo_pair_ids) for c in result.candidates}) == len(result.candidates)
    assert result.usage.total.calls <= searcher.plan_calls(10, 5)
    assert result.usage.total.calls > plain.usage.total.calls
    best = max(c.val_accuracy or 0.0 for c in result.candidates)
    assert result.persona.val_accuracy == best


@pytest.mark.slow
async def test_bench_latency_times_every_node_of_a_persona_turn(tmp_path: Path) -> None:
    from persona_agent.benchmarks.latency import run_latency_async

    document = await run_latency_async(data=None, turns=4, stored_pairs=12, users=2, workdir=tmp_path)
    assert document["judges"] == ["persona"]
    assert set(document["nodes"]) == {
        "record_feedback",
        "load_persona",
        "draft_replies",
        "retrieve_demos",
        "judge_replies",
    }
    assert document["turn"]["count"] == 4
    node_p50 = sum(node["p50_ms"] for node in document["nodes"].values())
    assert document["turn"]["p50_ms"] > 0 and node_p50 > 0


@pytest.mark.slow
def test_bench_latency_cli_runs_with_the_chosen_checkpointer(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.jsonl")
    args = ["bench", "latency", "--json", "--data", absent, "--turns", "2", "--pairs", "6"]
    document = _run_json([*args, "--checkpointer", "sqlite-full", "--durability", "async"])
    assert (document["checkpointer"], document["durability"]) == ("sqlite-full", "async")
    assert document["turn"]["count"] == 2
    refused = CliRunner().invoke(app, [*args, "--checkpointer", "postgres"])
    assert refused.exit_code != 0
    assert "sqlite, sqlite-full or memory" in refused.output
    refused = CliRunner().invoke(app, [*args, "--durability", "never"])
    assert refused.exit_code != 0
    assert "exit, async or sync" in refused.output


@pytest.mark.slow
@pytest.mark.skipif(not PRISM.is_file(), reason="PRISM examples not present")
def test_bench_accuracy_pipeline_check_on_the_embedded_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline check with the embedded 135M model, not a measure of the method: every judge runs
    end to end on a PRISM user (its fit included) and reports both accuracies and its position
    consistency. One user, since each call of the model takes seconds here; the comparison across
    several users is `test_bench_accuracy_longer_and_offline_on_mt_bench`'s."""
    pytest.importorskip("llama_cpp")
    from persona_agent.benchmarks.accuracy import JUDGES

    monkeypatch.chdir(tmp_path)  # no .env from the working directory
    document = _run_json(
        [
            *("bench", "accuracy", "--data", str(PRISM), "--users", "1", "--json", "--no-cache"),
            *("--compare", "synthesizeme,default"),
        ]
    )
    assert "pipeline check" in document["model_note"]
    assert set(document["judges"]) == set(JUDGES)
    assert len(document["users"]) == 1 and document["excluded_users"] == []
    evaluated = {row["user_id"] for row in document["users"]}
    for name, row in document["judges"].items():
        assert row["n_users"] == 1, name
        assert {user["user_id"] for user in row["users"]} == evaluated
        for key in ("macro_accuracy", "macro_accuracy_per_order", "position_consistency"):
            assert 0.0 <= row[key] <= 1.0, (name, key)
    # the fit and every judge that asks the model on each pair called it
    calls = document["llm"]
    assert calls["fit_calls"] > 0
    assert all(
        calls["test_calls"][name] > 0 for name in ("default", "synthesizeme", "retrieved", "persona", "demos")
    )
    comparison = document["comparison"]
    assert (comparison["a"], comparison["b"], comparison["n_users"]) == ("synthesizeme", "default", 1)
    low, high = comparison["accuracy"]["ci95"]
    assert low <= comparison["accuracy"]["difference"] <= high
