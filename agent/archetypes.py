"""Where a user's model starts before their pairs move it: archetypes and pinned statements.

Until a user has given a few pairs, the offline judge is the population's. An archetype is a
cluster of real users' tastes: k-means over each user's departure from the population on the
interpretable features it weighs (`agent.taste.infer_taste` on their pairs), fitted by
`scripts/fit_prior.py` next to the prior it departs from. A new user may pick the archetype that
sounds like them; their model then starts from it instead of from the population, and their own
pairs move it from there as usual.

A statement the user pinned ("prefers shorter replies") that maps to a feature holds the model to
that direction (`with_pinned`): the feature's weight is set that way and kept out of the user's
fit, as the quality measurements are, so it survives every refit until the user unpins it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.cluster.vq import kmeans2

from agent.errors import ConfigurationError
from agent.features import FEATURES_VERSION, INTERPRETABLE, INTERPRETABLE_NAMES, N_INTERPRETABLE
from agent.reward_model import RewardModel, check_artifact, read_artifact
from agent.taste import infer_taste

ARTIFACT_FORMAT = "persona-agent/archetypes"
DEFAULT_ARCHETYPES_PATH = Path(__file__).parent / "data" / "archetypes.json"
# a departure named in an archetype's description, in standardised weight units
MIN_NAMED = 0.25
# the most departures an archetype's description names
MAX_NAMED = 3
# a cluster of fewer users is a few people's quirk, not an archetype
MIN_USERS = 5
# the least weight a pinned statement's feature gets in its direction, in standardised units:
# above the population's largest interpretable weight, so the pinned direction decides a pair
# that differs on the feature by a typical spread and on little else
PIN_STRENGTH = 3.0
# features that count what the key counts another way (a reply's sentences grow with its
# words): a pin on the key holds them at the population's weight too, since a taste read on them
# would undo the pinned one
ALSO_COUNTS = {"length": ("sentences",)}
# a word for an archetype led by one of these departures (feature, direction); others get one
# made from the feature's name
KEY_WORDS = {
    ("length", "less"): "concise",
    ("length", "more"): "thorough",
    ("lists", "more"): "structured",
    ("lists", "less"): "prose",
    ("examples", "more"): "example-led",
    ("informality", "more"): "casual",
    ("hedging", "less"): "direct",
}


@dataclass(frozen=True)
class Archetype:
    """One cluster of the population's tastes, as a starting point for a new user."""

    key: str
    title: str
    statements: tuple[str, ...]
    # per interpretable feature: the cluster's mean departure from the population's weight
    departure: tuple[float, ...]
    users: int

    def apply(self, prior: RewardModel) -> RewardModel:
        """Return `prior` moved to this archetype: the start of a new user who picked it."""
        personal = prior.taste_prior.personal()
        weights = prior.weights.copy()
        weights[:N_INTERPRETABLE] += np.where(personal, np.asarray(self.departure), 0.0)
        return replace(prior, weights=weights, description=f"{prior.description}; archetype {self.key!r}")

    def to_json(self) -> dict[str, Any]:
        """Return the archetype as plain JSON types."""
        return {**self.__dict__, "statements": list(self.statements), "departure": list(self.departure)}


def fit_archetypes(
    prior: RewardModel, users_rows: Sequence[np.ndarray], *, k: int = 3, seed: int = 0
) -> tuple[Archetype, ...]:
    """Cluster the users' departures from `prior` into at most `k` archetypes, the most common first.

    `users_rows` holds each user's pairs as `RewardModel.design` rows. Clusters of fewer than
    `MIN_USERS` users are left out. The departures are of the users' weights: a rule
    (`agent.taste`) has no measured size, only the stand-in weight it counts as, so the clusters
    are of the weights alone. They are on the features the population weighs: a feature only a
    taste weighs (`TastePrior.taste_only_features`) has no population weight to depart from, and
    a few real people's chance fits on it would split a cluster of a shared taste (a taste for
    fewer sentences takes a share of one for shorter replies).
    """
    if len(users_rows) < k:
        raise ValueError(f"{k} archetypes need at least {k} users, got {len(users_rows)}")
    settings = prior.taste_prior
    weighted = replace(
        prior, taste_prior=replace(settings.holding(settings.taste_only_features), rule_share=0.0)
    )
    departures = np.array([infer_taste(weighted, rows)[0][:N_INTERPRETABLE] for rows in users_rows])
    departures -= prior.weights[:N_INTERPRETABLE]
    centroids, labels = kmeans2(departures, k, seed=seed, minit="++")
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    found: list[Archetype] = []
    for cluster in order:
        if (labels == cluster).sum() < MIN_USERS:
            continue
        centroid = centroids[cluster]
        named = [i for i in np.argsort(-np.abs(centroid)) if abs(centroid[i]) >= MIN_NAMED][:MAX_NAMED]
        statements = tuple(INTERPRETABLE[i].more if centroid[i] > 0 else INTERPRETABLE[i].less for i in named)
        if named:
            direction = "more" if centroid[named[0]] > 0 else "less"
            name = INTERPRETABLE[named[0]].name
            key = KEY_WORDS.get((name, direction), f"{direction}-{name.replace('_', '-')}")
            title = "; ".join(statements)
        else:
            key, title = "typical", "much like most people"
        if any(archetype.key == key for archetype in found):
            key = f"{key}-{len(found) + 1}"
        found.append(
            Archetype(
                key=key,
                title=title,
                statements=statements,
                departure=tuple(round(float(value), 4) for value in centroid),
                users=int((labels == cluster).sum()),
            )
        )
    return tuple(found)


def save_archetypes(archetypes: Sequence[Archetype], path: str | Path = DEFAULT_ARCHETYPES_PATH) -> None:
    """Write the archetypes as a JSON artifact tied to the current feature version."""
    document = {
        "format": ARTIFACT_FORMAT,
        "features_version": FEATURES_VERSION,
        "archetypes": [archetype.to_json() for archetype in archetypes],
    }
    Path(path).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def load_archetypes(path: str | Path = DEFAULT_ARCHETYPES_PATH) -> tuple[Archetype, ...]:
    """Read the archetypes artifact (default: the shipped one), refusing another feature version."""
    target = Path(path)
    document = read_artifact(target, "archetypes")
    check_artifact(document, ARTIFACT_FORMAT, source=str(target))
    archetypes = []
    for item in document.get("archetypes", []):
        departure = tuple(float(value) for value in item["departure"])
        if len(departure) != N_INTERPRETABLE:
            raise ConfigurationError(f"{target}: archetype {item.get('key')!r} has {len(departure)} weights")
        archetypes.append(
            Archetype(
                key=str(item["key"]),
                title=str(item["title"]),
                statements=tuple(str(s) for s in item["statements"]),
                departure=departure,
                users=int(item["users"]),
            )
        )
    return tuple(archetypes)


def archetype_named(key: str, archetypes: Sequence[Archetype] | None = None) -> Archetype:
    """Return the archetype with this key, or raise a `ValueError` naming the known ones."""
    known = load_archetypes() if archetypes is None else archetypes
    for archetype in known:
        if archetype.key == key:
            return archetype
    raise ValueError(f"no archetype {key!r}; known: {', '.join(a.key for a in known)}")


def with_pinned(prior: RewardModel, pins: Sequence[tuple[str, Literal["more", "less"]]]) -> RewardModel:
    """Return `prior` held to each pinned (feature, direction): at least `PIN_STRENGTH` that way.

    A pinned feature joins `TastePrior.fixed_features`: `agent.taste.fit_user` neither moves it
    nor scales it with the user's trust in the population. So do the features it holds
    (`ALSO_COUNTS`), at the population's weight.

    Raises `ValueError` for a feature that is unknown or not a matter of taste (the quality
    measurements stay the population's).
    """
    personal = dict(zip(INTERPRETABLE_NAMES, prior.taste_prior.personal(), strict=True))
    weights = prior.weights.copy()
    for feature, direction in pins:
        if not personal.get(feature, False):
            raise ValueError(f"cannot pin {feature!r}: not a feature a user's taste may move")
        index = INTERPRETABLE_NAMES.index(feature)
        sign = 1.0 if direction == "more" else -1.0
        weights[index] = sign * max(sign * weights[index], PIN_STRENGTH)
    if not pins:
        return prior
    named = ", ".join(f"{direction} {feature}" for feature, direction in pins)
    held = [feature for pinned, _ in pins for feature in (pinned, *ALSO_COUNTS.get(pinned, ()))]
    return replace(
        prior,
        weights=weights,
        taste_prior=prior.taste_prior.holding(held),
        description=f"{prior.description}; pinned {named}",
    )
