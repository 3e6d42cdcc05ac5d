"""The offline reward model: population prior, per-user adaptation, persona, artifact, judges."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigurationError
from agent.evaluation import evaluate
from agent.features import INTERPRETABLE, FeatureExtractor
from agent.hybrid import FIXED_WEIGHTS, HybridJudge, fit_stack
from agent.records import PreferencePair, RankedCandidate, Ranking, Turn, Verdict
from agent.reward_model import (
    OfflineJudge,
    PreferLongerJudge,
    Regularization,
    RewardModel,
    describe_preferences,
    fit_population,
    fit_user,
    render_persona,
)
from tests.test_features import HashEmbedder

WORDS = (
    "bread", "flour", "water", "salt", "yeast", "oven", "knead", "rise",
    "crust", "dough", "bake", "proof", "shape", "score", "cool", "slice",
)  # fmt: skip


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize() + "."


def reply(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def synthetic_pairs(user_id: str, n: int, *, prefer: str, seed: int) -> list[PreferencePair]:
    """Pairs of a short (1 sentence) and a long (8-12 sentence) reply; the user picks `prefer`."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        context = (Turn(role="user", content=f"Question {seed}-{i}: how do I bake {rng.choice(WORDS)}?"),)
        short, long = reply(rng, 1), reply(rng, rng.randint(8, 12))
        chosen, rejected = (short, long) if prefer == "shorter" else (long, short)
        pairs.append(PreferencePair(user_id=user_id, context=context, chosen=chosen, rejected=rejected))
    return pairs


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(HashEmbedder(dimensions=8))


def with_noise(pairs: list[PreferencePair], *, flip: float, seed: int) -> list[PreferencePair]:
    """Swap chosen and rejected in a `flip` share of the pairs: real populations are not unanimous."""
    rng = random.Random(seed)
    return [
        pair.model_copy(update={"chosen": pair.rejected, "rejected": pair.chosen, "id": ""})
        if rng.random() < flip
        else pair
        for pair in pairs
    ]


@pytest.fixture(scope="module")
def prior(extractor: FeatureExtractor) -> RewardModel:
    """A population of 20 users who pick the longer reply 90% of the time."""
    pairs = [p for u in range(20) for p in synthetic_pairs(f"pop{u}", 10, prefer="longer", seed=u)]
    return fit_population(extractor, with_noise(pairs, flip=0.1, seed=7), description="synthetic population")


def length_weight(model: RewardModel) -> float:
    return float(model.weights[0])


async def agreement(judge: OfflineJudge, pairs: Sequence[PreferencePair]) -> float:
    report = await evaluate(judge, pairs)
    return report.macro_accuracy


async def test_prior_learns_the_population_preference(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    held_out = synthetic_pairs("someone", 20, prefer="longer", seed=500)
    assert length_weight(prior) > 0
    assert await agreement(OfflineJudge(prior, extractor), held_out) == 1.0


async def test_user_model_recovers_a_planted_preference_from_ten_pairs(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    train = synthetic_pairs("alice", 10, prefer="shorter", seed=100)
    held_out = synthetic_pairs("alice", 20, prefer="shorter", seed=101)
    model = fit_user(prior, extractor, train)  # the shipped strengths
    assert model.user_id == "alice" and model.n_pairs == 10
    assert model.user_strength is not None and model.user_strength < Regularization().user_interpretable
    assert length_weight(model) < 0 < length_weight(prior)
    assert await agreement(OfflineJudge(prior, extractor), held_out) <= 0.1
    assert await agreement(OfflineJudge(model, extractor), held_out) >= 0.9


async def test_without_the_leave_one_out_choice_ten_pairs_do_not_reverse_the_prior(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    """The shipped starting pull alone is deliberately strong: the choice is what lets 10 pairs count."""
    fixed = replace(Regularization(), user_interpretable_weaker=())
    model = fit_user(
        prior, extractor, synthetic_pairs("alice", 10, prefer="shorter", seed=100), regularization=fixed
    )
    assert model.user_strength == fixed.user_interpretable
    assert length_weight(model) > 0


def test_a_user_like_the_population_keeps_the_strong_pull(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    pairs = with_noise(synthetic_pairs("paul", 12, prefer="longer", seed=250), flip=0.1, seed=251)
    model = fit_user(prior, extractor, pairs)
    assert model.user_strength == Regularization().user_interpretable


def test_the_embedding_stays_the_populations_unless_asked(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    pairs = synthetic_pairs("quinn", 10, prefer="shorter", seed=260)
    interpretable = len(INTERPRETABLE)
    shipped = fit_user(prior, extractor, pairs)
    assert np.array_equal(shipped.weights[interpretable:], prior.weights[interpretable:])
    free = fit_user(prior, extractor, pairs, regularization=replace(Regularization(), user_embedding=10.0))
    assert not np.allclose(free.weights[interpretable:], prior.weights[interpretable:])


async def test_two_pairs_leave_the_user_close_to_the_prior(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    model = fit_user(prior, extractor, synthetic_pairs("bob", 2, prefer="shorter", seed=200))
    held_out = synthetic_pairs("bob", 20, prefer="longer", seed=201)
    differences = extractor.pair_differences(held_out)
    prior_probabilities, user_probabilities = prior.prob_first(differences), model.prob_first(differences)
    assert model.user_strength == Regularization().user_interpretable
    assert np.array_equal(prior_probabilities > 0.5, user_probabilities > 0.5)
    assert float(np.abs(prior_probabilities - user_probabilities).mean()) < 0.05
    assert length_weight(model) > 0.5 * length_weight(prior)


async def test_more_pairs_move_the_user_further(extractor: FeatureExtractor, prior: RewardModel) -> None:
    pairs = synthetic_pairs("carol", 20, prefer="shorter", seed=300)
    weights = [length_weight(fit_user(prior, extractor, pairs[:n])) for n in (2, 5, 20)]
    assert weights[0] > weights[1] > weights[2]


def test_persona_names_the_planted_preference(extractor: FeatureExtractor, prior: RewardModel) -> None:
    model = fit_user(prior, extractor, synthetic_pairs("alice", 10, prefer="shorter", seed=100))
    statements = describe_preferences(model, prior)
    assert statements[0].feature == "length" and statements[0].direction == "less"
    assert statements[0].n_pairs == 10
    assert statements[0].weight == pytest.approx(length_weight(model))
    assert statements[0].population_weight == pytest.approx(length_weight(prior))
    text = render_persona(statements)
    assert "shorter replies" in text and "10 pairs" in text
    assert "as long as" in statements[0].text


def test_fitting_a_user_on_25_pairs_takes_under_200_ms(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    pairs = with_noise(synthetic_pairs("tess", 25, prefer="shorter", seed=270), flip=0.2, seed=271)
    extractor.pair_differences(pairs)  # features are cached per pair in the product too
    times = []
    for _ in range(5):
        started = time.perf_counter()
        fit_user(prior, extractor, pairs)
        times.append(time.perf_counter() - started)
    assert statistics.median(times) < 0.2


def test_persona_of_a_user_like_everyone_says_so(extractor: FeatureExtractor, prior: RewardModel) -> None:
    model = fit_user(prior, extractor, synthetic_pairs("dan", 2, prefer="longer", seed=400))
    statements = describe_preferences(model, prior)
    assert all(item.feature != "length" or item.direction == "more" for item in statements)
    assert render_persona([]).startswith("No clear departure")


def test_artifact_round_trip(tmp_path: Path, extractor: FeatureExtractor, prior: RewardModel) -> None:
    path = tmp_path / "prior.json"
    prior.save(path)
    loaded = RewardModel.load(path)
    differences = extractor.pair_differences(synthetic_pairs("erin", 5, prefer="longer", seed=600))
    assert np.allclose(loaded.prob_first(differences), prior.prob_first(differences), atol=1e-5)
    assert loaded.features_version == prior.features_version
    assert loaded.n_pairs == prior.n_pairs == 200 and loaded.n_users == 20
    assert loaded.regularization == prior.regularization


def test_artifact_of_another_feature_version_is_refused(tmp_path: Path, prior: RewardModel) -> None:
    data = prior.to_json()
    data["features_version"] = "0"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="features version '0'"):
        RewardModel.load(path)
    with pytest.raises(ConfigurationError, match="no reward-model artifact"):
        RewardModel.load(tmp_path / "missing.json")


def test_shipped_prior_loads_with_the_current_feature_version() -> None:
    model = RewardModel.load()
    assert model.n_users > 50 and model.n_pairs > 500
    assert model.dimensions == len(model.mean) == len(model.scale)
    # the product adapts users with the prior's strengths: they must be the ones these tests use
    assert model.regularization == Regularization()


async def test_offline_judge_compares_both_orders_consistently(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    judge = OfflineJudge(prior, extractor)
    pair = synthetic_pairs("frank", 1, prefer="longer", seed=700)[0]
    forward = await judge.compare(pair.context, pair.chosen, pair.rejected)
    backward = await judge.compare(pair.context, pair.rejected, pair.chosen)
    assert forward.preferred == "first" and backward.preferred == "second"
    assert forward.prob_first == pytest.approx(1 - backward.prob_first)
    assert forward.source == "structured"
    assert "length favours First" in forward.reasoning


async def test_offline_judge_ranks_by_utility_without_judge_calls(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    rng = random.Random(800)
    candidates = [reply(rng, 1), reply(rng, 9), reply(rng, 4)]
    context = (Turn(role="user", content="How do I bake bread?"),)
    population_ranking = await OfflineJudge(prior, extractor).rank(context, candidates)
    assert [item.index for item in population_ranking.candidates] == [1, 2, 0]
    assert population_ranking.judge_calls == 0
    assert population_ranking.best.wins == 2
    assert 0.5 < population_ranking.best.score <= 1.0

    short_lover = fit_user(prior, extractor, synthetic_pairs("gina", 10, prefer="shorter", seed=801))
    personal = await OfflineJudge(short_lover, extractor).rank(context, candidates)
    assert personal.best.index == 0


async def test_prefer_longer_judge() -> None:
    context = (Turn(role="user", content="Hi"),)
    assert (await PreferLongerJudge().compare(context, "long reply", "short")).preferred == "first"
    assert (await PreferLongerJudge().compare(context, "same", "also")).preferred == "tie"


class FixedJudge:
    """A judge that always gives the same probability for the first reply and a fixed ranking."""

    def __init__(self, prob_first: float, scores: Sequence[float] = ()) -> None:
        self.prob_first = prob_first
        self.scores = scores
        self.calls = 0

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        self.calls += 1
        preferred = "first" if self.prob_first > 0.5 else "second"
        return Verdict(preferred=preferred, prob_first=self.prob_first, reasoning="fixed")

    async def rank(self, context: Sequence[Turn], candidates: Sequence[str]) -> Ranking:
        ranked = [
            RankedCandidate(index=i, content=text, score=self.scores[i]) for i, text in enumerate(candidates)
        ]
        return Ranking(candidates=tuple(sorted(ranked, key=lambda c: -c.score)), judge_calls=len(candidates))


async def test_hybrid_uses_fixed_weights_with_few_validation_pairs(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    offline = OfflineJudge(prior, extractor)
    hybrid = await HybridJudge.fit(
        FixedJudge(0.6), offline, synthetic_pairs("hal", 3, prefer="longer", seed=900)
    )
    assert hybrid.weights == FIXED_WEIGHTS
    pair = synthetic_pairs("hal", 1, prefer="longer", seed=901)[0]
    verdict = await hybrid.compare(pair.context, pair.chosen, pair.rejected)
    assert verdict.source == "combined" and verdict.preferred == "first"
    assert verdict.prob_first == pytest.approx(
        hybrid.combine(0.6, (await offline.compare(pair.context, pair.chosen, pair.rejected)).prob_first)
    )


async def test_hybrid_stack_learns_to_ignore_an_uninformative_llm(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    biased = FixedJudge(0.9)  # always says First, whatever the replies
    validation = synthetic_pairs("ivy", 12, prefer="longer", seed=1000)
    hybrid = await HybridJudge.fit(biased, OfflineJudge(prior, extractor), validation)
    assert hybrid.weights.n_pairs == 12
    assert abs(hybrid.weights.llm) < FIXED_WEIGHTS.llm
    held_out = synthetic_pairs("ivy", 10, prefer="longer", seed=1001)
    assert (await evaluate(hybrid, held_out)).macro_accuracy == 1.0


def test_fit_stack_weights_the_informative_judge() -> None:
    rng = np.random.default_rng(0)
    first_chosen = rng.random(200) < 0.5
    signs = np.where(first_chosen, 1.0, -1.0)
    informative = signs * 2.0 + rng.normal(0, 0.5, 200)
    noise = rng.normal(0, 2.0, 200)
    weights = fit_stack(noise, informative, first_chosen, strength=0.1)
    assert weights.offline > 1.0 > abs(weights.llm) * 5


async def test_hybrid_rank_pools_scores(extractor: FeatureExtractor, prior: RewardModel) -> None:
    rng = random.Random(1100)
    candidates = [reply(rng, 1), reply(rng, 9)]
    context = (Turn(role="user", content="How do I bake bread?"),)
    llm = FixedJudge(0.5, scores=[0.6, 0.4])
    ranking = await HybridJudge(llm, OfflineJudge(prior, extractor)).rank(context, candidates)
    assert (
        ranking.best.index == 1
    )  # the offline model's strong length preference outweighs the LLM's mild one
    assert ranking.judge_calls == 2
