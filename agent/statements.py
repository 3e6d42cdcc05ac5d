"""Put a user's learnt taste into words: statements with the evidence behind them, and a persona.

A statement appears only when the posterior gives the user's departure from the population on a
feature real weight (`agent.taste`: a strong taste or a rule that explains their picks, or a
broad departure whose posterior interval excludes the population's weight) and the user's own
pairs back it: enough of them differ on the feature, most of those went its way, and at least
one of those is a pick the population alone would have called the other way. Someone with
several tastes spreads the posterior over several features, so the bar on the posterior is low
and the bar on the pairs is what keeps a statement honest. Each names the pairs behind it.
A taste that flips with the kind of question reads as such ("on technical questions, ...").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agent.features import INTERPRETABLE, N_INTERPRETABLE
from agent.reward_model import RewardModel

# posterior probability of a departure needed before it is stated
CREDIBLE = 0.05
# pairs that must show the feature, and the share of them that must have gone the statement's way
MIN_PAIRS_SHOWN = 3
MIN_BACKING = 0.7


class PreferenceStatement(BaseModel):
    """One way a user's taste departs from the population's, with the evidence behind it."""

    model_config = ConfigDict(frozen=True)

    feature: str
    direction: Literal["more", "less"]
    text: str
    weight: float
    population_weight: float
    deviation: float
    # the user's pairs that back the statement (the pick went its way where the replies differed)
    n_pairs: int
    # the user's pairs whose replies clearly differed on the feature
    pairs_shown: int = 0
    probability: float = 1.0
    # None: always; "technical": `direction` on technical questions and the opposite on open-ended ones
    condition: Literal["technical"] | None = None


def _length_ratio_phrase(ratio: float) -> str:
    for target, words in (
        (0.25, "a quarter"),
        (1 / 3, "a third"),
        (0.5, "half"),
        (2.0, "twice"),
        (3.0, "three times"),
    ):
        if abs(math.log(ratio / target)) < 0.15:
            return f"about {words} as long"
    return f"about {ratio:.1f} times as long"


def _departures(user_model: RewardModel) -> list[tuple[int, bool, float, float]]:
    """Return (feature index, conditional, posterior mean departure, probability) of credible departures."""
    taste = user_model.taste
    if taste is None:
        return []
    found = []
    for conditional in (False, True):
        for index, spec in enumerate(INTERPRETABLE):
            column = index + (N_INTERPRETABLE if conditional else 0)
            strong = [s for s in taste.strong if s.feature == spec.name and s.conditional == conditional]
            strong_probability = sum(s.probability for s in strong)
            broad_mean, broad_sd = float(taste.broad_mean[column]), float(taste.broad_sd[column])
            broad_credible = broad_sd > 0 and abs(broad_mean) >= 2 * broad_sd
            probability = strong_probability + (taste.broad_probability if broad_credible else 0.0)
            if probability < CREDIBLE:
                continue
            mean = sum(s.probability * s.mean for s in strong) + taste.broad_probability * broad_mean
            if mean:
                found.append((index, conditional, mean, probability))
    found.sort(key=lambda item: -item[3] * abs(item[2]))
    return found


def describe_preferences(
    user_model: RewardModel, prior: RewardModel, *, top: int = 6
) -> list[PreferenceStatement]:
    """List the user's credible departures from the population, the most certain and largest first."""
    taste = user_model.taste
    statements: list[PreferenceStatement] = []
    for index, conditional, mean, probability in _departures(user_model):
        if len(statements) == top:
            break
        assert taste is not None
        spec = INTERPRETABLE[index]
        direction: Literal["more", "less"] = "more" if mean > 0 else "less"
        if conditional:
            text = (
                f"on technical questions, {spec.more if direction == 'more' else spec.less}; "
                f"on open-ended requests, {spec.less if direction == 'more' else spec.more}"
            )
            weight = float(user_model.interaction[index])
            population_weight = float(prior.interaction[index])
            shown, backing = taste.shown_conditional[index], taste.agreeing_conditional[index]
            explained = taste.explained_conditional[index]
        else:
            text = spec.more if direction == "more" else spec.less
            if spec.name == "length":
                # log1p(chars) differences are log ratios of lengths, near enough for replies of any size
                ratio = math.exp(float(user_model.chosen_mean[index] - prior.chosen_mean[index]))
                if (ratio < 0.8 and direction == "less") or (ratio > 1.25 and direction == "more"):
                    text = f"{text} ({_length_ratio_phrase(ratio)})"
            weight = float(user_model.weights[index])
            population_weight = float(prior.weights[index])
            shown, backing = taste.shown[index], taste.agreeing[index]
            explained = taste.explained[index]
        # a departure no pick needed (the population alone called every one) is not stated
        if shown < MIN_PAIRS_SHOWN or backing < MIN_BACKING * shown or explained == 0:
            continue
        statements.append(
            PreferenceStatement(
                feature=spec.name,
                direction=direction,
                text=text,
                weight=weight,
                population_weight=population_weight,
                deviation=float(mean),
                n_pairs=int(backing),
                pairs_shown=int(shown),
                probability=float(min(probability, 1.0)),
                condition="technical" if conditional else None,
            )
        )
    return statements


def render_persona(statements: Sequence[PreferenceStatement]) -> str:
    """Render preference statements as one short persona paragraph."""
    if not statements:
        return "No clear departure from the population's taste yet."
    # the paragraph opens with the comparison, so a statement need not repeat it
    parts = [
        f"{item.text.replace(' than most people', '')} ({item.n_pairs} of {item.pairs_shown} pairs)"
        for item in statements
    ]
    return "Compared with most people, this user " + "; ".join(parts) + "."
