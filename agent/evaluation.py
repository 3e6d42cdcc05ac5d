"""Pairwise accuracy as PersonalRewardBench counts it: both reply orders, ties wrong, macro over users.

A judge is anything with ``async compare(context, first, second) -> Verdict`` (see
`agent.judge.PairwiseJudge`). Each pair is judged twice, with the user's chosen reply first and
then second; an order scores when the verdict names the chosen reply. A tie scores nothing.
Per-user accuracy is the mean over that user's 2n orders; the headline figure is the mean of
per-user accuracies (macro), with a 95% percentile bootstrap interval over users.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol, cast, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from agent.records import PreferencePair, Turn, Verdict


@runtime_checkable
class Comparer(Protocol):
    """Anything that can say which of two replies a user prefers."""

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Judge `first` against `second` as replies to `context`."""
        ...


class PairOutcome(BaseModel):
    """How a judge did on one pair, in both orders."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    pair_id: str
    chosen_first_correct: bool
    chosen_second_correct: bool

    @property
    def score(self) -> float:
        """Fraction of the two orders judged right (0, 0.5 or 1)."""
        return (self.chosen_first_correct + self.chosen_second_correct) / 2


class UserAccuracy(BaseModel):
    """Accuracy of one user's pairs."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    n_pairs: int
    accuracy: float


class AccuracyReport(BaseModel):
    """Macro accuracy over users with a bootstrap confidence interval, and the per-user rows."""

    model_config = ConfigDict(frozen=True)

    macro_accuracy: float
    ci_low: float
    ci_high: float
    n_users: int
    n_pairs: int
    users: tuple[UserAccuracy, ...]


def outcome_of(pair: PreferencePair, chosen_first: Verdict, chosen_second: Verdict) -> PairOutcome:
    """Score the two verdicts of one pair; a tie is wrong."""
    return PairOutcome(
        user_id=pair.user_id,
        pair_id=pair.id,
        chosen_first_correct=chosen_first.preferred == "first",
        chosen_second_correct=chosen_second.preferred == "second",
    )


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Return a percentile bootstrap interval of the mean of `values`."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    if data.size == 1 or np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (float(low), float(high))


def summarize(outcomes: Sequence[PairOutcome], *, seed: int = 0) -> AccuracyReport:
    """Aggregate pair outcomes into per-user and macro accuracy with a 95% CI over users."""
    by_user: dict[str, list[float]] = defaultdict(list)
    for outcome in outcomes:
        by_user[outcome.user_id].append(outcome.score)
    users = tuple(
        UserAccuracy(user_id=user, n_pairs=len(scores), accuracy=float(np.mean(scores)))
        for user, scores in sorted(by_user.items())
    )
    per_user = [user.accuracy for user in users]
    low, high = bootstrap_ci(per_user, seed=seed)
    return AccuracyReport(
        macro_accuracy=float(np.mean(per_user)) if per_user else float("nan"),
        ci_low=low,
        ci_high=high,
        n_users=len(users),
        n_pairs=len(outcomes),
        users=users,
    )


async def judge_pair(judge: Comparer, pair: PreferencePair) -> PairOutcome:
    """Judge one pair in both orders."""
    chosen_first = await judge.compare(pair.context, pair.chosen, pair.rejected)
    chosen_second = await judge.compare(pair.context, pair.rejected, pair.chosen)
    return outcome_of(pair, chosen_first, chosen_second)


async def evaluate(
    judge: Comparer | Callable[[PreferencePair], Comparer],
    pairs: Sequence[PreferencePair],
    *,
    concurrency: int = 1,
    seed: int = 0,
) -> AccuracyReport:
    """Judge every pair in both orders and report accuracy per user and macro-averaged.

    `judge` is one judge for all pairs, or a function giving the judge for a pair's user
    (each user has their own persona).
    """
    gate = asyncio.Semaphore(concurrency)
    judge_for = None if isinstance(judge, Comparer) else judge

    async def run(pair: PreferencePair) -> PairOutcome:
        chosen = judge_for(pair) if judge_for is not None else judge
        async with gate:
            return await judge_pair(cast(Comparer, chosen), pair)

    outcomes = await asyncio.gather(*(run(pair) for pair in pairs))
    return summarize(outcomes, seed=seed)


class JudgeAgreement(BaseModel):
    """Of a user's last picks among drafted replies, how many the judge had ranked first."""

    model_config = ConfigDict(frozen=True)

    picks: int
    agreed: int
    rate: float | None
    recent: tuple[bool, ...] = ()  # per pick, oldest first: did the judge rank it first?


def judge_agreement(pairs: Sequence[PreferencePair], *, last: int = 20) -> JudgeAgreement:
    """Count how often the judge had ranked the user's pick first, over their `last` picks.

    A pick stores one pair per rejected candidate, all with the same ``judge_agreed`` mark; they
    count once. Pairs without the mark (imported or explicit pairs) are no picks.
    """
    picks: dict[tuple[object, ...], bool] = {}  # oldest pick first
    for pair in sorted(pairs, key=lambda pair: pair.created_at):
        agreed = pair.metadata.get("judge_agreed")
        if isinstance(agreed, bool):
            key = (tuple((turn.role, turn.content) for turn in pair.context), pair.chosen)
            picks.setdefault(key, agreed)
    recent = tuple(picks.values())[-last:] if last > 0 else ()
    agreed_count = sum(recent)
    return JudgeAgreement(
        picks=len(recent),
        agreed=agreed_count,
        rate=agreed_count / len(recent) if recent else None,
        recent=recent,
    )
