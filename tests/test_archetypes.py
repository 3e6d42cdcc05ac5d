"""Archetypes: starting tastes learnt from the population's users, for a user with no pairs yet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.archetypes import (
    MIN_USERS,
    Archetype,
    archetype_named,
    fit_archetypes,
    load_archetypes,
    save_archetypes,
    with_pinned,
)
from agent.errors import ConfigurationError
from agent.features import INTERPRETABLE_NAMES, N_INTERPRETABLE, FeatureExtractor
from agent.reward_model import RewardModel, RuleComponent, fit_population, pair_rows
from agent.taste import fit_user
from tests.fakes import HashEmbedder, synthetic_pairs, with_variances

LENGTH = INTERPRETABLE_NAMES.index("length")
SENTENCES = INTERPRETABLE_NAMES.index("sentences")


def test_the_shipped_archetypes_are_clusters_of_real_users() -> None:
    archetypes = load_archetypes()
    assert len(archetypes) >= 2
    assert len({a.key for a in archetypes}) == len(archetypes)
    assert all(a.users >= MIN_USERS and len(a.departure) == N_INTERPRETABLE for a in archetypes)
    # the most common first, and every departure but the typical one is described
    assert [a.users for a in archetypes] == sorted((a.users for a in archetypes), reverse=True)
    assert all(a.statements for a in archetypes if a.key != "typical")


def test_a_concise_archetype_starts_a_user_toward_shorter_replies() -> None:
    prior = RewardModel.load()
    concise = next(a for a in load_archetypes() if a.departure[LENGTH] < 0 and a.statements)
    started = concise.apply(prior)
    assert started.weights[LENGTH] < prior.weights[LENGTH]
    assert "shorter" in concise.title
    # only the interpretable weights move; the embedding part (answer quality) stays the population's
    np.testing.assert_array_equal(started.weights[N_INTERPRETABLE:], prior.weights[N_INTERPRETABLE:])


def test_archetypes_are_found_in_a_population_of_two_tastes() -> None:
    extractor = FeatureExtractor(HashEmbedder(dimensions=8))
    users = [synthetic_pairs(f"long{u}", 8, prefer="longer", seed=u) for u in range(8)]
    users += [synthetic_pairs(f"short{u}", 8, prefer="shorter", seed=100 + u) for u in range(6)]
    prior = fit_population(extractor, [p for own in users for p in own], description="two tastes")
    prior = with_variances(prior, extractor, users)
    archetypes = fit_archetypes(prior, [pair_rows(prior, extractor, own) for own in users], k=2)
    assert len(archetypes) == 2
    by_direction = sorted(archetypes, key=lambda a: a.departure[LENGTH])
    assert by_direction[0].departure[LENGTH] < 0 < by_direction[1].departure[LENGTH]
    assert by_direction[0].users == 6 and by_direction[1].users == 8
    assert by_direction[0].key == "concise" and "shorter" in by_direction[0].title


def test_an_unknown_archetype_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: typical"):
        archetype_named("grumpy")


def test_archetypes_of_another_feature_version_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "archetypes.json"
    save_archetypes([Archetype("typical", "much like most people", (), (0.0,) * N_INTERPRETABLE, 9)], path)
    assert [a.key for a in load_archetypes(path)] == ["typical"]
    document = json.loads(path.read_text())
    document["features_version"] = "0"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigurationError, match=r"refit it with scripts/fit_prior\.py"):
        load_archetypes(path)


def test_a_pinned_statement_holds_its_direction_through_a_refit() -> None:
    extractor = FeatureExtractor(HashEmbedder(dimensions=8))
    users = [synthetic_pairs(f"pop{u}", 8, prefer="longer", seed=u) for u in range(6)]
    prior = with_variances(
        fit_population(extractor, [p for own in users for p in own], description="likes long"),
        extractor,
        users,
    )
    pinned = with_pinned(prior, [("length", "less")])
    assert prior.weights[LENGTH] > 0 > pinned.weights[LENGTH]
    # picks of the longer reply do not move the pinned weight: it stays until the user unpins it
    refit = fit_user(pinned, extractor, synthetic_pairs("ann", 2, prefer="longer", seed=90))
    assert refit.taste is not None
    for _, component in refit.taste.components:
        if isinstance(component, RuleComponent):
            assert (
                component.column != LENGTH
                and component.otherwise.coefficients[LENGTH] == pinned.weights[LENGTH]
            )
        else:
            assert component.coefficients[LENGTH] == pinned.weights[LENGTH]
            # nor does a taste for more sentences, length counted another way, undo the pin
            assert component.coefficients[SENTENCES] == pinned.weights[SENTENCES] == 0
    held_out = synthetic_pairs("ann", 10, prefer="shorter", seed=91)
    chosen, rejected = extractor.pair_features(held_out)
    terms = prior.question_terms(extractor.query_vectors(held_out))
    unpinned = fit_user(prior, extractor, synthetic_pairs("ann", 2, prefer="longer", seed=90))
    assert float(np.mean(refit.prob_first(chosen - rejected, terms) > 0.5)) >= 0.7
    assert float(np.mean(unpinned.prob_first(chosen - rejected, terms) > 0.5)) <= 0.2


def test_only_features_of_taste_can_be_pinned() -> None:
    with pytest.raises(ValueError, match="cannot pin 'repetition'"):
        with_pinned(RewardModel.load(), [("repetition", "more")])
    with pytest.raises(ValueError, match="cannot pin 'sparkle'"):
        with_pinned(RewardModel.load(), [("sparkle", "more")])
