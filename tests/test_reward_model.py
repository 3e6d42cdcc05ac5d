"""The offline reward model on synthetic users: population prior, learning a taste, statements, judges.

Planted tastes over real answers are in tests/test_taste_planted.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigurationError
from agent.evaluation import evaluate
from agent.features import INTERPRETABLE_NAMES, N_INTERPRETABLE, FeatureExtractor
from agent.offline_judge import FIXED_WEIGHTS, HybridJudge, OfflineJudge, PreferLongerJudge, fit_stack
from agent.records import PreferencePair, RankedCandidate, Ranking, Turn, Verdict
from agent.reward_model import RewardModel, RuleComponent, fit_logistic, fit_population, rule_decisions
from agent.statements import describe_preferences, render_persona
from agent.taste import candidate_masses, fit_user, infer_taste, rule_on
from tests.fakes import HashEmbedder, flipped, reply, synthetic_pairs, with_noise, with_variances


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(HashEmbedder(dimensions=8))


@pytest.fixture(scope="module")
def prior(extractor: FeatureExtractor) -> RewardModel:
    """A population of 20 users who pick the longer reply 90% of the time, with measured spreads."""
    users = [
        with_noise(synthetic_pairs(f"pop{u}", 10, prefer="longer", seed=u), flip=0.1, seed=7 + u)
        for u in range(20)
    ]
    model = fit_population(extractor, [p for own in users for p in own], description="synthetic population")
    return with_variances(model, extractor, users)


def length_weight(model: RewardModel) -> float:
    return float(model.weights[0])


async def agreement(judge: OfflineJudge, pairs: Sequence[PreferencePair]) -> float:
    report = await evaluate(judge, pairs)
    return report.macro_accuracy


def probabilities(
    model: RewardModel, extractor: FeatureExtractor, pairs: Sequence[PreferencePair]
) -> np.ndarray:
    chosen, rejected = extractor.pair_features(pairs)
    return model.prob_first(chosen - rejected, model.question_terms(extractor.query_vectors(pairs)))


async def test_prior_learns_the_population_preference(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    held_out = synthetic_pairs("someone", 20, prefer="longer", seed=500)
    assert length_weight(prior) > 0
    assert await agreement(OfflineJudge(prior, extractor), held_out) == 1.0


def test_between_user_variances_are_estimated_for_every_personal_feature(prior: RewardModel) -> None:
    settings = prior.taste_prior
    variances = np.array(settings.user_variance)
    personal, weighted = settings.personal(), settings.population_weighted()
    assert variances.shape == (N_INTERPRETABLE,)
    assert (variances[personal & weighted] > 0).all()
    # looping and relevance to the question are quality, not taste: no user moves them
    fixed = {name for name, free in zip(INTERPRETABLE_NAMES, personal, strict=True) if not free}
    assert fixed == {"repetition", "query_overlap", "query_similarity"}
    assert (variances[~personal] == 0).all()
    # a feature the population does not weigh has no broad spread around that missing weight
    assert set(settings.taste_only_features) == {"addressing", "sentences", "parentheses"}
    assert (variances[~weighted] == 0).all()
    assert (np.array(settings.interaction_variance)[~weighted] == 0).all()


def test_the_population_gives_a_taste_only_feature_no_weight(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    column = INTERPRETABLE_NAMES.index("addressing")
    spoken = [
        PreferencePair(
            user_id=f"pop{u}",
            context=(Turn(role="user", content=f"How do I bake bread {u}?"),),
            chosen=f"You knead your dough {u} and you bake it for an hour.",
            rejected=f"Knead the dough {u} and bake it.",
        )
        for u in range(12)
    ]
    # everyone picks the reply that speaks to them: fitted freely, the feature takes a weight
    free = replace(prior.taste_prior, taste_only_features=())
    fitted = fit_population(extractor, spoken, taste_prior=free)
    assert fitted.weights[column] > 0.1
    pinned = fit_population(extractor, spoken, taste_prior=prior.taste_prior)
    assert pinned.weights[column] == 0 and pinned.interaction[column] == 0
    assert pinned.weights[INTERPRETABLE_NAMES.index("length")] != 0
    # a user's taste for it is still read, as a one-feature taste: replies of the same length,
    # one speaking to the reader
    dishes = ("bread", "soup", "rice", "pasta", "cake", "stew")
    own = [
        PreferencePair(
            user_id="yuri",
            context=(Turn(role="user", content=f"How do I make {dish}?"),),
            chosen=f"You make your {dish} slowly and you taste it.",
            rejected=f"One makes the {dish} slowly and one tastes it.",
        )
        for dish in dishes
    ]
    model = fit_user(prior, extractor, own)
    assert model.taste is not None and model.taste.strong[0].feature == "addressing"
    assert model.weights[column] > 0
    with pytest.raises(ConfigurationError, match="taste_only_features names unknown features"):
        replace(prior.taste_prior, taste_only_features=("tone",)).population_weighted()


def test_users_who_differ_on_length_get_a_spread_on_length_and_unanimous_users_none(
    extractor: FeatureExtractor,
) -> None:
    def length_variance(preferences: Sequence[str]) -> tuple[float, np.ndarray]:
        users = [
            synthetic_pairs(f"u{u}", 8, prefer=prefer, seed=100 + u) for u, prefer in enumerate(preferences)
        ]
        model = with_variances(fit_population(extractor, [p for own in users for p in own]), extractor, users)
        variances = np.array(model.taste_prior.user_variance)
        return float(variances[INTERPRETABLE_NAMES.index("length")]), variances

    split, split_all = length_variance(["longer", "shorter"] * 6)
    unanimous, _ = length_variance(["longer"] * 12)
    # half the users pick the longer reply, half the shorter: a large spread, on length above all
    assert split > 1.0
    assert split == split_all.max()
    # everyone agrees with the population: nothing to spread
    assert unanimous < 0.01 * split


async def test_user_model_learns_a_taste_against_the_population_from_five_pairs(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    held_out = synthetic_pairs("alice", 20, prefer="shorter", seed=101)
    model = fit_user(prior, extractor, synthetic_pairs("alice", 5, prefer="shorter", seed=100))
    assert model.user_id == "alice" and model.n_pairs == 5
    assert length_weight(model) < 0 < length_weight(prior)
    assert await agreement(OfflineJudge(prior, extractor), held_out) <= 0.1
    assert await agreement(OfflineJudge(model, extractor), held_out) >= 0.9


async def test_one_odd_pick_does_not_undo_a_taste(extractor: FeatureExtractor, prior: RewardModel) -> None:
    pairs = synthetic_pairs("olga", 10, prefer="shorter", seed=150)
    odd = flipped(pairs[3])
    model = fit_user(prior, extractor, [*pairs[:3], odd, *pairs[4:]])
    held_out = synthetic_pairs("olga", 20, prefer="shorter", seed=151)
    assert await agreement(OfflineJudge(model, extractor), held_out) >= 0.9


def test_no_taste_is_read_on_a_feature_the_pairs_never_differ_on(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    pairs = synthetic_pairs("uma", 5, prefer="shorter", seed=160)
    chosen, rejected = extractor.pair_features(pairs)
    unshown = {
        name for k, name in enumerate(INTERPRETABLE_NAMES) if np.array_equal(chosen[:, k], rejected[:, k])
    }
    assert {"emoji", "refusal"} <= unshown
    model = fit_user(prior, extractor, pairs)
    assert model.taste is not None
    assert not {taste.feature for taste in model.taste.strong} & unshown
    # a rule's column is a feature's, or its interaction's (past the model's dimensions)
    ruled = {
        INTERPRETABLE_NAMES[component.column % prior.dimensions]
        for _, component in model.taste.components
        if isinstance(component, RuleComponent)
    }
    assert ruled and not ruled & unshown
    # the taste the pairs do show is found: the shorter replies here are also the ones of fewer
    # sentences, and either feature reads it
    assert model.taste.strong[0].feature in {"length", "sentences"} and model.taste.strong[0].mean < 0


def test_a_taste_that_flips_with_the_question_is_read_only_from_pairs_of_both_kinds(
    prior: RewardModel,
) -> None:
    length = INTERPRETABLE_NAMES.index("length")

    def rows(kinds: Sequence[float], shorter_on_technical: bool) -> np.ndarray:
        """Design rows that differ on length alone: the shorter reply chosen on technical questions."""
        found = np.zeros((len(kinds), prior.coefficients.shape[0]))
        for i, kind in enumerate(kinds):
            found[i, length] = -1.0 if kind > 0 or not shorter_on_technical else 1.0
            found[i, prior.dimensions + length] = found[i, length] * kind
        return found

    def conditional(taste_rows: np.ndarray) -> list[str]:
        _, taste = infer_taste(prior, taste_rows)
        weights = [t.feature for t in taste.strong if t.conditional]
        rules = [
            INTERPRETABLE_NAMES[c.column - prior.dimensions]
            for _, c in taste.components
            if isinstance(c, RuleComponent) and c.column >= prior.dimensions
        ]
        return weights + rules

    # six technical questions, the shorter reply each time: "shorter on technical questions" fits
    # them exactly as "shorter" does, and says nothing learnt about open-ended ones
    assert conditional(rows([1.0] * 6, shorter_on_technical=True)) == []
    # the same picks on technical questions, the longer reply on three open-ended ones
    both = rows([1.0] * 6 + [-1.0] * 3, shorter_on_technical=True)
    _, taste = infer_taste(prior, both)
    assert "length" in conditional(both)
    assert taste.strong[0].feature == "length" and taste.strong[0].conditional


def test_a_rule_is_read_only_from_enough_pairs(prior: RewardModel) -> None:
    lists = INTERPRETABLE_NAMES.index("lists")
    minimum = prior.taste_prior.rule_min_pairs
    assert minimum >= 3

    def rules(count: int, settings: RewardModel = prior) -> list[str]:
        """The rules in the posterior after `count` picks of the reply with more list lines."""
        found = np.zeros((count, prior.coefficients.shape[0]))
        found[:, lists] = 1.0
        _, taste = infer_taste(settings, found)
        return [t.feature for t in taste.strong if t.rule]

    # on a few pairs some rule fits every pick by chance: none is looked for
    assert rules(minimum - 1) == []
    assert rules(minimum) == ["lists"]
    # the same few pairs do give a rule once the minimum is lifted
    anywhere = replace(prior, taste_prior=replace(prior.taste_prior, rule_min_pairs=0))
    assert rules(minimum - 1, anywhere) == ["lists"]


def test_a_taste_is_read_only_from_clear_differences(prior: RewardModel) -> None:
    lists = INTERPRETABLE_NAMES.index("lists")
    clear = prior.taste_prior.shown_clear
    assert clear / 2 >= prior.taste_prior.rule_clear

    def tastes(difference: float, settings: RewardModel = prior) -> set[str]:
        """The one-feature tastes read from six picks of the reply with more list lines by `difference`."""
        found = np.zeros((6, prior.coefficients.shape[0]))
        found[:, lists] = difference
        _, taste = infer_taste(settings, found)
        return {t.feature for t in taste.strong}

    assert tastes(2 * clear) == {"lists"}
    # replies that barely differ tell no taste: six such picks leave the user with none
    assert tastes(clear / 2) == set()
    anywhere = replace(
        prior, taste_prior=replace(prior.taste_prior, shown_clear=prior.taste_prior.rule_clear)
    )
    assert tastes(clear / 2, anywhere) == {"lists"}


def test_the_priors_own_masses_are_the_default(prior: RewardModel) -> None:
    lists = INTERPRETABLE_NAMES.index("lists")
    found = np.zeros((6, prior.coefficients.shape[0]))
    found[:, lists] = 1.0
    masses = candidate_masses(prior.taste_prior)
    assert masses.sum() == pytest.approx(1.0)
    coefficients, taste = infer_taste(prior, found)
    same, explicit = infer_taste(prior, found, masses=masses)
    np.testing.assert_allclose(same, coefficients)
    np.testing.assert_allclose(explicit.candidates, taste.candidates)
    assert taste.candidates.sum() == pytest.approx(1.0)
    assert taste.candidates[0] == pytest.approx(taste.broad_probability)


def test_prior_mass_decides_between_tastes_the_pairs_cannot_tell_apart(prior: RewardModel) -> None:
    lists, headings = INTERPRETABLE_NAMES.index("lists"), INTERPRETABLE_NAMES.index("headings")
    width = 2 * N_INTERPRETABLE
    # six picks of the reply with more list lines and more headings: either taste explains them
    found = np.zeros((6, prior.coefficients.shape[0]))
    found[:, lists] = found[:, headings] = 1.0

    def on(feature: int, taste_masses: np.ndarray | None = None) -> float:
        """The posterior of a strong taste or a rule for more of `feature`."""
        _, taste = infer_taste(prior, found, masses=taste_masses)
        return float(taste.candidates[1 + feature] + taste.candidates[1 + width + feature])

    assert on(lists) == pytest.approx(on(headings))
    # more prior mass on tastes for list lines, as when many other users have one
    masses = candidate_masses(prior.taste_prior)
    masses[[1 + lists, 1 + width + lists]] *= 4
    assert on(lists, masses) > 3 * on(headings, masses)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m[:-1], "one value per kind of departure"),
        (lambda m: np.where(np.arange(m.size) == 3, -1.0, m), "not negative"),
        (lambda m: np.where(np.arange(m.size) == 0, 0.0, m), "broad departure"),
    ],
)
def test_masses_that_cannot_be_a_prior_are_refused(
    prior: RewardModel, change: Callable[[np.ndarray], np.ndarray], message: str
) -> None:
    found = np.zeros((6, prior.coefficients.shape[0]))
    with pytest.raises(ValueError, match=message):
        infer_taste(prior, found, masses=change(candidate_masses(prior.taste_prior)))


def test_two_contradictory_pairs_leave_predictions_at_the_priors(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    pair = synthetic_pairs("bob", 1, prefer="shorter", seed=200)[0]
    model = fit_user(prior, extractor, [pair, flipped(pair)])
    held_out = synthetic_pairs("bob", 20, prefer="longer", seed=201)
    before, after = probabilities(prior, extractor, held_out), probabilities(model, extractor, held_out)
    # less sure than the population once contradicted, but on its side, and no taste is claimed
    assert float(np.mean((before > 0.5) == (after > 0.5))) >= 0.85
    assert float(np.mean(after)) > 0.55
    assert describe_preferences(model, prior) == []


def test_row_weights_count_like_repeated_rows() -> None:
    design = np.random.default_rng(0).normal(size=(6, 3))
    weighted = fit_logistic(design, np.ones(3), row_weights=np.array([2.0, 1, 1, 1, 1, 1]))
    repeated = fit_logistic(np.vstack([design[:1], design]), np.ones(3))
    np.testing.assert_allclose(weighted, repeated, atol=1e-6)


def test_inferred_pairs_move_a_user_less_than_stated_picks(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    pairs = synthetic_pairs("rita", 3, prefer="shorter", seed=270)
    held_out = synthetic_pairs("rita", 20, prefer="shorter", seed=271)
    agreement_by_source = {
        source: float(
            np.mean(
                probabilities(
                    fit_user(prior, extractor, [p.model_copy(update={"source": source}) for p in pairs]),
                    extractor,
                    held_out,
                )
            )
        )
        for source in ("explicit", "edit", "regenerate")
    }
    population = float(np.mean(probabilities(prior, extractor, held_out)))
    assert agreement_by_source["explicit"] > agreement_by_source["edit"] > agreement_by_source["regenerate"]
    assert agreement_by_source["regenerate"] > population


def test_a_user_like_the_population_stays_there(extractor: FeatureExtractor, prior: RewardModel) -> None:
    pairs = with_noise(synthetic_pairs("paul", 12, prefer="longer", seed=250), flip=0.1, seed=251)
    model = fit_user(prior, extractor, pairs)
    assert model.taste is not None and model.taste.trust > 0.5
    held_out = synthetic_pairs("paul", 20, prefer="longer", seed=252)
    before, after = probabilities(prior, extractor, held_out), probabilities(model, extractor, held_out)
    assert float(np.mean((before > 0.5) == (after > 0.5))) == 1.0 and float(np.mean(after)) > 0.8
    # the persona claims no taste the population does not share, and says so
    statements = describe_preferences(model, prior)
    assert statements == []
    assert render_persona(statements).startswith("No clear departure")


def test_the_embedding_weights_stay_the_populations(extractor: FeatureExtractor, prior: RewardModel) -> None:
    model = fit_user(prior, extractor, synthetic_pairs("quinn", 10, prefer="shorter", seed=260))
    assert model.taste is not None
    for _, component in model.taste.components:
        # a rule leaves the picks it does not decide to the population as it is
        linear = component.otherwise if isinstance(component, RuleComponent) else component
        embedding = linear.coefficients[N_INTERPRETABLE : prior.dimensions]
        population = prior.weights[N_INTERPRETABLE:]
        # a user may follow the population less (a scale on it), never in another direction
        scale = float(embedding @ population / (population @ population))
        assert np.allclose(embedding, scale * population) and 0 <= scale <= 1


def test_statements_name_the_taste_with_the_pairs_behind_it(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    model = fit_user(prior, extractor, synthetic_pairs("alice", 10, prefer="shorter", seed=100))
    statements = describe_preferences(model, prior)
    assert statements[0].feature == "length" and statements[0].direction == "less"
    assert statements[0].condition is None
    assert statements[0].n_pairs == statements[0].pairs_shown == 10
    assert statements[0].probability > 0.5
    assert statements[0].population_weight == pytest.approx(length_weight(prior))
    text = render_persona(statements)
    assert "shorter replies" in text and "10 of 10 pairs" in text
    assert render_persona([]).startswith("No clear departure")


async def test_a_looping_reply_loses_whatever_the_taste(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    short_lover = fit_user(prior, extractor, synthetic_pairs("gina", 10, prefer="shorter", seed=801))
    long_lover = fit_user(prior, extractor, synthetic_pairs("lena", 10, prefer="longer", seed=802))
    rng = random.Random(803)
    sane_long, sane_short = reply(rng, 10), reply(rng, 1)
    loop = sane_short + " " + "\n".join(["something that is"] * 15)
    context = (Turn(role="user", content="How do I bake bread?"),)
    for model in (prior, short_lover, long_lover):
        judge = OfflineJudge(model, extractor)
        for sane in (sane_long, sane_short):
            assert (await judge.compare(context, loop, sane)).preferred == "second"
            assert (await judge.compare(context, sane, loop)).preferred == "first"
        ranking = await judge.rank(context, [loop, sane_long, sane_short])
        assert ranking.candidates[-1].index == 0
        assert "repeats itself" in ranking.candidates[-1].reasons[0]


def test_artifact_round_trip(tmp_path: Path, extractor: FeatureExtractor, prior: RewardModel) -> None:
    path = tmp_path / "prior.json"
    prior.save(path)
    loaded = RewardModel.load(path)
    pairs = synthetic_pairs("erin", 5, prefer="longer", seed=600)
    assert np.allclose(
        probabilities(loaded, extractor, pairs), probabilities(prior, extractor, pairs), atol=1e-5
    )
    assert loaded.features_version == prior.features_version
    assert loaded.n_pairs == prior.n_pairs == 200 and loaded.n_users == 20
    assert np.allclose(loaded.taste_prior.user_variance, prior.taste_prior.user_variance, rtol=1e-6)
    assert loaded.trained_on == prior.trained_on
    gated = replace(prior, taste_prior=replace(prior.taste_prior, off_topic=(0.15, 0.3, 8.0)))
    gated.save(path)
    assert RewardModel.load(path).taste_prior.off_topic == (0.15, 0.3, 8.0)
    assert RewardModel.load(path).taste_prior.taste_only_features == (
        "addressing",
        "sentences",
        "parentheses",
    )
    data = gated.to_json()
    data["taste_prior"]["off_topic"] = [0.15]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="off_topic takes"):
        RewardModel.load(path)
    data["taste_prior"]["off_topic"] = []
    data["taste_prior"]["shown_clear"] = -0.1
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="shown_clear must be 0 or more"):
        RewardModel.load(path)


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
    assert len(model.taste_prior.user_variance) == N_INTERPRETABLE
    assert model.questions.shape[0] >= 60 and model.axis.size == model.dimensions - N_INTERPRETABLE + 1


def test_a_rule_decides_only_where_its_feature_clearly_differs() -> None:
    signed = np.array([0.5, -0.5, 0.01, 0.5])
    quality = np.array([0.0, 0.0, 0.0, -10.0])
    chances = rule_decisions(signed, quality, clear=0.05, lapse=0.05)
    assert chances[:2] == pytest.approx([0.95, 0.05])
    assert chances[2] == 0.5  # no clear difference: the rule does not decide
    assert chances[3] < 0.01  # a reply the quality measurements reject loses whatever the rule says


def test_a_taste_stated_outright_is_a_rule_on_its_column(prior: RewardModel) -> None:
    rows = np.zeros((2, prior.coefficients.shape[0]))
    length = INTERPRETABLE_NAMES.index("length")
    rows[:, length] = [-1.0, 1.0]  # the first reply shorter, then longer
    rows[:, prior.dimensions + length] = [-1.0, -1.0]  # times the kind: technical, then open-ended
    shorter = rule_on(prior, "length", -1)
    assert shorter.prob_first(rows) == pytest.approx([0.95, 0.05], abs=0.01)
    # short on technical questions, long on open-ended ones: both picks go to the first reply
    assert rule_on(prior, "length", -1, conditional=True).prob_first(rows) == pytest.approx(
        [0.95, 0.95], abs=0.01
    )
    with pytest.raises(ValueError, match="no interpretable feature 'loudness'"):
        rule_on(prior, "loudness", 1)
    with pytest.raises(ValueError, match="direction must be 1 or -1"):
        rule_on(prior, "length", 0)


def test_the_ranking_matrix_is_the_users_pairwise_chance(
    extractor: FeatureExtractor, prior: RewardModel
) -> None:
    model = fit_user(prior, extractor, synthetic_pairs("hana", 6, prefer="shorter", seed=820))
    assert model.taste is not None
    assert any(isinstance(component, RuleComponent) for _, component in model.taste.components)
    rng = random.Random(821)
    query = "How do I bake bread?"
    features = extractor.reply_features(query, [reply(rng, n) for n in (1, 4, 9)])
    terms = model.question_terms(extractor.query_vector(query)[None, :])
    matrix = model.win_matrix(features, terms[0])
    for i in range(3):
        for j in range(3):
            expected = model.prob_first((features[i] - features[j])[None, :], terms)[0]
            assert matrix[i, j] == pytest.approx(expected)
    assert np.allclose(matrix + matrix.T, 1.0)
    assert matrix[0, 2] > 0.5  # the short reply wins for a user who picks short ones


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


async def test_offline_judge_ranks_without_judge_calls(
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
    ranking = await PreferLongerJudge().rank(context, ["mid reply", "the longest reply", "tiny"])
    assert [item.index for item in ranking.candidates] == [1, 0, 2]
    assert [item.score for item in ranking.candidates] == [1.0, 0.5, 0.0]
    assert ranking.best.wins == 2 and ranking.judge_calls == 0


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
