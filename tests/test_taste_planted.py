"""The offline model on planted tastes: simulated users picking between real answers by one taste.

Reads ../shared/data/planted (see its README), and users with other tastes that
`scripts/plant_tastes.py` plants over ../shared/data/mt_bench_human the same way. The full tables
are `scripts/eval_offline.py`'s.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from agent.embedding import CachedEmbedder
from agent.evaluation import evaluate
from agent.features import FeatureExtractor, repetition
from agent.formats import read_pairs, split_of
from agent.offline_judge import OfflineJudge
from agent.records import PreferencePair, Turn
from agent.reward_model import RewardModel, pair_rows
from agent.statements import describe_preferences
from agent.taste import fit_user, rule_on

PLANTED = Path(__file__).resolve().parents[2] / "shared" / "data" / "planted"
# the feature and direction each visible taste is about
TASTES = {
    "short": ("length", "less", None),
    "lists": ("lists", "more", None),
    "no_hedging": ("hedging", "less", None),
    "direct_start": ("first_sentence", "less", None),
    "short_on_stem_long_on_writing": ("length", "less", "technical"),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLANTED.is_dir(), reason="needs ../shared/data/planted"),
]


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    from memory.embeddings import MiniLMEmbeddings

    return FeatureExtractor(CachedEmbedder(MiniLMEmbeddings()))


@pytest.fixture(scope="module")
def prior() -> RewardModel:
    return RewardModel.load()


def users(size: int, folder: Path = PLANTED) -> dict[str, dict[str, list[PreferencePair]]]:
    grouped: dict[str, dict[str, list[PreferencePair]]] = defaultdict(lambda: defaultdict(list))
    for pair in read_pairs(folder / f"visible_n{size}.jsonl"):
        grouped[pair.user_id][str(split_of(pair))].append(pair)
    return grouped


def taste_of(user_id: str) -> str:
    return user_id.removeprefix("planted_").rsplit("_", 1)[0]


def accuracy(judge: OfflineJudge, pairs: list[PreferencePair]) -> float:
    return asyncio.run(evaluate(judge, pairs)).macro_accuracy


def test_ten_pairs_teach_a_taste_the_population_does_not_have(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    by_taste: dict[str, list[float]] = defaultdict(list)
    population: list[float] = []
    for user, splits in users(10).items():
        by_taste[taste_of(user)].append(
            accuracy(OfflineJudge.for_user(prior, extractor, splits["train"]), splits["test"])
        )
        population.append(accuracy(OfflineJudge(prior, extractor), splits["test"]))
    mean = {name: sum(values) / len(values) for name, values in by_taste.items()}
    overall = sum(sum(v) for v in by_taste.values()) / sum(len(v) for v in by_taste.values())
    assert sum(population) / len(population) < 0.55  # the planted tastes are not the population's
    assert overall >= 0.85
    assert mean["lists"] >= 0.9
    assert mean["short"] >= 0.8 and mean["no_hedging"] >= 0.8 and mean["direct_start"] >= 0.8
    assert min(mean.values()) >= 0.7


def test_ten_pairs_that_show_a_taste_teach_it_as_well_as_knowing_it(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    from agent.shared_tastes import SharedTastes

    # each user's first 10 training pairs whose pick their planted taste, as these features read
    # it, calls right: the taste without its flipped picks (the first 10 pairs of the n10 file
    # hold 4 picks against it for one `short` user and one `short_on_stem_long_on_writing` user)
    everyone = users(20)
    rules, following = {}, {}
    for user, splits in everyone.items():
        feature, direction, condition = TASTES[taste_of(user)]
        rules[user] = rule_on(
            prior, feature, 1 if direction == "more" else -1, conditional=condition is not None
        )
        calls = rules[user].prob_first(pair_rows(prior, extractor, splits["train"]))
        kept = [pair for pair, chance in zip(splits["train"], calls, strict=True) if chance > 0.5]
        following[user] = kept[:10]
        assert len(following[user]) == 10
    tastes = SharedTastes.learn(lambda _: prior, extractor, following)
    alone: list[float] = []
    learnt: dict[str, list[float]] = defaultdict(list)
    known: dict[str, list[float]] = defaultdict(list)
    for user, splits in everyone.items():
        alone.append(accuracy(OfflineJudge.for_user(prior, extractor, following[user]), splits["test"]))
        masses = tastes.masses_for(user, prior)
        judge = OfflineJudge.for_user(prior, extractor, following[user], masses=masses)
        learnt[taste_of(user)].append(accuracy(judge, splits["test"]))
        # the same model judging by the planted rule alone: what knowing the taste in advance gives
        assert judge.model.taste is not None
        told = replace(judge.model, taste=replace(judge.model.taste, components=((1.0, rules[user]),)))
        known[taste_of(user)].append(accuracy(OfflineJudge(told, extractor), splits["test"]))
    assert sum(alone) / len(alone) >= 0.9
    assert sum(map(sum, learnt.values())) / len(everyone) >= 0.9
    for taste, values in learnt.items():
        # a mean of three users' accuracies on 20 test pairs each moves in steps of 1/60
        assert sum(values) / 3 >= sum(known[taste]) / 3 - 0.02, (taste, values, known[taste])


def test_statements_name_the_planted_taste(extractor: FeatureExtractor, prior: RewardModel) -> None:
    named = 0
    for user, splits in users(20).items():
        feature, direction, condition = TASTES[taste_of(user)]
        statements = describe_preferences(fit_user(prior, extractor, splits["train"]), prior)
        if any((s.feature, s.direction, s.condition) == (feature, direction, condition) for s in statements):
            named += 1
    assert named >= 10  # of 15 users


def test_a_conditional_taste_reads_as_one(extractor: FeatureExtractor, prior: RewardModel) -> None:
    conditional = [
        statement
        for user, splits in users(20).items()
        if taste_of(user) == "short_on_stem_long_on_writing"
        for statement in describe_preferences(fit_user(prior, extractor, splits["train"]), prior)
        if statement.condition == "technical"
    ]
    assert conditional
    assert conditional[0].text.startswith("on technical questions, ")
    assert "on open-ended requests" in conditional[0].text


async def test_a_looping_reply_loses_for_every_planted_user(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    everyone = users(10)
    sane = [
        p for p in next(iter(everyone.values()))["test"] if max(map(repetition, (p.chosen, p.rejected))) < 20
    ]
    sample = sane[:3]
    for splits in everyone.values():
        judge = OfflineJudge.for_user(prior, extractor, splits["train"])
        for pair in sample:
            words = pair.rejected.split()
            loop = " ".join(words[: max(6, len(words) // 3)]) + "\n".join([" something that is"] * 20)
            context: tuple[Turn, ...] = pair.context
            for reply in (pair.chosen, pair.rejected):
                assert (await judge.compare(context, loop, reply)).preferred == "second"


def test_tastes_beyond_the_visible_ones_are_learnt(
    extractor: FeatureExtractor, prior: RewardModel, tmp_path: Path
) -> None:
    mt_bench = PLANTED.parent / "mt_bench_human" / "pairs.jsonl"
    script = Path(__file__).resolve().parents[1] / "scripts" / "plant_tastes.py"
    subprocess.run(
        [sys.executable, str(script), "--data", str(mt_bench), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    by_taste: dict[str, list[float]] = defaultdict(list)
    for user, splits in users(20, tmp_path).items():
        assert not {taste_of(user)} & set(TASTES)
        judge = OfflineJudge.for_user(prior, extractor, splits["train"])
        by_taste[taste_of(user)].append(accuracy(judge, splits["test"]))
    # each user's accuracy is a number of their 20 test pairs: a mean of three is k / 60
    mean = {name: round(sum(values) / len(values), 4) for name, values in by_taste.items()}
    assert len(mean) >= 24
    assert sum(mean.values()) / len(mean) >= 0.85
    # `hedged` counts hedges by a word list of its own: `hedging` says which reply hedges more
    # alike on 86% of its users' pairs, where every other taste's feature agrees on 94% or more.
    # The second-person tastes find 15 train picks a user, and 3 of one `speaks_to_reader`
    # user's are flipped ones, as are 2 of one `first_person` user's 11. `colons` has no feature of
    # its own (one was measured and not kept, BENCHMARKS.md): it is read through the lists and
    # paragraphs that go with colons.
    lower = {"hedged": 0.7, "speaks_to_reader": 0.75, "first_person": 0.75, "colons": 0.75}
    assert all(value >= lower.get(name, 0.8) for name, value in mean.items()), mean


def reply(record: dict[str, object], side: str) -> str:
    turn = record[side]
    assert isinstance(turn, dict)
    return str(turn["content"])


def test_picks_among_drafts_are_stored_as_the_chat_stores_a_choice() -> None:
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "plant_tastes.py"
    spec = importlib.util.spec_from_file_location("plant_tastes", script)
    assert spec and spec.loader
    planter = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = planter  # its dataclasses look their module up
    spec.loader.exec_module(planter)
    questions = planter.answers_by_question(PLANTED.parent / "mt_bench_human" / "pairs.jsonl")
    taste = planter.TASTES["long"]
    plain = planter.plant(questions, "long", taste, 0)
    among = planter.plant(questions, "long", taste, 0, drafts=3)
    held_out = [record for record in plain if record["split"] != "train"]
    assert [record for record in among if record["split"] != "train"] == held_out
    picks: dict[object, list[dict[str, object]]] = defaultdict(list)
    for record in among:
        if record["split"] == "train":
            picks[record["question_id"]].append(record)
    assert len(picks) == 20
    assert {record["question_id"] for record in plain if record["split"] == "train"} == set(picks)
    # most picks are among three drafts: one chosen answer against each of the two others
    among_three = [records for records in picks.values() if len(records) == 2]
    assert len(among_three) >= 15
    chosen_longest = 0
    for first, second in among_three:
        assert first["chosen"] == second["chosen"] and first["rejected"] != second["rejected"]
        texts = [reply(first, "chosen"), reply(first, "rejected"), reply(second, "rejected")]
        chosen_longest += planter.words(texts[0]) == max(map(planter.words, texts))
    # the taste picks the longest draft; 5% of picks are flipped
    assert chosen_longest >= len(among_three) - 3


async def test_an_answer_to_another_question_loses_for_every_planted_user(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    elsewhere = (
        "To make a sourdough starter, mix equal weights of flour and water in a jar, cover it loosely "
        "and keep it warm. Feed it every day, discarding half, until it doubles within a few hours "
        "of a feeding; that takes about a week."
    )
    everyone = users(10)
    # sane answers: a terse one ("[5, 1, 3]") says too little to an embedding to tell it from a
    # stray one, and a looping one loses as a loop first
    answers = [
        p
        for p in next(iter(everyone.values()))["test"]
        if min(len(p.chosen.split()), len(p.rejected.split())) >= 20
        and max(map(repetition, (p.chosen, p.rejected))) < 20
    ]
    sample = answers[:3]
    for splits in everyone.values():
        judge = OfflineJudge.for_user(prior, extractor, splits["train"])
        for pair in sample:
            for reply in (pair.chosen, pair.rejected):
                verdict = await judge.compare(pair.context, elsewhere, reply)
                assert verdict.preferred == "second" and "does not answer" in verdict.reasoning
            ranking = await judge.rank(pair.context, [elsewhere, pair.chosen, pair.rejected])
            assert ranking.candidates[-1].index == 0


def test_a_taste_other_users_share_is_read_from_fewer_pairs(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    from agent.shared_tastes import SharedTastes

    everyone = users(5)
    tastes = SharedTastes.learn(lambda _: prior, extractor, {u: s["train"] for u, s in everyone.items()})
    alone, shared = [], []
    for user, splits in everyone.items():
        masses = tastes.masses_for(user, prior)
        alone.append(accuracy(OfflineJudge.for_user(prior, extractor, splits["train"]), splits["test"]))
        shared.append(
            accuracy(OfflineJudge.for_user(prior, extractor, splits["train"], masses=masses), splits["test"])
        )
    # each visible taste has three users: the other two make it likelier for the third
    assert sum(shared) / len(shared) >= sum(alone) / len(alone) + 0.02
