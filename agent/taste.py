"""Learn one user's taste from a few pairs: a posterior over how they depart from the population.

The population model (`agent.reward_model`) predicts each of the user's pairs with log-odds
``m``. The user's own part is added on the interpretable features only; the quality
measurements (`TastePrior.fixed_features`) stay the population's. Three kinds of departure
compete, weighed by how well they explain the user's pairs (their marginal likelihood), each
with a lapse rate (a share of random picks):

* **broad**: every interpretable weight and its question-kind interaction moves a little, with
  the between-user variances measured across real users (`estimate_user_variance`, empirical
  Bayes), and the population's judgement of answer quality (the embedding part) is kept whole.
  A feature the population does not weigh (`TastePrior.taste_only_features`) has no spread here:
  a taste for it is one of the next two kinds.
  Most people are like this, and with few pairs they stay close to the population.
* **strong**: one feature decides most of the user's picks ("always the shorter reply"), either
  always or flipping with the kind of question ("short answers to technical questions, long
  ones to creative requests"). Each is integrated exactly on a grid, together with how far the
  user still follows the population's judgement (their *trust*: a scale on its log-odds,
  `TastePrior.strong_trust`), since someone who picks by one taste may set quality aside.
* **rule**: the user picks by the sign of one feature's difference where the replies clearly
  differ on it ("the reply with the shorter opening"), for all or most of their picks
  (`TastePrior.rule_follow`), the rest as the population would; the quality measurements count
  where the rule decides too (`agent.reward_model.RuleComponent`). A weight lets a bigger
  difference count for more; a rule counts every clear difference alike, which is how such a
  taste reads from a handful of pairs whose differences vary in size. Rules are looked for from
  `TastePrior.rule_min_pairs` pairs on: on fewer, some rule fits every pick by chance.

A few consistent pairs make a strong taste far likelier than chance agreement would, so five
pairs can move a weight a long way, and one odd pick does not undo the rest. A one-feature taste
is looked for only on the features the user's pairs clearly differ on (`TastePrior.shown_clear`):
one on a feature they never or barely differ on would be a guess, not something learnt from them.
For the same reason a taste that flips with the kind of question needs pairs of both kinds that
clearly differ on its feature.
Predictions use the whole posterior (a mixture of linear models and rules, `Taste.components`);
the user's weights, which explanations and statements read, are its mean (a rule counts as a
weight of the prior's `strong_scale` on its feature).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import expit, log_expit, logsumexp

from agent.errors import ConfigurationError
from agent.features import INTERPRETABLE, INTERPRETABLE_NAMES, N_INTERPRETABLE, FeatureExtractor
from agent.records import PreferencePair
from agent.reward_model import (
    Component,
    LinearComponent,
    RewardModel,
    RuleComponent,
    TastePrior,
    check_compatible,
    fit_logistic,
    rule_decisions,
)

_GRID = np.linspace(-12.0, 12.0, 97)
# the kinds of departure `candidate_masses` orders: broad; a strong taste, a rule for more and a
# rule for less on each interpretable feature and on its question-kind interaction
N_KINDS = 1 + 6 * N_INTERPRETABLE


@dataclass(frozen=True)
class StrongTaste:
    """One candidate strong taste (a weight or a rule) and the posterior evidence for it.

    `mean` and `sd` are the weight's posterior; a rule's `mean` is the weight it counts as in the
    user's mean weights (its direction times the prior's `strong_scale`), its `sd` 0.
    """

    feature: str
    conditional: bool
    probability: float
    mean: float
    sd: float
    rule: bool = False


@dataclass(frozen=True)
class Taste:
    """The posterior over one user's departure from the population, from their pairs."""

    n_pairs: int
    # the posterior as a mixture over `RewardModel.design` rows: (probability, component),
    # most of the mass in a handful of components
    components: tuple[tuple[float, Component], ...]
    # how far the user follows the population's judgement of quality (1: fully, as most people do)
    trust: float
    broad_probability: float
    # posterior mean and spread of the broad departure: interpretable weights, then interactions
    broad_mean: np.ndarray
    broad_sd: np.ndarray
    strong: tuple[StrongTaste, ...]
    # the posterior over the kinds of departure, ordered as `candidate_masses` orders their prior
    candidates: np.ndarray
    # per interpretable feature: pairs that clearly differ on it, those whose pick went the way
    # of the user's net departure on it (sign by question kind for interactions), and those of
    # these the population alone would have called the other way (what the departure explains)
    shown: np.ndarray
    agreeing: np.ndarray
    shown_conditional: np.ndarray
    agreeing_conditional: np.ndarray
    explained: np.ndarray
    explained_conditional: np.ndarray


def _user_columns(prior: RewardModel, rows: np.ndarray) -> np.ndarray:
    """Return the columns a user's taste moves: interpretable main effects, then their interactions."""
    return np.concatenate([rows[:, :N_INTERPRETABLE], rows[:, prior.dimensions :]], axis=1)


def _spread(prior: RewardModel, departure: np.ndarray) -> np.ndarray:
    """Place a departure over the user's columns (see `_user_columns`) into a full coefficient vector."""
    full = np.zeros(prior.coefficients.shape[0])
    full[:N_INTERPRETABLE] = departure[:N_INTERPRETABLE]
    full[prior.dimensions :] = departure[N_INTERPRETABLE:]
    return full


def _trusted(prior: RewardModel) -> np.ndarray:
    """Return 1 for the coefficients a user's trust in the population scales (all but quality ones)."""
    scaled = np.ones(prior.coefficients.shape[0])
    quality = ~prior.taste_prior.personal()
    scaled[:N_INTERPRETABLE][quality] = 0.0
    scaled[prior.dimensions :][quality] = 0.0
    return scaled


def quality_coefficients(prior: RewardModel) -> np.ndarray:
    """Return the population's coefficients on the quality measurements, 0 elsewhere.

    Every user keeps these, whatever their taste or trust: a rule counts them where it decides.
    """
    return prior.coefficients * (1.0 - _trusted(prior))


def _broad_variances(prior: RewardModel) -> np.ndarray:
    variances = np.concatenate([prior.taste_prior.user_variance, prior.taste_prior.interaction_variance])
    if variances.size != 2 * N_INTERPRETABLE:
        raise ConfigurationError(
            "the population model has no between-user variances for these features: refit it with "
            "scripts/fit_prior.py"
        )
    return variances


def _broad_posterior(
    rows: np.ndarray,
    offset: np.ndarray,
    variances: np.ndarray,
    lapse: float = 0.0,
    counts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Return the MAP departure, its posterior sd, and the Laplace log evidence of the broad model.

    Columns with no variance stay at the population's weight. The evidence counts `lapse` (picks
    made at random) so that one pick against a confident population does not rule the population
    out; the fit itself is the plain logistic MAP. `counts` weigh each pair (`PreferencePair.weight`).
    """
    free = variances > 0
    mean = np.zeros(rows.shape[1])
    sd = np.zeros(rows.shape[1])
    if not free.any():
        return mean, sd, float(_log_likelihood(offset, lapse, counts))
    design, precision = rows[:, free], 1.0 / variances[free]
    estimate = fit_logistic(design, precision, offset=offset, row_weights=counts)
    margins = design @ estimate + offset
    curvature = expit(margins) * expit(-margins) * (1.0 if counts is None else counts)
    hessian = (design.T * curvature) @ design
    hessian[np.diag_indices_from(hessian)] += precision
    _, logdet = np.linalg.slogdet(hessian / precision[None, :])
    penalty = 0.5 * precision @ (estimate * estimate) + 0.5 * logdet
    evidence = float(_log_likelihood(margins, lapse, counts) - penalty)
    mean[free] = estimate
    sd[free] = np.sqrt(np.diag(np.linalg.inv(hessian)))
    return mean, sd, evidence


def _log_likelihood(margins: np.ndarray, lapse: float, counts: np.ndarray | None = None) -> float:
    """Return the log-probability of the picks with these log-odds when a `lapse` share is random.

    `counts` weigh each pick's term (a tempered likelihood: a pair of weight 0.5 counts half).
    """
    terms = log_expit(margins) if lapse == 0 else np.log(lapse / 2 + (1 - lapse) * expit(margins))
    return float(terms.sum() if counts is None else counts @ terms)


def _strong_posteriors(
    rows: np.ndarray,
    offsets: np.ndarray,
    log_trust: np.ndarray,
    scale: float,
    lapse: float,
    counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return, per column of `rows`, the log evidence of a lone strong weight and its posterior.

    `offsets[a]` are the pairs' population log-odds at trust level `a` (prior `log_trust[a]`);
    `counts` weigh each pair's log-likelihood.
    Returns the log evidence, the posterior mean and sd of the weight, the posterior of the
    trust level (per column) and the weight's posterior mean at each trust level.
    """
    log_prior = -0.5 * (_GRID / scale) ** 2
    log_prior -= logsumexp(log_prior)
    # margins[a, g, i, k]: log-odds of pair i's pick at trust a with weight _GRID[g] on column k
    margins = offsets[:, None, :, None] + _GRID[None, :, None, None] * rows[None, None, :, :]
    likelihood = np.einsum("agik,i->agk", np.log(lapse / 2 + (1 - lapse) * expit(margins)), counts)
    joint = log_trust[:, None, None] + log_prior[None, :, None] + likelihood
    evidence = logsumexp(joint, axis=(0, 1))
    posterior = np.exp(joint - evidence[None, None, :])
    over_grid = posterior.sum(axis=0)
    mean = _GRID @ over_grid
    sd = np.sqrt(np.maximum((_GRID**2) @ over_grid - mean**2, 0.0))
    by_trust = posterior.sum(axis=1)
    mean_by_trust = np.einsum("g,agk->ak", _GRID, posterior) / np.maximum(by_trust, 1e-300)
    return evidence, mean, sd, by_trust, mean_by_trust


def _rule_posteriors(
    rows: np.ndarray, quality: np.ndarray, population: np.ndarray, settings: TastePrior, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return, per direction (more, then less) and column of `rows`, the log evidence of a rule.

    `quality[i]` is pair i's log-odds from the measurements every rule keeps the population's
    weight on; `population[i]` the chance of its pick as the population makes it (the picks the
    rule leaves); `counts` weigh each pair's log-likelihood. Also returns the posterior over the
    share of picks the rule decides (`TastePrior.rule_follow`), shaped (direction, column, share).
    """
    follow = np.asarray(settings.rule_follow)
    evidence, posterior = [], []
    for direction in (1, -1):
        decided = rule_decisions(
            direction * rows, quality[:, None], clear=settings.rule_clear, lapse=settings.rule_lapse
        )
        picks = follow * decided[:, :, None] + (1 - follow) * population[:, None, None]
        log_likelihood = np.einsum("ikf,i->kf", np.log(picks), counts) - np.log(len(follow))
        total = logsumexp(log_likelihood, axis=1)
        evidence.append(total)
        posterior.append(np.exp(log_likelihood - total[:, None]))
    return np.stack(evidence), np.stack(posterior)


def _rule_components(
    prior: RewardModel,
    probability: np.ndarray,
    follow: np.ndarray,
    quality: np.ndarray,
    population: LinearComponent,
) -> list[tuple[float, Component]]:
    """Return the rules of the posterior as mixture components (see `_rule_posteriors` for the shapes).

    `quality` holds the coefficients every user keeps the population's (`TastePrior.fixed_features`);
    `population` makes the picks a rule leaves.
    """
    settings = prior.taste_prior
    components: list[tuple[float, Component]] = []
    for d, k in zip(*np.nonzero(probability >= 1e-4), strict=True):
        column = k if k < N_INTERPRETABLE else prior.dimensions + k - N_INTERPRETABLE
        for f, share in enumerate(settings.rule_follow):
            rule = RuleComponent(
                int(column),
                1 - 2 * int(d),
                share,
                settings.rule_lapse,
                settings.rule_clear,
                quality,
                population,
            )
            components.append((float(probability[d, k] * follow[d, k, f]), rule))
    return components


def rule_on(prior: RewardModel, feature: str, direction: int, *, conditional: bool = False) -> RuleComponent:
    """Return a taste stated outright: a rule on one feature deciding every pick it can.

    `direction` 1 prefers more of `feature`, -1 less; `conditional` flips it on open-ended
    questions. It keeps the population's quality measurements and lapse, as a learnt rule does,
    so a judge holding only this rule is what learning the taste perfectly gives
    (`scripts/eval_offline.py` measures how far a learnt taste is from it).
    """
    if feature not in INTERPRETABLE_NAMES:
        raise ValueError(f"no interpretable feature {feature!r}")
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction}")
    settings = prior.taste_prior
    column = INTERPRETABLE_NAMES.index(feature) + (prior.dimensions if conditional else 0)
    return RuleComponent(
        column,
        direction,
        1.0,
        settings.rule_lapse,
        settings.rule_clear,
        quality_coefficients(prior),
        LinearComponent(prior.coefficients, settings.lapse),
    )


def candidate_masses(settings: TastePrior) -> np.ndarray:
    """Return the prior mass of each kind of departure a user may have.

    In order: a broad departure; a strong taste on each user column (the interpretable features,
    then their question-kind interactions); a rule on each user column for more of the feature,
    then for less. `strong_share`, `rule_share` and `conditional_share` apportion the mass, alike
    on every feature a taste may move (`TastePrior.personal`), none on the others.
    """
    personal = settings.personal()
    n_personal = int(personal.sum())
    per_column = np.concatenate(
        [
            np.where(personal, (1 - settings.conditional_share) / n_personal, 0.0),
            np.where(personal, settings.conditional_share / n_personal, 0.0),
        ]
    )
    weighted = 1 - settings.rule_share
    return np.concatenate(
        [
            [weighted * (1 - settings.strong_share)],
            weighted * settings.strong_share * per_column,
            np.tile(settings.rule_share * per_column / 2, 2),
        ]
    )


def kind_label(index: int) -> str:
    """Name the kind of departure at `index` of `candidate_masses`."""
    width = 2 * N_INTERPRETABLE
    if not 0 <= index < N_KINDS:
        raise IndexError(f"no kind of departure {index}")
    if index == 0:
        return "a broad departure (no single taste)"
    block, column = divmod(index - 1, width)
    noun = INTERPRETABLE[column % N_INTERPRETABLE].noun
    kind = ("a strong taste on", "a rule for more", "a rule for less")[block]
    return f"{kind} {noun}" + (", flipping with the kind of question" if column >= N_INTERPRETABLE else "")


def _checked_masses(masses: np.ndarray) -> np.ndarray:
    """Return `masses` as floats, or raise naming what is wrong with them."""
    values = np.asarray(masses, dtype=np.float64)
    if values.shape != (N_KINDS,):
        raise ValueError(f"masses need one value per kind of departure ({N_KINDS}), got {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any() or values[0] <= 0:
        raise ValueError("masses must be finite and not negative, with some on a broad departure")
    return values


def infer_taste(
    prior: RewardModel,
    rows: np.ndarray,
    counts: np.ndarray | None = None,
    masses: np.ndarray | None = None,
) -> tuple[np.ndarray, Taste]:
    """Return the posterior-mean coefficients of a user and their taste posterior.

    `rows` are the user's pairs as `RewardModel.design` rows (chosen - rejected); `counts` how much
    each pair counts (`PreferencePair.weight`; all 1 when None); `masses` the prior mass of each
    kind of departure (`candidate_masses` orders them; None: the prior's own).
    """
    settings = prior.taste_prior
    fixed = quality_coefficients(prior)
    scalable = prior.coefficients - fixed
    user_rows = _user_columns(prior, rows)
    personal = settings.personal()
    columns = np.concatenate([personal, personal])
    variances = np.where(columns, _broad_variances(prior), 0.0)
    pair_counts = np.ones(len(rows)) if counts is None else counts
    # a broad departure keeps the population's judgement of quality whole: someone who sets it
    # aside picks by a taste of their own (a strong taste or a rule), and the lapse covers odd picks
    broad_mean, broad_sd, broad_evidence = _broad_posterior(
        user_rows, rows @ prior.coefficients, variances, settings.lapse, counts
    )
    strong_levels = np.asarray(settings.strong_trust)
    strong_offsets = strong_levels[:, None] * (rows @ scalable)[None, :] + (rows @ fixed)[None, :]
    evidence, mean, sd, strong_trust, strong_by_trust = _strong_posteriors(
        user_rows,
        strong_offsets,
        np.full(len(strong_levels), -np.log(len(strong_levels))),
        settings.strong_scale,
        settings.lapse,
        pair_counts,
    )
    prior_mass = candidate_masses(settings) if masses is None else _checked_masses(masses)
    width = 2 * N_INTERPRETABLE
    broad_mass, strong_mass = prior_mass[0], prior_mass[1 : 1 + width]
    rule_mass = prior_mass[1 + width :].reshape(2, width)
    # A one-feature taste is read from the pairs that clearly differ on its feature
    # (`TastePrior.shown_clear`). One on a feature none of the user's pairs shows explains them no
    # better than no taste at all, or fits a few small differences by chance, and would predict
    # new pairs from little but its prior mass: the user's tastes are taken to be among those
    # their pairs show. A taste that flips with the kind of question is read only from pairs of
    # both kinds: on pairs of one kind it explains them exactly as the plain taste does, and its
    # flip would be a guess.
    one = columns & (np.abs(user_rows) >= settings.shown_clear).any(axis=0)
    one[N_INTERPRETABLE:] &= _shown_on_both_kinds(user_rows, settings.shown_clear)
    log_joint = np.full(width, -np.inf)
    population = LinearComponent(prior.coefficients, settings.lapse)
    pick_chance = population.prob_first(rows)
    rule_evidence, follow_posterior = _rule_posteriors(
        user_rows, rows @ fixed, pick_chance, settings, pair_counts
    )
    log_rule = np.full((2, width), -np.inf)
    # a kind of departure with no prior mass is ruled out (log 0)
    with np.errstate(divide="ignore"):
        log_joint[one] = np.log(strong_mass[one]) + evidence[one]
        log_broad = np.log(broad_mass) + broad_evidence
        if len(rows) >= settings.rule_min_pairs:
            log_rule[:, one] = np.log(rule_mass[:, one]) + rule_evidence[:, one]
    total = logsumexp([log_broad, *log_joint[one], *log_rule[:, one].ravel()])
    broad_probability = float(np.exp(log_broad - total))
    strong_probability = np.where(one, np.exp(log_joint - total), 0.0)
    rule_probability = np.where(one, np.exp(log_rule - total), 0.0)
    rule_weight = settings.strong_scale * (rule_probability[0] - rule_probability[1])
    departure = broad_probability * broad_mean + strong_probability * mean + rule_weight
    mean_trust = float(
        broad_probability
        + strong_probability[one] @ (strong_trust[:, one].T @ strong_levels)
        + rule_probability.sum()
    )
    coefficients = fixed + mean_trust * scalable + _spread(prior, departure)
    # the posterior as a mixture, for predictions: (weight, component)
    components: list[tuple[float, Component]] = [
        (broad_probability, LinearComponent(prior.coefficients + _spread(prior, broad_mean), settings.lapse))
    ]
    for k in np.flatnonzero(strong_probability >= 0.005):
        for a, level in enumerate(strong_levels):
            one = np.zeros(2 * N_INTERPRETABLE)
            one[k] = strong_by_trust[a, k]
            weight = float(strong_probability[k] * strong_trust[a, k])
            components.append(
                (weight, LinearComponent(fixed + level * scalable + _spread(prior, one), settings.lapse))
            )
    components += _rule_components(prior, rule_probability, follow_posterior, fixed, population)
    kept = [item for item in components if item[0] >= 1e-4]
    total_weight = sum(item[0] for item in kept)
    weights_found = [
        StrongTaste(
            feature=INTERPRETABLE_NAMES[k % N_INTERPRETABLE],
            conditional=bool(k >= N_INTERPRETABLE),
            probability=float(strong_probability[k]),
            mean=float(mean[k]),
            sd=float(sd[k]),
        )
        for k in np.flatnonzero(strong_probability >= 0.01)
    ]
    rules_found = [
        StrongTaste(
            feature=INTERPRETABLE_NAMES[k % N_INTERPRETABLE],
            conditional=bool(k >= N_INTERPRETABLE),
            probability=float(rule_probability[d, k]),
            mean=float((1 - 2 * d) * settings.strong_scale),
            sd=0.0,
            rule=True,
        )
        for d, k in zip(*np.nonzero(rule_probability >= 0.01), strict=True)
    ]
    strong = tuple(sorted(weights_found + rules_found, key=lambda item: -item.probability))
    # picks the population alone would have called the other way
    surprising = pick_chance < 0.5
    shown, agreeing, explained = _support(
        user_rows[:, :N_INTERPRETABLE], departure[:N_INTERPRETABLE], surprising, settings.shown_clear
    )
    shown_conditional, agreeing_conditional, explained_conditional = _support(
        user_rows[:, N_INTERPRETABLE:], departure[N_INTERPRETABLE:], surprising, settings.shown_clear
    )
    taste = Taste(
        n_pairs=len(rows),
        components=tuple((weight / total_weight, component) for weight, component in kept),
        trust=mean_trust,
        broad_probability=broad_probability,
        broad_mean=broad_mean,
        broad_sd=broad_sd,
        strong=strong,
        candidates=np.concatenate([[broad_probability], strong_probability, rule_probability.ravel()]),
        shown=shown,
        agreeing=agreeing,
        shown_conditional=shown_conditional,
        agreeing_conditional=agreeing_conditional,
        explained=explained,
        explained_conditional=explained_conditional,
    )
    return coefficients, taste


def _shown_on_both_kinds(user_rows: np.ndarray, clear: float) -> np.ndarray:
    """Return, per interpretable feature, whether pairs of both kinds of question clearly differ on it.

    `user_rows` are `_user_columns` rows: an interaction column is its feature's column times the
    question's kind (+1 technical, -1 open-ended), so their product's sign tells the kind.
    """
    main, interaction = user_rows[:, :N_INTERPRETABLE], user_rows[:, N_INTERPRETABLE:]
    shown = (np.abs(main) >= clear) & (np.abs(interaction) >= clear)
    technical = main * interaction > 0
    return (shown & technical).any(axis=0) & (shown & ~technical).any(axis=0)


def _support(
    columns: np.ndarray, direction: np.ndarray, surprising: np.ndarray, shown_clear: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count pairs that clearly differ on each column (by `shown_clear`), those whose pick agrees
    with `direction`, and those of these whose pick was `surprising` (the population called it the
    other way)."""
    clear = np.abs(columns) >= shown_clear
    agrees = clear & (np.sign(columns) == np.sign(direction)[None, :]) & (direction[None, :] != 0)
    return clear.sum(axis=0), agrees.sum(axis=0), (agrees & surprising[:, None]).sum(axis=0)


def fit_user(
    prior: RewardModel,
    extractor: FeatureExtractor,
    pairs: Sequence[PreferencePair],
    *,
    masses: np.ndarray | None = None,
) -> RewardModel:
    """Fit one user's model: the population's, moved by the posterior over their taste.

    `masses`: the prior mass of each kind of departure (`candidate_masses`; None: the prior's own).
    """
    check_compatible(prior, extractor)
    if not pairs:
        return prior
    users = {pair.user_id for pair in pairs}
    if len(users) > 1:
        raise ValueError(f"fit_user takes one user's pairs, got {len(users)} users")
    chosen, rejected = extractor.pair_features(pairs)
    if chosen.shape[1] != prior.dimensions:
        raise ConfigurationError(
            f"the prior reads {prior.dimensions} features but the extractor gives {chosen.shape[1]}: "
            "the embedder differs from the one the prior was fitted with"
        )
    rows = prior.design(chosen - rejected, prior.question_terms(extractor.query_vectors(pairs)))
    weights = np.array([pair.weight for pair in pairs])
    coefficients, taste = infer_taste(prior, rows, None if (weights == 1).all() else weights, masses)
    user = next(iter(users))
    return replace(
        prior,
        weights=coefficients[: prior.dimensions],
        interaction=coefficients[prior.dimensions :],
        chosen_mean=chosen[:, :N_INTERPRETABLE].mean(axis=0),
        n_pairs=len(pairs),
        n_users=1,
        user_id=user,
        description=f"personal model of {user} on {len(pairs)} pairs",
        lapse=prior.taste_prior.lapse,
        taste=taste,
        trained_on=(user,),
    )


def estimate_user_variance(
    prior: RewardModel,
    users_rows: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray] | None = None,
    *,
    floor: float = 1e-4,
    tolerance: float = 1e-4,
    max_rounds: int = 2000,
) -> np.ndarray:
    """Estimate the between-user variance of each personal weight (empirical Bayes).

    `users_rows` holds each user's pairs as design rows; `offsets` each user's population log-odds
    (default: `prior`'s; `scripts/fit_prior.py` passes those of a population fitted without each
    user, so no user's departure is measured from a model that already learnt it). Each round
    fits every user's broad departure under the current variances (a Laplace posterior) and applies
    MacKay's evidence update, ``variance = sum of squared posterior means / sum of how well-
    determined each user's weight is``, which has the same fixed point as the EM update
    (mean of squared mean plus posterior variance) but reaches it in far fewer rounds when a
    variance is falling towards zero. It runs until no variance a user's pairs show moves by
    more than `tolerance` (relative, or absolute at the `floor`).
    """
    # a feature the population does not weigh (`TastePrior.taste_only_features`) gets no broad
    # spread (0): departures from no weight at all would hold what the population left out, not
    # how people differ. A user's taste for it is read as a one-feature taste (`infer_taste`).
    settings = prior.taste_prior
    personal = np.concatenate([settings.personal() & settings.population_weighted()] * 2)
    user_rows = [_user_columns(prior, rows) for rows in users_rows]
    user_offsets = [rows @ prior.coefficients for rows in users_rows] if offsets is None else list(offsets)
    shown = np.zeros(2 * N_INTERPRETABLE, dtype=bool)
    for rows in user_rows:
        shown |= (np.abs(rows) > 0).any(axis=0)
    fitted = personal & shown
    variances = np.where(fitted, 1.0, 0.0)
    for _ in range(max_rounds):
        squares = np.zeros(2 * N_INTERPRETABLE)
        spreads = np.zeros(2 * N_INTERPRETABLE)
        for rows, offset in zip(user_rows, user_offsets, strict=True):
            mean, sd, _ = _broad_posterior(rows, offset, variances)
            squares += mean**2
            spreads += sd**2
        # how many users' pairs determine each weight (MacKay's gamma, summed over users)
        determined = len(user_rows) - spreads / np.where(fitted, variances, 1.0)
        # where almost nobody's pairs determine a weight, the EM update is the stable one
        mackay = determined > 1e-3
        estimate = np.where(
            mackay, squares / np.where(mackay, determined, 1.0), (squares + spreads) / len(user_rows)
        )
        updated = np.where(fitted, np.maximum(estimate, floor), 0.0)
        moved = np.abs(updated - variances) > tolerance * np.maximum(variances, floor)
        variances = updated
        if not moved[fitted].any():
            break
    # a feature no user's pairs showed says nothing about how people differ on it: typical spread
    unseen = personal & ~shown
    if unseen.any() and fitted.any():
        variances[unseen] = float(np.median(variances[fitted]))
    return variances
