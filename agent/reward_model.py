"""The offline reward model: Bradley-Terry on reply features, learnt for the population, adapted per user.

A reply's utility, as an answer to a question ``q``, is::

    u(reply) = w · z(reply) + kind(q) · (v · z_interpretable(reply))

where ``z`` is the reply's features (`agent.features`: interpretable measurements, then the
sentence embedding) standardised by the population's mean and spread, and ``kind(q)`` in (-1, 1)
places the question between open-ended (-1: writing, roleplay, humanities) and technical (+1:
coding, math, reasoning, STEM, extraction), from a linear probe on the question's embedding. The
chance that a user prefers the first of two replies is ``lapse/2 + (1 - lapse) · sigmoid(u₁ - u₂)``.

* The population model is an L2-regularised logistic fit on many users' pairs (the pair
  difference chosen - rejected, no intercept, so swapping the replies flips the probability).
  It carries the answer-quality knowledge (the embedding weights) that every user keeps.
* `TastePrior` holds what is known about how people differ, used to adapt the model to one user
  (`agent.taste`): the between-user variance of each interpretable weight (estimated across
  users, empirical Bayes), the share and size of strong single-feature tastes, and the share of
  users who pick by a rule on one feature.
* The artifact is a small JSON file with its feature version; another version is refused.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import expit, log_expit

from agent.errors import ConfigurationError, NotEnoughPreferences
from agent.features import (
    FEATURES_VERSION,
    INTERPRETABLE_NAMES,
    N_INTERPRETABLE,
    QUALITY_FEATURES,
    FeatureExtractor,
)
from agent.records import PreferencePair

if TYPE_CHECKING:
    from agent.taste import Taste

ARTIFACT_FORMAT = "persona-agent/reward-model"
DEFAULT_PRIOR_PATH = Path(__file__).parent / "data" / "population_prior.json"
# cosine similarity to the nearest known question at which the embedding weights start to apply,
# and at which they apply fully (a rephrasing of a known question)
FAMILIAR_SIMILARITY = (0.6, 0.9)


@dataclass(frozen=True)
class TastePrior:
    """How the population is fitted and how far, and how, one user may depart from it.

    `population_*` are the L2 strengths of the population fit per standardised weight.
    `user_variance` / `interaction_variance` are the between-user variances of the interpretable
    weights and of their question-kind interactions (empirical Bayes across users; `agent.taste`).
    `strong_share` is the prior probability that a user has one strong taste on a single feature
    (`conditional_share` of it a taste that flips with the kind of question), `strong_scale` the
    prior spread of such a weight and `lapse` the share of picks made at random.
    `fixed_features` keep the population's weight for every user (`agent.features.QUALITY_FEATURES`).
    `taste_only_features` get no population weight (0, on every kind of question): they say
    nothing of an answer's quality, and a population weight fitted on a few dozen people moves
    the others' and costs the population accuracy (BENCHMARKS.md); one user's taste for them is
    still read.
    `rule_share` is the prior probability that a user picks by a rule on one feature ("the
    shorter reply whenever the lengths clearly differ", `RuleComponent`), for a share
    `rule_follow` of their picks, with its own `rule_lapse`, deciding where the replies differ
    by at least `rule_clear` population spreads. A rule is looked for only in a user with
    `rule_min_pairs` pairs or more: on two or three pairs a quarter to an eighth of all candidate
    rules explain every pick by chance, and a rule that fits by chance overrides the population
    on nearly every pair it is asked about.
    A one-feature taste (a strong weight or a rule) is looked for only on a feature some of the
    user's pairs *show*: replies that differ on it by `shown_clear` population spreads or more
    (the statements count their support the same way). A pair that barely differs on a feature
    tells no taste for it, and a taste read from such pairs is a chance fit.
    `off_topic` holds the thresholds (similarity, gap, words) of `agent.features.strays` for the
    embedder the model was fitted with: a reply that answers another question loses, whatever
    the taste. Empty: no such rule (an embedder nobody calibrated it for).
    """

    population_interpretable: float = 0.3
    population_embedding: float = 30.0
    population_interaction: float = 3.0
    user_variance: tuple[float, ...] = ()
    interaction_variance: tuple[float, ...] = ()
    strong_share: float = 0.8
    conditional_share: float = 0.3
    strong_scale: float = 8.0
    lapse: float = 0.1
    # how far someone with a strong taste still follows the population (a scale on its log-odds)
    strong_trust: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0)
    fixed_features: tuple[str, ...] = tuple(sorted(QUALITY_FEATURES))
    taste_only_features: tuple[str, ...] = ("addressing", "sentences", "parentheses")
    rule_share: float = 0.45
    rule_follow: tuple[float, ...] = (0.85, 1.0)
    rule_lapse: float = 0.05
    rule_clear: float = 0.05
    rule_min_pairs: int = 4
    shown_clear: float = 0.25
    off_topic: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.rule_min_pairs < 0:
            raise ConfigurationError(f"rule_min_pairs must be 0 or more, got {self.rule_min_pairs}")
        if self.shown_clear < 0:
            raise ConfigurationError(f"shown_clear must be 0 or more, got {self.shown_clear}")
        if len(self.off_topic) not in (0, 3):
            raise ConfigurationError(
                f"off_topic takes (similarity, gap, words) or nothing, got {list(self.off_topic)}"
            )

    def personal(self) -> np.ndarray:
        """Return, per interpretable feature, whether a user's taste may move its weight."""
        return _all_but("fixed_features", self.fixed_features)

    def population_weighted(self) -> np.ndarray:
        """Return, per interpretable feature, whether the population model weighs it."""
        return _all_but("taste_only_features", self.taste_only_features)

    def holding(self, names: Iterable[str]) -> TastePrior:
        """Return these settings with `names` added to `fixed_features`: no user's taste moves them."""
        return replace(self, fixed_features=tuple(sorted({*self.fixed_features, *names})))

    def to_json(self) -> dict[str, Any]:
        """Return the settings as plain JSON types."""
        return {
            **self.__dict__,
            "user_variance": list(self.user_variance),
            "interaction_variance": list(self.interaction_variance),
            "strong_trust": list(self.strong_trust),
            "rule_follow": list(self.rule_follow),
            "fixed_features": list(self.fixed_features),
            "taste_only_features": list(self.taste_only_features),
            "off_topic": list(self.off_topic),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "artifact") -> TastePrior:
        """Rebuild the settings from `to_json` output."""
        known = set(cls.__dataclass_fields__)
        if unknown := set(data) - known:
            raise ConfigurationError(f"{source}: unknown taste-prior settings {sorted(unknown)}")
        values = dict(data)
        for key in ("user_variance", "interaction_variance", "strong_trust", "rule_follow", "off_topic"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        for key in ("fixed_features", "taste_only_features"):
            if key in values:
                values[key] = tuple(str(v) for v in values[key])
        return cls(**values)


def _all_but(setting: str, names: tuple[str, ...]) -> np.ndarray:
    """Return, per interpretable feature, whether `names` (the value of `setting`) leaves it out."""
    if unknown := set(names) - set(INTERPRETABLE_NAMES):
        raise ConfigurationError(f"{setting} names unknown features {sorted(unknown)}")
    return np.array([name not in names for name in INTERPRETABLE_NAMES])


@dataclass(frozen=True)
class LinearComponent:
    """A linear model of one user's picks: log-odds ``rows @ coefficients``, a `lapse` share at random."""

    coefficients: np.ndarray
    lapse: float

    def prob_first(self, rows: np.ndarray) -> np.ndarray:
        """Return P(first preferred) for `RewardModel.design` rows."""
        return self.lapse / 2 + (1 - self.lapse) * expit(rows @ self.coefficients)


@dataclass(frozen=True)
class RuleComponent:
    """Picks made by a rule on one feature ("the shorter reply"), the rest as `otherwise` makes them.

    A `follow` share of the picks go by the rule (`rule_decisions`), the rest by `otherwise`.
    `quality` holds the population's weights on the measurements of whether a reply works at all
    (`TastePrior.fixed_features`), zero elsewhere: they count in the picks the rule decides too.
    """

    column: int
    direction: int
    follow: float
    lapse: float
    clear: float
    quality: np.ndarray
    otherwise: LinearComponent

    def prob_first(self, rows: np.ndarray) -> np.ndarray:
        """Return P(first preferred) for `RewardModel.design` rows."""
        decided = rule_decisions(
            self.direction * rows[:, self.column], rows @ self.quality, clear=self.clear, lapse=self.lapse
        )
        return self.follow * decided + (1 - self.follow) * self.otherwise.prob_first(rows)


def rule_decisions(signed: np.ndarray, quality: np.ndarray, *, clear: float, lapse: float) -> np.ndarray:
    """Return the chance a rule picks the first reply, from the rule's signed column and quality log-odds.

    Where the replies differ on the rule's feature by at least `clear` population spreads, the
    rule favours the one its direction prefers by the odds (1 - `lapse`) : `lapse`, and the
    quality log-odds count too: a broken or off-topic reply still loses what the population says
    it loses. Where they do not differ, the rule does not decide: even odds.
    `signed` and `quality` may carry trailing axes (one column per rule) as long as they broadcast.
    """
    side = np.where(np.abs(signed) >= clear, np.sign(signed), 0.0)
    return np.where(side != 0, expit(side * np.log((1 - lapse) / lapse) + quality), 0.5)


Component = LinearComponent | RuleComponent


@dataclass(frozen=True)
class RewardModel:
    """Standardised Bradley-Terry weights over reply features, with where they came from."""

    weights: np.ndarray
    interaction: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    chosen_mean: np.ndarray = field(repr=False)
    axis: np.ndarray = field(repr=False)
    # unit embeddings of the questions the population's pairs answered (see `question_terms`)
    questions: np.ndarray = field(repr=False)
    n_pairs: int
    n_users: int
    features_version: str = FEATURES_VERSION
    user_id: str | None = None
    description: str = ""
    taste_prior: TastePrior = field(default_factory=TastePrior)
    lapse: float = 0.0
    # the posterior over the user's taste that produced these weights (None for a population model)
    taste: Taste | None = field(default=None, repr=False)
    # users whose pairs the weights were fitted on: evaluations refit without them
    trained_on: tuple[str, ...] = field(default=(), repr=False)

    @property
    def dimensions(self) -> int:
        """Number of features the model reads."""
        return int(self.weights.shape[0])

    def _check(self, width: int) -> None:
        if width != self.dimensions:
            raise ConfigurationError(
                f"the reward model reads {self.dimensions} features but got {width}: "
                "was it fitted with another embedding model?"
            )

    def question_terms(self, query_vectors: np.ndarray) -> np.ndarray:
        """Return, per question, its kind (-1 open-ended to +1 technical) and its familiarity (0 to 1).

        Familiarity is how close the question is to one the population's pairs answered: the
        embedding weights learnt which answers people preferred to those questions, and say
        nothing about a question unlike any of them, so they apply in proportion to it.
        """
        vectors = np.asarray(query_vectors, dtype=np.float64)
        kinds = (
            np.tanh(vectors @ self.axis[:-1] + self.axis[-1]) if self.axis.size else np.zeros(len(vectors))
        )
        if self.questions.size == 0:
            return np.column_stack([kinds, np.ones(len(vectors))])
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        closest = ((vectors / norms) @ self.questions.T).max(axis=1)
        low, high = FAMILIAR_SIMILARITY
        return np.column_stack([kinds, np.clip((closest - low) / (high - low), 0.0, 1.0)])

    def _standardise(self, values: np.ndarray, terms: np.ndarray) -> np.ndarray:
        """Return standardised rows, the embedding part scaled by each row's question familiarity."""
        self._check(values.shape[-1])
        standardised = values / self.scale
        standardised[:, N_INTERPRETABLE:] *= terms[:, 1:2]
        return np.concatenate([standardised, standardised[:, :N_INTERPRETABLE] * terms[:, :1]], axis=1)

    def design(self, differences: np.ndarray, terms: np.ndarray) -> np.ndarray:
        """Return standardised pair differences as model rows (question-kind interactions appended)."""
        return self._standardise(differences, terms)

    @property
    def coefficients(self) -> np.ndarray:
        """Return the weights that multiply `design` rows."""
        return np.concatenate([self.weights, self.interaction])

    def contributions(self, difference: np.ndarray, terms: np.ndarray) -> np.ndarray:
        """Return each feature's share of the log-odds that the first reply wins."""
        row = self._standardise(difference[None, :], terms[None, :])[0]
        shares = row[: self.dimensions] * self.weights
        shares[:N_INTERPRETABLE] += row[self.dimensions :] * self.interaction
        return shares

    def _mixture(self) -> tuple[tuple[float, Component], ...]:
        if self.taste is not None and self.taste.components:
            return self.taste.components
        return ((1.0, LinearComponent(self.coefficients, self.lapse)),)

    def _prob_first(self, rows: np.ndarray) -> np.ndarray:
        return sum(
            (weight * component.prob_first(rows) for weight, component in self._mixture()),
            np.zeros(len(rows)),
        )

    def prob_first(self, differences: np.ndarray, terms: np.ndarray) -> np.ndarray:
        """Return P(first preferred) for rows of feature differences (first - second) and question terms.

        A user's model predicts with its whole taste posterior (a mixture of `Component`s).
        """
        return self._prob_first(self.design(differences, terms))

    def win_matrix(self, features: np.ndarray, terms: np.ndarray) -> np.ndarray:
        """Return P(reply i preferred to reply j) for every pair of rows of a reply feature matrix."""
        rows = self._standardise(features - self.mean, np.tile(terms, (len(features), 1)))
        # design rows are linear in the features: a pair's row is the difference of the replies' rows
        pairs = (rows[:, None, :] - rows[None, :, :]).reshape(len(rows) ** 2, -1)
        return self._prob_first(pairs).reshape(len(rows), len(rows))

    def to_json(self) -> dict[str, Any]:
        """Return the artifact as plain JSON types (a user's taste posterior is not stored)."""
        return {
            "format": ARTIFACT_FORMAT,
            "features_version": self.features_version,
            "description": self.description,
            "user_id": self.user_id,
            "n_pairs": self.n_pairs,
            "n_users": self.n_users,
            "trained_on": list(self.trained_on),
            "taste_prior": self.taste_prior.to_json(),
            "lapse": self.lapse,
            "feature_names": [*INTERPRETABLE_NAMES, *["embedding"] * (self.dimensions - N_INTERPRETABLE)],
            "weights": _compact(self.weights),
            "interaction": _compact(self.interaction),
            "mean": _compact(self.mean),
            "scale": _compact(self.scale),
            "chosen_mean": _compact(self.chosen_mean),
            "axis": _compact(self.axis),
            "questions": _pack(self.questions),
        }

    def save(self, path: str | Path) -> None:
        """Write the model as a JSON artifact."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str = "artifact") -> RewardModel:
        """Rebuild a model from `to_json` output, refusing another feature version."""
        check_artifact(data, ARTIFACT_FORMAT, source=source)
        keys = ("weights", "interaction", "mean", "scale", "chosen_mean", "axis")
        try:
            arrays = {key: np.asarray(data[key], dtype=np.float64) for key in keys}
        except KeyError as missing:
            raise ConfigurationError(f"{source}: the artifact has no {missing}") from None
        if not len(arrays["weights"]) == len(arrays["mean"]) == len(arrays["scale"]):
            raise ConfigurationError(f"{source}: weights, mean and scale differ in length")
        if len(arrays["interaction"]) != N_INTERPRETABLE:
            raise ConfigurationError(f"{source}: {len(arrays['interaction'])} interaction weights")
        return cls(
            weights=arrays["weights"],
            interaction=arrays["interaction"],
            mean=arrays["mean"],
            scale=arrays["scale"],
            chosen_mean=arrays["chosen_mean"],
            axis=arrays["axis"],
            questions=_unpack(data.get("questions")),
            n_pairs=int(data["n_pairs"]),
            n_users=int(data["n_users"]),
            features_version=str(data["features_version"]),
            user_id=data.get("user_id"),
            description=str(data.get("description", "")),
            taste_prior=TastePrior.from_json(data.get("taste_prior", {}), source=source),
            lapse=float(data.get("lapse", 0.0)),
            trained_on=tuple(data.get("trained_on", ())),
        )

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PRIOR_PATH) -> RewardModel:
        """Read a JSON artifact (default: the shipped population prior)."""
        return cls.from_json(read_artifact(path, "reward-model"), source=str(path))


def read_artifact(path: str | Path, kind: str) -> dict[str, Any]:
    """Read a JSON artifact, or raise `ConfigurationError` saying why it cannot be read."""
    target = Path(path)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"{target}: no {kind} artifact there") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{target}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{target}: not a {kind} artifact")
    return data


def check_artifact(data: Mapping[str, Any], artifact_format: str, *, source: str) -> None:
    """Raise `ConfigurationError` unless `data` is an artifact of this format and feature version."""
    if data.get("format") != artifact_format:
        found = data.get("format")
        raise ConfigurationError(f"{source}: not a {artifact_format} artifact (format {found!r})")
    if data.get("features_version") != FEATURES_VERSION:
        raise ConfigurationError(
            f"{source}: fitted on features version {data.get('features_version')!r}, but this code "
            f"computes version {FEATURES_VERSION!r}; refit it with scripts/fit_prior.py"
        )


def _compact(values: np.ndarray) -> list[float]:
    """Return floats at 7 significant digits: the artifact stays small and no scale rounds to 0."""
    return [float(f"{value:.7g}") for value in values]


def _pack(matrix: np.ndarray) -> dict[str, Any]:
    """Return a matrix as base64 float16 (unit vectors lose nothing that matters at that precision)."""
    return {"shape": list(matrix.shape), "float16": base64.b64encode(matrix.astype("<f2").tobytes()).decode()}


def _unpack(packed: Mapping[str, Any] | None) -> np.ndarray:
    if not packed:
        return np.zeros((0, 0))
    flat = np.frombuffer(base64.b64decode(packed["float16"]), dtype="<f2").astype(np.float64)
    return flat.reshape(packed["shape"])


def newton_step(
    design: np.ndarray, curvature: np.ndarray, strengths: np.ndarray, gradient: np.ndarray
) -> np.ndarray:
    """Solve (Xᵀ C X + Λ) s = g; with fewer rows than weights, through the rows-sized system."""
    n, d = design.shape
    if n >= d:
        hessian = (design.T * curvature) @ design
        hessian[np.diag_indices_from(hessian)] += strengths
        return np.linalg.solve(hessian, gradient)
    # Woodbury: H⁻¹ = Λ⁻¹ - Λ⁻¹XᵀS (I + S X Λ⁻¹ Xᵀ S)⁻¹ S X Λ⁻¹, with S = √C
    root = np.sqrt(curvature)
    scaled = design * root[:, None]
    inverse_strengths = 1.0 / strengths
    first = inverse_strengths * gradient
    inner = np.eye(n) + (scaled * inverse_strengths) @ scaled.T
    return first - inverse_strengths * (scaled.T @ np.linalg.solve(inner, scaled @ first))


def fit_logistic(
    design: np.ndarray,
    strengths: np.ndarray,
    start: np.ndarray | None = None,
    offset: np.ndarray | float = 0.0,
    row_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Minimise sum softplus(-(x·w + offset)) + ½ Σ λ w²: MAP Bradley-Terry weights of chosen-first rows.

    `offset` is a fixed share of each row's log-odds (the part of the utility that is not fitted);
    `row_weights` scale each row's term (a pair that counts half as much as a stated pick: 0.5).
    Damped Newton: the objective is smooth and strictly convex, and with a few hundred weights the
    Hessian solve is cheaper than the many small steps a quasi-Newton method takes.
    """

    counts = np.ones(len(design)) if row_weights is None else np.asarray(row_weights, dtype=np.float64)

    def objective(weights: np.ndarray) -> float:
        return float(-counts @ log_expit(design @ weights + offset) + 0.5 * strengths @ (weights * weights))

    weights = np.zeros(design.shape[1]) if start is None else start.astype(np.float64).copy()
    value = objective(weights)
    for _ in range(50):
        margins = design @ weights + offset
        gradient = -design.T @ (counts * expit(-margins)) + strengths * weights
        step = newton_step(design, counts * expit(margins) * expit(-margins), strengths, gradient)
        size = 1.0
        while size > 1e-6:
            candidate = weights - size * step
            candidate_value = objective(candidate)
            if candidate_value <= value:
                break
            size /= 2
        else:
            break
        improvement = value - candidate_value
        weights, value = candidate, candidate_value
        if improvement < 1e-9 * max(1.0, abs(value)) or float(np.abs(gradient).max()) < 1e-7:
            break
    return weights


def fit_question_kind(
    query_vectors: np.ndarray, technical: np.ndarray, *, strength: float = 0.01
) -> np.ndarray:
    """Fit the question-kind probe: logistic weights (and bias, last) telling technical questions apart."""
    rows = np.column_stack([np.asarray(query_vectors, dtype=np.float64), np.ones(len(query_vectors))])
    signs = np.where(np.asarray(technical, dtype=bool), 1.0, -1.0)
    strengths = np.full(rows.shape[1], strength)
    strengths[-1] = 1e-6
    # a logistic fit gives log-odds; tanh(x/2) maps them onto (-1, 1) exactly as 2·sigmoid(x) - 1
    return fit_logistic(rows * signs[:, None], strengths) / 2


def fit_population(
    extractor: FeatureExtractor,
    pairs: Sequence[PreferencePair],
    *,
    axis: np.ndarray | None = None,
    taste_prior: TastePrior | None = None,
    description: str = "",
    start: RewardModel | None = None,
) -> RewardModel:
    """Fit the population model on many users' pairs (the question-kind probe is given, not fitted)."""
    if len(pairs) < 2:
        raise NotEnoughPreferences(f"a population model needs at least 2 pairs, got {len(pairs)}")
    taste_prior = taste_prior or TastePrior()
    chosen, rejected = extractor.pair_features(pairs)
    replies = np.concatenate([chosen, rejected])
    mean = replies.mean(axis=0)
    scale = replies.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)  # a constant feature carries no signal
    dimensions = chosen.shape[1]
    model = RewardModel(
        weights=np.zeros(dimensions),
        interaction=np.zeros(N_INTERPRETABLE),
        mean=mean,
        scale=scale,
        chosen_mean=chosen[:, :N_INTERPRETABLE].mean(axis=0),
        axis=np.zeros(0) if axis is None else np.asarray(axis, dtype=np.float64),
        questions=_unit_rows(np.unique(extractor.query_vectors(pairs), axis=0)),
        n_pairs=len(pairs),
        n_users=len({pair.user_id for pair in pairs}),
        description=description,
        taste_prior=taste_prior,
        trained_on=tuple(sorted({pair.user_id for pair in pairs})),
    )
    design = model.design(chosen - rejected, model.question_terms(extractor.query_vectors(pairs)))
    strengths = np.concatenate(
        [
            np.full(N_INTERPRETABLE, taste_prior.population_interpretable),
            np.full(dimensions - N_INTERPRETABLE, taste_prior.population_embedding),
            np.full(N_INTERPRETABLE, taste_prior.population_interaction),
        ]
    )
    weighted = taste_prior.population_weighted()
    fitted = np.concatenate([weighted, np.ones(dimensions - N_INTERPRETABLE, dtype=bool), weighted])
    initial = start.coefficients[fitted] if start is not None and start.dimensions == dimensions else None
    coefficients = np.zeros(design.shape[1])
    coefficients[fitted] = fit_logistic(design[:, fitted], strengths[fitted], initial)
    return _with_coefficients(model, coefficients)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _with_coefficients(model: RewardModel, coefficients: np.ndarray) -> RewardModel:
    return replace(
        model, weights=coefficients[: model.dimensions], interaction=coefficients[model.dimensions :]
    )


def pair_rows(model: RewardModel, extractor: FeatureExtractor, pairs: Sequence[PreferencePair]) -> np.ndarray:
    """Return the pairs as `model`'s design rows (chosen minus rejected, with their question terms)."""
    chosen, rejected = extractor.pair_features(pairs)
    return model.design(chosen - rejected, model.question_terms(extractor.query_vectors(pairs)))


def check_compatible(model: RewardModel, extractor: FeatureExtractor) -> None:
    """Refuse a model fitted on another feature version than the extractor computes."""
    if model.features_version != extractor.version:
        raise ConfigurationError(
            f"model uses features version {model.features_version!r}, "
            f"extractor computes {extractor.version!r}"
        )
