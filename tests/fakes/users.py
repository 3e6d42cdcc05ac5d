"""Synthetic users for the offline reward model: bread-baking pairs of a short and a long reply.

`synthetic_pairs` builds a user who always picks the shorter (or the longer) reply, `with_noise`
flips a share of the picks, and `with_variances` gives a population model the between-user
variances measured on a set of such users.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from agent.features import N_INTERPRETABLE, FeatureExtractor
from agent.records import PreferencePair, Turn
from agent.reward_model import RewardModel, pair_rows
from agent.taste import estimate_user_variance

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


def flipped(pair: PreferencePair) -> PreferencePair:
    """Return the pair with chosen and rejected swapped (validated, so it gets its own content id)."""
    return PreferencePair.model_validate(
        {**pair.model_dump(), "chosen": pair.rejected, "rejected": pair.chosen, "id": ""}
    )


def with_noise(pairs: list[PreferencePair], *, flip: float, seed: int) -> list[PreferencePair]:
    """Swap chosen and rejected in a `flip` share of the pairs: real populations are not unanimous."""
    rng = random.Random(seed)
    return [flipped(pair) if rng.random() < flip else pair for pair in pairs]


def with_variances(
    model: RewardModel, extractor: FeatureExtractor, users: Sequence[Sequence[PreferencePair]]
) -> RewardModel:
    """Return the population model with between-user variances estimated from these users' pairs."""
    variances = estimate_user_variance(model, [pair_rows(model, extractor, own) for own in users])
    return replace(
        model,
        taste_prior=replace(
            model.taste_prior,
            user_variance=tuple(variances[:N_INTERPRETABLE]),
            interaction_variance=tuple(variances[N_INTERPRETABLE:]),
        ),
    )
