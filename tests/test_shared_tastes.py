"""The taste prior learnt from a deployment's users: its masses, its record in the store, its command.

Whether it helps is measured on the planted users (`tests/test_taste_planted.py`, BENCHMARKS.md).
"""

# ruff: noqa: F811 - the fixtures imported from tests.fakes are redefined as test parameters

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ConfigurationError
from agent.features import N_INTERPRETABLE
from agent.reward_model import RewardModel
from agent.shared_tastes import PSEUDO_USERS, PSEUDO_USERS_RANGE, SharedTastes, estimate_pseudo_users
from agent.taste import N_KINDS, candidate_masses, kind_label
from memory.store import PreferenceStore
from tests.fakes import (  # noqa: F401 - fixtures are found by name
    StoreFactory,
    chroma_server,
    client_kind,
    make_pair,
    make_store,
    store,
)

# the first strong taste (on length) and the first rule for less of a feature (length)
STRONG_LENGTH, LESS_LENGTH = 1, 1 + 4 * N_INTERPRETABLE


@pytest.fixture(scope="module")
def prior() -> RewardModel:
    return RewardModel.load()


def posterior(**mass: float) -> np.ndarray:
    """A posterior over the kinds of departure: the given kinds' mass, the rest broad."""
    values = np.zeros(N_KINDS)
    for index, value in mass.items():
        values[int(index.removeprefix("k"))] = value
    values[0] = 1 - values.sum()
    return values


def test_a_users_prior_is_learnt_from_the_others_and_never_from_their_own_pairs(prior: RewardModel) -> None:
    default = candidate_masses(prior.taste_prior)
    holds_it = posterior(**{f"k{LESS_LENGTH}": 0.9})
    tastes = SharedTastes({"ann": holds_it, "bo": holds_it, "cy": posterior()}, pseudo_users=2)
    newcomer = tastes.masses_for("dee", prior)
    assert newcomer == pytest.approx((2 * holds_it + posterior() + 2 * default) / 5)
    assert newcomer[LESS_LENGTH] > 10 * default[LESS_LENGTH]  # two of three users hold it
    # ann's own posterior is left out: what she gets does not depend on it
    alone = SharedTastes({"ann": posterior(), "bo": holds_it, "cy": posterior()}, pseudo_users=2)
    assert tastes.masses_for("ann", prior) == pytest.approx(alone.masses_for("ann", prior))
    assert tastes.masses_for("ann", prior) == pytest.approx((holds_it + posterior() + 2 * default) / 4)
    # with no other user, the prior's own masses
    assert SharedTastes({"ann": holds_it}).masses_for("ann", prior) == pytest.approx(default)


def posterior_of(default: np.ndarray, kind: int, evidence: float = 200.0) -> np.ndarray:
    """The posterior, under `default`, of a user whose pairs make `kind` `evidence` times likelier
    than any other kind of departure."""
    likelihood = np.ones(N_KINDS)
    likelihood[kind] = evidence
    return default * likelihood / (default @ likelihood)


def test_how_much_the_default_masses_count_is_learnt_from_whether_users_share_tastes(
    prior: RewardModel,
) -> None:
    default = candidate_masses(prior.taste_prior)
    users = [f"user{i}" for i in range(6)]
    defaults = dict.fromkeys(users, default)
    # two tastes, three users each: every user's taste is held by two others
    shared = {
        user: posterior_of(default, (LESS_LENGTH, STRONG_LENGTH)[i % 2]) for i, user in enumerate(users)
    }
    assert estimate_pseudo_users(shared, defaults) == PSEUDO_USERS_RANGE[0]
    # six tastes nobody shares: the others' tastes only draw mass from a user's own
    alone = {user: posterior_of(default, LESS_LENGTH + 2 * i) for i, user in enumerate(users)}
    assert estimate_pseudo_users(alone, defaults) == PSEUDO_USERS_RANGE[1]
    assert SharedTastes(shared, 1.0).masses_for("user0", prior)[LESS_LENGTH] > 20 * default[LESS_LENGTH]
    # one user cannot be left out of the others: the default stays
    assert estimate_pseudo_users({"ann": shared["user0"]}, {"ann": default}) == PSEUDO_USERS


def test_a_taste_the_users_prior_rules_out_keeps_no_mass(prior: RewardModel) -> None:
    from agent.archetypes import with_pinned

    pinned = with_pinned(prior, [("length", "less")])
    tastes = SharedTastes({"ann": posterior(**{f"k{LESS_LENGTH}": 0.9, f"k{STRONG_LENGTH}": 0.05})})
    assert tastes.masses_for("bo", prior)[LESS_LENGTH] > 0
    masses = tastes.masses_for("bo", pinned)
    ruled_out = candidate_masses(pinned.taste_prior) == 0
    assert ruled_out[LESS_LENGTH] and (masses[ruled_out] == 0).all()


def test_shared_tastes_round_trip_and_bad_records_say_what_is_wrong() -> None:
    tastes = SharedTastes(
        {"ann": posterior(k3=0.5), "bo": posterior()}, pseudo_users=3, learnt_at="2026-12-08T03:50:00+00:00"
    )
    again = SharedTastes.from_json(json.loads(json.dumps(tastes.to_json())))
    assert again.n_users == 2 and again.pseudo_users == 3 and again.current
    assert again.learnt_at == tastes.without("ann").learnt_at == "2026-12-08T03:50:00+00:00"
    assert again.total == pytest.approx(tastes.total)
    with pytest.raises(ConfigurationError, match="not a persona-agent-shared-tastes/1 record"):
        SharedTastes.from_json({"format": "something else"})
    with pytest.raises(ConfigurationError, match=r"record \(format 'list'\)"):
        SharedTastes.from_json([1, 2])  # type: ignore[arg-type]
    short = {**tastes.to_json(), "posteriors": {"ann": [0.5, 0.5]}}
    with pytest.raises(ConfigurationError, match="the posterior of 'ann' is not 163"):
        SharedTastes.from_json(short)
    with pytest.raises(ValueError, match="pseudo_users must be a positive number"):
        SharedTastes({}, pseudo_users=0)


def test_the_shared_tastes_are_named_largest_first() -> None:
    tastes = SharedTastes({"ann": posterior(**{f"k{LESS_LENGTH}": 0.8}), "bo": posterior(k2=0.4)})
    assert tastes.shared() == [
        (kind_label(LESS_LENGTH), pytest.approx(0.4)),
        (kind_label(2), pytest.approx(0.2)),
    ]
    assert kind_label(LESS_LENGTH) == "a rule for less length"
    assert kind_label(1 + N_INTERPRETABLE).endswith(", flipping with the kind of question")
    with pytest.raises(IndexError):
        kind_label(N_KINDS)


# --- the store's record ------------------------------------------------------------------------
def test_the_store_keeps_one_record_every_store_reads(make_store: StoreFactory, prior: RewardModel) -> None:
    writer, reader = make_store(), make_store(fresh_client=True)
    assert reader.shared_tastes() is None and reader.taste_masses("ann", prior) is None
    for user in ("ann", "bo"):
        writer.add_pairs(user, [make_pair(user, f"{user} question")])
    writer.save_shared_tastes(SharedTastes({"ann": posterior(k2=0.5), "bo": posterior()}))
    assert reader.user_ids() == ["ann", "bo"]  # the shared record is no user's
    assert reader.shared_tastes() is not None and reader.shared_tastes().n_users == 2  # type: ignore[union-attr]
    writer.save_shared_tastes(SharedTastes({"bo": posterior()}))
    assert reader.shared_tastes().n_users == 1  # type: ignore[union-attr]
    masses = reader.taste_masses("ann", prior)
    assert masses is not None and masses == pytest.approx(
        SharedTastes({"bo": posterior()}).masses_for("ann", prior)
    )


def test_deleting_a_user_takes_their_taste_out(store: PreferenceStore) -> None:
    for user in ("ann", "bo"):
        store.add_pairs(user, [make_pair(user, f"{user} question")])
    store.save_shared_tastes(SharedTastes({"ann": posterior(k2=0.5), "bo": posterior()}))
    store.delete_user("ann")
    kept = store.shared_tastes()
    assert kept is not None and list(kept.posteriors) == ["bo"]
    documents = store.collections["users"].get(include=["documents"])["documents"]
    assert not any('"ann"' in (document or "") for document in documents)


def test_an_export_holds_the_users_share_and_an_import_leaves_it_to_be_learnt(store: PreferenceStore) -> None:
    store.add_pairs("ann", [make_pair("ann", "ann question")])
    store.save_shared_tastes(SharedTastes({"ann": posterior(**{f"k{LESS_LENGTH}": 0.9}), "bo": posterior()}))
    exported = store.export_user("ann")
    shared = [json.loads(line) for line in exported.splitlines() if '"shared_taste"' in line]
    assert len(shared) == 1 and shared[0]["posterior"][LESS_LENGTH] == pytest.approx(0.9)
    assert {"taste": "a rule for less length", "probability": 0.9} in shared[0]["tastes"]
    assert store.import_user(exported, user_id="cy") == {"pairs": 1, "personas": 0}
    assert "cy" not in store.shared_tastes().posteriors  # type: ignore[union-attr]
    assert '"shared_taste"' not in store.export_user("cy")


def test_tastes_learnt_with_other_features_are_ignored_with_a_warning(
    store: PreferenceStore, prior: RewardModel, caplog: pytest.LogCaptureFixture
) -> None:
    store.save_shared_tastes(SharedTastes({"ann": posterior(k2=0.5)}, features_version="old"))
    with caplog.at_level(logging.WARNING, logger="memory.shared_tastes"):
        assert store.taste_masses("bo", prior) is None
    assert "learnt with features version old" in caplog.text


def test_an_unreadable_record_is_refused_naming_it_but_never_fails_a_judgement(
    store: PreferenceStore, prior: RewardModel, caplog: pytest.LogCaptureFixture
) -> None:
    store.add_pairs("ann", [make_pair("ann", "ann question")])
    store.collections["users"].upsert(
        ids=["~shared/tastes"], embeddings=[[1.0]], documents=['{"ann": 1'], metadatas=[{"revision": "x"}]
    )
    with pytest.raises(ConfigurationError, match="the stored shared tastes are not JSON"):
        store.shared_tastes()
    with caplog.at_level(logging.WARNING, logger="memory.shared_tastes"):
        assert store.taste_masses("bo", prior) is None
        assert store.taste_masses("bo", prior) is None
    assert caplog.text.count("the shared tastes are ignored") == 1
    # deleting a user it may name deletes it: it could not be used, and learning writes a new one
    store.delete_user("ann")
    assert store.shared_tastes() is None
    assert store.collections["users"].get(ids=["~shared/tastes"])["ids"] == []


def test_users_deleted_while_tastes_were_learnt_are_left_out(store: PreferenceStore) -> None:
    store.add_pairs("bo", [make_pair("bo", "bo question")])
    learnt = SharedTastes({"ann": posterior(k2=0.5), "bo": posterior()})
    assert list(store.keep_shared_tastes_of(learnt).posteriors) == ["bo"]


# --- the judge and the command -----------------------------------------------------------------
PLANTED = Path(__file__).resolve().parents[2] / "shared" / "data" / "planted"


@pytest.mark.slow
@pytest.mark.skipif(not PLANTED.is_dir(), reason="needs ../shared/data/planted")
@pytest.mark.parametrize("client_kind", ["persistent"])
async def test_the_offline_judge_fits_each_user_with_what_the_others_share(
    make_store: StoreFactory, prior: RewardModel
) -> None:
    from agent.embedding import CachedEmbedder
    from agent.features import FeatureExtractor
    from agent.formats import read_pairs, split_of
    from agent.taste import fit_user
    from graphs.judges import OfflineJudges
    from memory.embeddings import MiniLMEmbeddings

    store = make_store()
    train = [pair for pair in read_pairs(PLANTED / "visible_n5.jsonl") if split_of(pair) == "train"]
    short = sorted({pair.user_id for pair in train if pair.user_id.startswith("planted_short_")})
    for user in short:
        store.add_pairs(user, [pair for pair in train if pair.user_id == user])
    extractor = FeatureExtractor(CachedEmbedder(MiniLMEmbeddings()))
    judges = OfflineJudges(store, prior, extractor)
    newcomer = short[0]
    plain, _ = await judges(newcomer, None, [])

    store.add_pairs("newest", [pair.model_copy(update={"user_id": "newest"}) for pair in train[:3]])
    tastes = judges.learn_shared_tastes()
    assert sorted(tastes.posteriors) == short  # three pairs are too few to count (`rule_min_pairs`)
    store.save_shared_tastes(tastes)
    shared, _ = await judges(newcomer, None, [])
    pairs = store.newest_pairs(newcomer, 40)
    expected = fit_user(prior, extractor, pairs, masses=tastes.masses_for(newcomer, prior))
    assert shared.model.taste is not None and expected.taste is not None  # type: ignore[attr-defined]
    assert shared.model.taste.candidates == pytest.approx(expected.taste.candidates)  # type: ignore[attr-defined]
    # the two other users who like short replies make that taste likelier for the newcomer
    assert plain.model.taste is not None  # type: ignore[attr-defined]
    length = [STRONG_LENGTH, LESS_LENGTH]
    assert shared.model.taste.candidates[length].sum() > plain.model.taste.candidates[length].sum()  # type: ignore[attr-defined]
