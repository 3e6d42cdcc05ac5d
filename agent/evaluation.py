"""The evaluation protocol: both reply orders, two accuracies, paired comparisons.

Every command that measures a judge runs this module (`persona-agent eval`, `bench accuracy`)
and the synthesis gate scores val pairs with it. Pairs are split first, siblings together and
demos apart from the pairs they would give away (`agent.splits`).

Scoring. Each test pair is judged in both reply orders, each order alone (`verdicts_of`: a
judge with ``judge_order`` spends one call per order; a judge with only ``compare``, such as the
offline reward model, answers each order with it):

- ``per_order`` (PersonalRewardBench's and the SynthesizeMe library's protocol): each order is
  a prediction of its own and scores 1 when it names the chosen reply; a tie or a failed call
  scores 0. A pair scores 0, 0.5 or 1.
- ``debiased`` (the product's judge, `agent.judge.combine_orders`): the two orders' probabilities
  are averaged into one verdict; the pair scores 1 when it names the chosen reply, else 0 (a tie
  included).
- position consistency: the share of pairs whose two orders name the same reply (no tie).

A user's figure is the mean over their test pairs; a headline figure is the mean over users
(macro) with a 95% percentile bootstrap interval over users.

Paired comparisons. `run_judges` builds each judge per user from a factory and judges that user's
test pairs; a user a judge could not be built for is left out of *every* judge's figures
(`Evaluation.users`), so judges are compared on the same users, and `paired_difference` gives the
difference of two judges with a paired bootstrap interval (users resampled, both judges together).

Demos never include the pair being judged: `judge_user` (so `run_judges`, which `eval` and
`bench accuracy` run) refuses a judge whose ``demos`` hold the pair or a sibling of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from agent.errors import PersonaAgentError
from agent.features import FeatureExtractor
from agent.formats import split_of
from agent.judge import OrderJudge, PairwiseJudge, combine_orders, compares
from agent.records import PreferencePair, Verdict
from agent.reward_model import RewardModel, fit_population
from agent.splits import UserSplit, check_no_demo_leak

logger = logging.getLogger(__name__)

Pick = Literal["chosen", "rejected", "tie"]
Metric = Literal["accuracy", "accuracy_per_order", "position_consistency"]

# --- judges -----------------------------------------------------------------------------------

PairJudge = Callable[[PreferencePair], Awaitable[PairwiseJudge]]
JudgeFactory = Callable[[UserSplit], Awaitable[PairJudge]]


def same_judge(judge: PairwiseJudge) -> PairJudge:
    """Return a pair-judge that uses `judge` for every pair."""

    async def for_pair(pair: PreferencePair) -> PairwiseJudge:
        return judge

    return for_pair


async def verdicts_of(judge: PairwiseJudge, pair: PreferencePair) -> tuple[Verdict, Verdict]:
    """Return the verdicts on `pair` shown chosen-first and chosen-second, each order judged alone."""
    ask = judge.judge_order if isinstance(judge, OrderJudge) else judge.compare
    chosen_first, chosen_second = await asyncio.gather(
        ask(pair.context, pair.chosen, pair.rejected), ask(pair.context, pair.rejected, pair.chosen)
    )
    return chosen_first, chosen_second


# --- scoring ----------------------------------------------------------------------------------


class PairOutcome(BaseModel):
    """What a judge picked for one pair in each order alone, and with both orders combined."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    pair_id: str
    chosen_first: Pick
    chosen_second: Pick
    debiased: Pick
    fallback: bool = False

    @property
    def chosen_first_correct(self) -> bool:
        """The order with the chosen reply first named it."""
        return self.chosen_first == "chosen"

    @property
    def chosen_second_correct(self) -> bool:
        """The order with the chosen reply second named it."""
        return self.chosen_second == "chosen"

    @property
    def score(self) -> float:
        """Debiased score: 1 when the combined verdict names the chosen reply, else 0."""
        return 1.0 if self.debiased == "chosen" else 0.0

    @property
    def per_order_score(self) -> float:
        """Per-order score: the fraction of the two orders that named the chosen reply (0, 0.5, 1)."""
        return (self.chosen_first_correct + self.chosen_second_correct) / 2

    @property
    def consistent(self) -> bool:
        """Both orders named the same reply."""
        return self.chosen_first == self.chosen_second != "tie"


def _pick(verdict: Verdict, *, chosen_is_first: bool) -> Pick:
    if verdict.preferred == "tie":
        return "tie"
    return "chosen" if (verdict.preferred == "first") == chosen_is_first else "rejected"


def outcome_of(pair: PreferencePair, chosen_first: Verdict, chosen_second: Verdict) -> PairOutcome:
    """Score the two single-order verdicts of one pair; a tie or a fallback names no reply."""
    combined = combine_orders(chosen_first, chosen_second)
    return PairOutcome(
        user_id=pair.user_id,
        pair_id=pair.id,
        chosen_first=_pick(chosen_first, chosen_is_first=True),
        chosen_second=_pick(chosen_second, chosen_is_first=False),
        debiased=_pick(combined, chosen_is_first=True),
        fallback=combined.source == "fallback",
    )


class UserAccuracy(BaseModel):
    """Accuracy of one user's pairs under both protocols."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    n_pairs: int
    accuracy: float
    accuracy_per_order: float
    position_consistency: float

    def value(self, metric: Metric) -> float:
        """Return one of the user's figures by name."""
        return float(getattr(self, metric))


class AccuracyReport(BaseModel):
    """Macro figures over users with bootstrap intervals, and the per-user rows."""

    model_config = ConfigDict(frozen=True)

    macro_accuracy: float
    ci_low: float
    ci_high: float
    macro_accuracy_per_order: float
    ci_per_order_low: float
    ci_per_order_high: float
    position_consistency: float
    n_users: int
    n_pairs: int
    fallbacks: int
    users: tuple[UserAccuracy, ...]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
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


def summarize(
    outcomes: Sequence[PairOutcome], *, users: Iterable[str] | None = None, seed: int = 0
) -> AccuracyReport:
    """Aggregate pair outcomes into per-user and macro figures, over `users` when given."""
    keep = None if users is None else set(users)
    by_user: dict[str, list[PairOutcome]] = defaultdict(list)
    for outcome in outcomes:
        if keep is None or outcome.user_id in keep:
            by_user[outcome.user_id].append(outcome)
    rows = tuple(
        UserAccuracy(
            user_id=user,
            n_pairs=len(own),
            accuracy=float(np.mean([o.score for o in own])),
            accuracy_per_order=float(np.mean([o.per_order_score for o in own])),
            position_consistency=float(np.mean([o.consistent for o in own])),
        )
        for user, own in sorted(by_user.items())
    )

    def macro(metric: Metric) -> float:
        return float(np.mean([row.value(metric) for row in rows])) if rows else float("nan")

    low, high = bootstrap_ci([row.accuracy for row in rows], seed=seed)
    per_order_low, per_order_high = bootstrap_ci([row.accuracy_per_order for row in rows], seed=seed)
    return AccuracyReport(
        macro_accuracy=macro("accuracy"),
        ci_low=low,
        ci_high=high,
        macro_accuracy_per_order=macro("accuracy_per_order"),
        ci_per_order_low=per_order_low,
        ci_per_order_high=per_order_high,
        position_consistency=macro("position_consistency"),
        n_users=len(rows),
        n_pairs=sum(row.n_pairs for row in rows),
        fallbacks=sum(o.fallback for own in by_user.values() for o in own),
        users=rows,
    )


class PairedDifference(BaseModel):
    """The macro difference `a` - `b` on the same users, with a paired bootstrap interval."""

    model_config = ConfigDict(frozen=True)

    a: str
    b: str
    metric: Metric
    difference: float
    ci_low: float
    ci_high: float
    n_users: int


def paired_difference(
    a: AccuracyReport,
    b: AccuracyReport,
    *,
    metric: Metric = "accuracy",
    names: tuple[str, str] = ("a", "b"),
    seed: int = 0,
) -> PairedDifference:
    """Return `a` - `b` on `metric` over their common users; resampling users keeps each user's pair."""
    theirs = {row.user_id: row.value(metric) for row in b.users}
    differences = [row.value(metric) - theirs[row.user_id] for row in a.users if row.user_id in theirs]
    low, high = bootstrap_ci(differences, seed=seed)
    return PairedDifference(
        a=names[0],
        b=names[1],
        metric=metric,
        difference=float(np.mean(differences)) if differences else float("nan"),
        ci_low=low,
        ci_high=high,
        n_users=len(differences),
    )


# --- running judges ---------------------------------------------------------------------------


async def judge_pair(judge: PairwiseJudge, pair: PreferencePair) -> PairOutcome:
    """Judge one pair in both orders, each alone, and score it under both protocols."""
    return outcome_of(pair, *(await verdicts_of(judge, pair)))


async def judge_user(pair_judge: PairJudge, test: Sequence[PreferencePair]) -> list[PairOutcome]:
    """Judge each test pair with the judge built for it, never one that shows it as a demo.

    The judges' own concurrency limits gate the model calls.
    """

    async def one(pair: PreferencePair) -> PairOutcome:
        judge = await pair_judge(pair)
        check_no_demo_leak(judge, pair)
        return await judge_pair(judge, pair)

    return list(await asyncio.gather(*(one(pair) for pair in test)))


async def evaluate(
    judge: PairwiseJudge | Callable[[PreferencePair], PairwiseJudge],
    pairs: Sequence[PreferencePair],
    *,
    concurrency: int = 1,
    seed: int = 0,
) -> AccuracyReport:
    """Judge every pair in both orders and report accuracy per user and macro-averaged.

    `judge` is one judge for all pairs, or a function giving the judge for a pair (each user has
    their own persona). Demos are the caller's to keep apart from `pairs` (the synthesis scores
    val pairs with demos from train, which `split_train_val` keeps sibling-free); `run_judges`
    checks it.
    """
    gate = asyncio.Semaphore(concurrency)

    async def run(pair: PreferencePair) -> PairOutcome:
        chosen = judge if compares(judge) else judge(pair)  # type: ignore[operator]
        async with gate:
            return await judge_pair(_as_comparer(chosen), pair)

    outcomes = await asyncio.gather(*(run(pair) for pair in pairs))
    return summarize(outcomes, seed=seed)


def _as_comparer(judge: object) -> PairwiseJudge:
    if not compares(judge):
        raise TypeError(f"{type(judge).__name__} has no compare()")
    return judge  # type: ignore[return-value]


@dataclass
class JudgeRun:
    """One judge's outcomes over the users it could judge, and the users it could not."""

    outcomes: list[PairOutcome] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Evaluation:
    """Several judges run on the same user splits; figures are over the users every judge judged."""

    runs: dict[str, JudgeRun]
    users: tuple[str, ...]
    excluded: dict[str, dict[str, str]]

    def report(self, name: str, *, seed: int = 0) -> AccuracyReport | None:
        """Summarize one judge over the common users (None when there are none)."""
        if not self.users:
            return None
        return summarize(self.runs[name].outcomes, users=self.users, seed=seed)

    def difference(
        self, a: str, b: str, *, metric: Metric = "accuracy", seed: int = 0
    ) -> PairedDifference | None:
        """Return judge `a` minus judge `b` with a paired bootstrap interval (None without users)."""
        first, second = self.report(a, seed=seed), self.report(b, seed=seed)
        if first is None or second is None:
            return None
        return paired_difference(first, second, metric=metric, names=(a, b), seed=seed)


async def run_judges(
    splits: Sequence[UserSplit],
    factories: Mapping[str, JudgeFactory],
    *,
    on_progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Judge every user's test pairs with every judge; a user any judge failed for counts for none."""
    runs = {name: JudgeRun() for name in factories}
    for number, split in enumerate(splits, start=1):
        for name, build in factories.items():
            started = time.perf_counter()
            try:
                outcomes = await judge_user(await build(split), split.test)
            except PersonaAgentError as exc:
                runs[name].skipped[split.user_id] = f"{type(exc).__name__}: {exc}"
                logger.warning("%s: %s skipped: %s", name, split.user_id, exc)
                continue
            finally:
                runs[name].seconds += time.perf_counter() - started
            runs[name].outcomes.extend(outcomes)
            if on_progress:
                score = float(np.mean([o.score for o in outcomes]))
                on_progress(f"user {number}/{len(splits)} {split.user_id}: {name} {score:.1%}")
    excluded: dict[str, dict[str, str]] = defaultdict(dict)
    for name, run in runs.items():
        for user, why in run.skipped.items():
            excluded[user][name] = why
    users = tuple(split.user_id for split in splits if split.user_id not in excluded)
    return Evaluation(runs=runs, users=users, excluded=dict(excluded))


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


def leave_user_out_priors(
    pairs: Sequence[PreferencePair],
    extractor: FeatureExtractor,
    users: Sequence[str],
    *,
    template: RewardModel,
    prior_splits: tuple[str, ...] = ("population", "train"),
) -> dict[str, RewardModel]:
    """Refit, for each user, the population weights on the other users' pairs of `prior_splits`.

    The question-kind probe and the taste prior (between-user variances) are `template`'s; the
    probe is left out when the extractor's embedder is not the one it was fitted on.
    """
    pool = [pair for pair in pairs if split_of(pair) in prior_splits]
    extractor.pair_differences(pool)
    width = extractor.query_vectors(pool[:1]).shape[1] if pool else 0
    axis = template.axis if template.axis.size == width + 1 else None
    everyone = fit_population(extractor, pool, axis=axis, taste_prior=template.taste_prior)
    return {
        user: fit_population(
            extractor,
            [pair for pair in pool if pair.user_id != user],
            axis=axis,
            taste_prior=template.taste_prior,
            description=f"population prior without {user}",
            start=everyone,
        )
        for user in users
    }
