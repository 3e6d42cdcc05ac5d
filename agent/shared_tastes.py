"""A taste prior learnt from a deployment's users: tastes that several users share gain prior mass.

A user's personal model (`agent.taste.fit_user`) weighs the kinds of departure from the
population against each other: a broad departure, a strong taste on one feature, a rule on one
feature (`agent.taste.candidate_masses` orders them). By default every feature gets the same
prior mass. `SharedTastes` learns the masses from the users themselves, one EM step from the
default: each user's posterior over the kinds of departure (under the default masses), averaged
over the *other* users, with the default masses counted as `pseudo_users` more users. A user's
own pairs never count towards their own prior, so no user's taste is confirmed by itself, and a
user counts only once they have as many pairs as a rule needs (`TastePrior.rule_min_pairs`).

How many users the default masses count as is learnt too (`estimate_pseudo_users`, empirical
Bayes): the number under which each user's pairs are likeliest given the other users' tastes.
Where users share tastes it falls to its floor of one user; where nobody shares anyone's taste it
rises, and the default masses come back.

Only the step from the default is taken: repeated to its fixed point, EM trusts the noisy
posteriors of users with five pairs and drowns the tastes nobody else shares (BENCHMARKS.md,
"A taste prior learnt from the other users"). One consequence is stated in README.md: a user's
judge depends on which tastes the other users of the deployment share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agent.errors import ConfigurationError
from agent.features import FEATURES_VERSION, FeatureExtractor
from agent.records import PreferencePair
from agent.reward_model import RewardModel
from agent.taste import N_KINDS, candidate_masses, fit_user, kind_label

ARTIFACT_FORMAT = "persona-agent-shared-tastes/1"
# the default masses count as this many users while too few users count to estimate it
PSEUDO_USERS = 5.0
# the estimate's range: the default masses count as one user at least, so a taste nobody else
# holds keeps some mass; at 100 they outweigh any deployment's first users
PSEUDO_USERS_RANGE = (1.0, 100.0)

# the taste-prior masses of one user fitted from a prior (None: the prior's own)
MassesOf = Callable[[str, RewardModel], "np.ndarray | None"]


@dataclass(frozen=True)
class SharedTastes:
    """Each user's posterior over the kinds of departure, under the default masses, and their sum.

    `posteriors` maps a user id to a vector ordered as `candidate_masses`; `total` is their sum;
    `learnt_at` when `learn` fitted the users (ISO 8601, UTC), None when not learnt from pairs.
    """

    posteriors: Mapping[str, np.ndarray]
    pseudo_users: float = PSEUDO_USERS
    features_version: str = FEATURES_VERSION
    learnt_at: str | None = None
    total: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not np.isfinite(self.pseudo_users) or self.pseudo_users <= 0:
            raise ValueError(f"pseudo_users must be a positive number, got {self.pseudo_users}")
        for user, posterior in self.posteriors.items():
            if np.shape(posterior) != (N_KINDS,) or not np.isfinite(posterior).all() or (posterior < 0).any():
                raise ValueError(f"the posterior of {user!r} is not {N_KINDS} finite, non-negative values")
        values = [np.asarray(p, dtype=np.float64) for p in self.posteriors.values()]
        object.__setattr__(self, "total", np.sum(values, axis=0) if values else np.zeros(N_KINDS))

    @classmethod
    def learn(
        cls,
        prior_of: Callable[[str], RewardModel],
        extractor: FeatureExtractor,
        pairs_by_user: Mapping[str, Sequence[PreferencePair]],
        *,
        pseudo_users: float | None = None,
    ) -> SharedTastes:
        """Fit every user on the default masses of their prior (`prior_of(user)`).

        A user counts from `TastePrior.rule_min_pairs` pairs on (and from one pair when that is
        0): on fewer, some one-feature taste explains every pick by chance, and those chance
        fits, shared, would steer everyone else.
        With `pseudo_users` None, how many users the default masses count as is estimated
        (`estimate_pseudo_users`).
        """
        posteriors, defaults = {}, {}
        for user, pairs in pairs_by_user.items():
            prior = prior_of(user)
            if len(pairs) >= max(1, prior.taste_prior.rule_min_pairs):
                taste = fit_user(prior, extractor, pairs).taste
                assert taste is not None, "a user fitted on their pairs has a taste posterior"
                posteriors[user] = taste.candidates
                defaults[user] = candidate_masses(prior.taste_prior)
        if pseudo_users is None:
            pseudo_users = estimate_pseudo_users(posteriors, defaults)
        learnt_at = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(posteriors, pseudo_users, learnt_at=learnt_at)

    @property
    def n_users(self) -> int:
        """How many users the masses were learnt from."""
        return len(self.posteriors)

    def masses_for(self, user_id: str, prior: RewardModel) -> np.ndarray:
        """Return the prior masses `user_id` is fitted with, learnt from every other user.

        A kind of departure the user's `prior` rules out (a feature they pinned, or one no taste
        may move) keeps no mass, whatever the other users show.
        """
        own = self.posteriors.get(user_id)
        others = self.total - own if own is not None else self.total
        count = self.n_users - (own is not None)
        return _blend(others, count, candidate_masses(prior.taste_prior), self.pseudo_users)

    def without(self, *user_ids: str) -> SharedTastes:
        """Return the shared tastes with these users' posteriors left out (deleted users)."""
        kept = {user: p for user, p in self.posteriors.items() if user not in user_ids}
        return SharedTastes(kept, self.pseudo_users, self.features_version, self.learnt_at)

    def shared(self, *, top: int = 5) -> list[tuple[str, float]]:
        """Return the one-feature tastes the users hold most, with their mean posterior (the share
        of users who hold them), largest first; the broad departure is left out."""
        if not self.n_users:
            return []
        mean = self.total / self.n_users
        order = np.argsort(-mean[1:], kind="stable")[:top] + 1
        return [(kind_label(int(kind)), float(mean[kind])) for kind in order if mean[kind] >= 0.005]

    def to_json(self) -> dict[str, Any]:
        """Return the shared tastes as plain JSON types."""
        return {
            "format": ARTIFACT_FORMAT,
            "features_version": self.features_version,
            "pseudo_users": self.pseudo_users,
            "learnt_at": self.learnt_at,
            "posteriors": {user: [round(float(v), 6) for v in p] for user, p in self.posteriors.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "shared tastes") -> SharedTastes:
        """Rebuild the shared tastes from `to_json` output, or raise `ConfigurationError` saying why not."""
        if not isinstance(data, Mapping) or data.get("format") != ARTIFACT_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ConfigurationError(f"{source}: not a {ARTIFACT_FORMAT} record (format {found!r})")
        try:
            posteriors = {
                str(user): np.asarray(values, dtype=np.float64) for user, values in data["posteriors"].items()
            }
            learnt_at = data.get("learnt_at")
            return cls(
                posteriors,
                float(data["pseudo_users"]),
                str(data["features_version"]),
                None if learnt_at is None else str(learnt_at),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ConfigurationError(f"{source}: unreadable shared tastes: {error}") from error

    @property
    def default_weight(self) -> str:
        """How many users the prior's own masses count as, in words ("1 user", "5 users")."""
        return f"{self.pseudo_users:.3g} user" + ("" if self.pseudo_users == 1 else "s")

    @property
    def current(self) -> bool:
        """True when the posteriors were read with the features this version computes."""
        return self.features_version == FEATURES_VERSION


def _blend(
    others: np.ndarray, count: int, default: np.ndarray, pseudo_users: float | np.ndarray
) -> np.ndarray:
    """Return the masses of `count` users' summed posteriors `others` with `default` counted as
    `pseudo_users` users; a kind `default` rules out keeps no mass. A column of `pseudo_users`
    gives one row of masses per value."""
    learnt = (np.maximum(others, 0.0) + pseudo_users * default) / (count + pseudo_users)
    return np.where(default > 0, learnt, 0.0)


def estimate_pseudo_users(posteriors: Mapping[str, np.ndarray], defaults: Mapping[str, np.ndarray]) -> float:
    """Return how many users the default masses should count as, by leave-one-out marginal likelihood.

    A user's posterior under their default masses `d` is proportional to `d` times the evidence of
    each kind of departure, so `posterior / d` is that evidence up to a factor of the user's own.
    Under the masses `m` the other users give them, the user's pairs are then likelier than under
    `d` by `m @ (posterior / d)`. The estimate maximises the sum of its logarithm over users, on a
    log grid over `PSEUDO_USERS_RANGE`: a Dirichlet concentration chosen by leave-one-out
    likelihood. With fewer than two users it is `PSEUDO_USERS`.
    """
    if len(posteriors) < 2:
        return PSEUDO_USERS
    total = np.sum(list(posteriors.values()), axis=0)
    grid = np.geomspace(*PSEUDO_USERS_RANGE, 25)
    score = np.zeros(len(grid))
    for user, posterior in posteriors.items():
        default = defaults[user]
        evidence = np.divide(posterior, default, out=np.zeros(N_KINDS), where=default > 0)
        masses = _blend(total - posterior, len(posteriors) - 1, default, grid[:, None])
        score += np.log(np.maximum(masses @ evidence, 1e-300))
    return float(grid[int(np.argmax(score))])
