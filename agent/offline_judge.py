"""Judges built on the offline reward model: the personal model alone, prefer-longer, and a hybrid.

`OfflineJudge` answers `compare` and `rank` with a (personal) reward model and no language model
call. A reply that loops or repeats itself (`agent.features.degeneracy`) loses to every reply
that does not, and one that answers another question (`agent.features.strays`) to one that
answers this one, whatever the user's taste: liking short replies must never make a broken or
off-topic one win.

`HybridJudge` pools a language-model judge with the offline judge in log-odds space::

    P(first) = sigmoid(a · logit(p_llm) + b · logit(p_offline))

With enough validation pairs of the user (`MIN_STACK_PAIRS`), `a` and `b` are a logistic stack
fitted on those pairs in both orders, L2-shrunk toward the fixed weights. With fewer, the fixed
weights apply: `a = 0.5`, `b = 1.0`. The offline model gets the larger fixed weight because its
accuracy and calibration are measured (`scripts/eval_offline.py`), while an LLM judge's
probabilities are often over-confident (a small embedded model judges near chance); halving its
log-odds tempers that. There is no intercept, so swapping the replies flips the probability.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from agent.features import (
    INTERPRETABLE,
    N_INTERPRETABLE,
    FeatureExtractor,
    degeneracy,
    last_user_message,
    strays,
)
from agent.judge import PairwiseJudge
from agent.records import Preference, PreferencePair, RankedCandidate, Ranking, Turn, Verdict
from agent.reward_model import RewardModel, check_compatible
from agent.taste import fit_user

MIN_STACK_PAIRS = 8
_LOGIT_CLIP = 8.0


@dataclass(frozen=True)
class StackWeights:
    """Weights on the two judges' log-odds, and how many validation pairs they were fitted on (0: fixed)."""

    llm: float
    offline: float
    n_pairs: int = 0


FIXED_WEIGHTS = StackWeights(llm=0.5, offline=1.0, n_pairs=0)


def logit(probability: float) -> float:
    """Return the log-odds of a probability, clipped so certainties stay finite."""
    p = min(max(probability, 1e-6), 1 - 1e-6)
    return float(np.clip(np.log(p / (1 - p)), -_LOGIT_CLIP, _LOGIT_CLIP))


def fit_stack(
    llm_logits: np.ndarray,
    offline_logits: np.ndarray,
    first_chosen: np.ndarray,
    *,
    centre: StackWeights = FIXED_WEIGHTS,
    strength: float = 1.0,
) -> StackWeights:
    """Fit the two log-odds weights by logistic regression, L2-shrunk toward `centre`."""
    features = np.column_stack([llm_logits, offline_logits]).astype(np.float64)
    signs = np.where(np.asarray(first_chosen, dtype=bool), 1.0, -1.0)
    signed = features * signs[:, None]
    prior = np.array([centre.llm, centre.offline])

    def objective(weights: np.ndarray) -> tuple[float, np.ndarray]:
        margins = signed @ weights
        offset = weights - prior
        loss = -log_expit(margins).sum() + 0.5 * strength * float(offset @ offset)
        return float(loss), -signed.T @ expit(-margins) + strength * offset

    result = minimize(objective, prior, jac=True, method="L-BFGS-B")
    llm, offline = (float(value) for value in result.x)
    return StackWeights(llm=llm, offline=offline, n_pairs=len(features) // 2)


class HybridJudge:
    """A judge whose verdict pools a language-model judge and the offline reward model."""

    def __init__(
        self, llm_judge: PairwiseJudge, offline_judge: PairwiseJudge, *, weights: StackWeights = FIXED_WEIGHTS
    ) -> None:
        self.llm_judge = llm_judge
        self.offline_judge = offline_judge
        self.weights = weights

    @classmethod
    async def fit(
        cls,
        llm_judge: PairwiseJudge,
        offline_judge: PairwiseJudge,
        validation_pairs: Sequence[PreferencePair],
        *,
        min_pairs: int = MIN_STACK_PAIRS,
        strength: float = 1.0,
    ) -> HybridJudge:
        """Fit the stack on a user's validation pairs (both orders), or use fixed weights with too few."""
        if len(validation_pairs) < min_pairs:
            return cls(llm_judge, offline_judge)
        llm_logits, offline_logits, first_chosen = [], [], []
        for pair in validation_pairs:
            for first, second, chosen_first in (
                (pair.chosen, pair.rejected, True),
                (pair.rejected, pair.chosen, False),
            ):
                llm, offline = await asyncio.gather(
                    llm_judge.compare(pair.context, first, second),
                    offline_judge.compare(pair.context, first, second),
                )
                llm_logits.append(logit(llm.prob_first))
                offline_logits.append(logit(offline.prob_first))
                first_chosen.append(chosen_first)
        weights = fit_stack(
            np.array(llm_logits), np.array(offline_logits), np.array(first_chosen), strength=strength
        )
        return cls(llm_judge, offline_judge, weights=weights)

    def combine(self, llm_probability: float, offline_probability: float) -> float:
        """Pool two probabilities that the first reply wins."""
        return float(
            expit(
                self.weights.llm * logit(llm_probability) + self.weights.offline * logit(offline_probability)
            )
        )

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Judge `first` against `second` with both judges and pool their probabilities."""
        llm, offline = await asyncio.gather(
            self.llm_judge.compare(context, first, second), self.offline_judge.compare(context, first, second)
        )
        prob_first = self.combine(llm.prob_first, offline.prob_first)
        preferred: Preference = "first" if prob_first > 0.5 else "second" if prob_first < 0.5 else "tie"
        weights = self.weights
        reasoning = (
            f"language model (p={llm.prob_first:.2f}, weight {weights.llm:.2f}): {llm.reasoning} | "
            f"reward model (p={offline.prob_first:.2f}, weight {weights.offline:.2f}): {offline.reasoning}"
        )
        return Verdict(preferred=preferred, prob_first=prob_first, reasoning=reasoning, source="combined")

    async def rank(self, context: Sequence[Turn], candidates: Sequence[str]) -> Ranking:
        """Rank with both judges and order candidates by their pooled scores."""
        llm, offline = await asyncio.gather(
            self.llm_judge.rank(context, candidates), self.offline_judge.rank(context, candidates)
        )
        llm_by_index = {item.index: item for item in llm.candidates}
        offline_by_index = {item.index: item for item in offline.candidates}
        pooled = []
        for index, content in enumerate(candidates):
            from_llm, from_offline = llm_by_index[index], offline_by_index[index]
            pooled.append(
                RankedCandidate(
                    index=index,
                    content=content,
                    score=self.combine(from_llm.score, from_offline.score),
                    wins=from_llm.wins,
                    reasons=(*from_llm.reasons, *from_offline.reasons),
                )
            )
        pooled.sort(key=lambda item: (-item.score, item.index))
        return Ranking(candidates=tuple(pooled), judge_calls=llm.judge_calls)


# the chance a degenerate or off-topic reply is given against a sane one
_DEGENERATE_ODDS = 1e-3
_LOOPS = "repeats itself (a looping or broken reply)"
_STRAYS = "does not answer the message (it is about something else)"


def _failures(
    query: str, features: np.ndarray, off_topic: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Return how far each reply loops, and whether reply i strays where reply j answers.

    With no user message there is nothing to stray from; with no `off_topic` thresholds
    (`TastePrior.off_topic`) the model does not judge it.
    """
    if query.strip() and off_topic:
        return degeneracy(features), strays(features, *off_topic)
    return degeneracy(features), np.zeros((len(features), len(features)), dtype=bool)


def _describe_contributions(contributions: np.ndarray, *, top: int = 3) -> str:
    """Put the largest feature contributions to a first-vs-second decision into words."""
    interpretable = contributions[:N_INTERPRETABLE]
    items = [(float(value), INTERPRETABLE[i].noun) for i, value in enumerate(interpretable)]
    if contributions.shape[0] > N_INTERPRETABLE:
        items.append((float(contributions[N_INTERPRETABLE:].sum()), "overall content (embedding)"))
    items.sort(key=lambda item: -abs(item[0]))
    phrases = [
        f"{noun} favours {'First' if value > 0 else 'Second'} ({value:+.2f})"
        for value, noun in items[:top]
        if value
    ]
    return "; ".join(phrases) if phrases else "no feature separates the two replies"


class OfflineJudge:
    """A pairwise judge that scores replies with a (personal) reward model, without a language model."""

    def __init__(self, model: RewardModel, extractor: FeatureExtractor) -> None:
        check_compatible(model, extractor)
        self.model = model
        self.extractor = extractor

    @classmethod
    def for_user(
        cls,
        prior: RewardModel,
        extractor: FeatureExtractor,
        pairs: Sequence[PreferencePair],
        *,
        masses: np.ndarray | None = None,
    ) -> OfflineJudge:
        """Fit a user's model on their pairs and return a judge for it.

        `masses`: the prior mass of each kind of departure (`agent.shared_tastes`; None: the prior's own).
        """
        return cls(fit_user(prior, extractor, pairs, masses=masses), extractor)

    def _measure(self, query: str, replies: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        features = self.extractor.reply_features(query, replies)
        return features, self.model.question_terms(self.extractor.query_vector(query)[None, :])[0]

    async def _features(self, query: str, replies: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if all(self.extractor.is_cached(query, reply) for reply in replies):
            return self._measure(query, replies)
        # a new text means an embedding pass: keep it off the event loop
        return await asyncio.to_thread(self._measure, query, replies)

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Judge `first` against `second` as replies to `context`."""
        query = last_user_message(context)
        features, terms = await self._features(query, [first, second])
        broken, stray = _failures(query, features, self.model.taste_prior.off_topic)
        if broken[0] != broken[1]:
            prob_first = _DEGENERATE_ODDS if broken[0] > broken[1] else 1 - _DEGENERATE_ODDS
            reasoning = f"{'First' if broken[0] > broken[1] else 'Second'} {_LOOPS}"
        elif stray[0, 1] or stray[1, 0]:
            prob_first = _DEGENERATE_ODDS if stray[0, 1] else 1 - _DEGENERATE_ODDS
            reasoning = f"{'First' if stray[0, 1] else 'Second'} {_STRAYS}"
        else:
            difference = features[0] - features[1]
            prob_first = float(self.model.prob_first(difference[None, :], terms[None, :])[0])
            reasoning = _describe_contributions(self.model.contributions(difference, terms))
        preferred: Preference = "first" if prob_first > 0.5 else "second" if prob_first < 0.5 else "tie"
        return Verdict(preferred=preferred, prob_first=prob_first, reasoning=reasoning, source="structured")

    async def rank(self, context: Sequence[Turn], candidates: Sequence[str]) -> Ranking:
        """Rank candidates by utility in one feature pass; score = mean modelled chance of winning.

        Degenerate candidates rank below all others (and score as losing to each of them); a
        candidate that answers another question loses to each one that answers this one.
        """
        if not candidates:
            return Ranking(candidates=(), judge_calls=0)
        query = last_user_message(context)
        features, terms = await self._features(query, candidates)
        broken, stray = _failures(query, features, self.model.taste_prior.off_topic)
        n = len(candidates)
        win = self.model.win_matrix(features, terms)
        win[stray] = _DEGENERATE_ODDS
        win[stray.T] = 1 - _DEGENERATE_ODDS
        # the more a reply repeats itself past the threshold, the more surely it loses
        win[broken[:, None] > broken[None, :]] = _DEGENERATE_ODDS
        win[broken[:, None] < broken[None, :]] = 1 - _DEGENERATE_ODDS
        scores = (win.sum(axis=1) - np.diag(win)) / (n - 1) if n > 1 else np.ones(1)
        centre = features.mean(axis=0)
        ranked = []
        for i in range(n):
            reasons = tuple(
                _describe_contributions(self.model.contributions(features[i] - centre, terms))
                .replace("favours First", "raises it")
                .replace("favours Second", "lowers it")
                .split("; ")
            )
            if stray[i].any():
                reasons = (f"it {_STRAYS}", *reasons)
            if broken[i] > 0:
                reasons = (f"it {_LOOPS}", *reasons)
            ranked.append(
                RankedCandidate(
                    index=i,
                    content=candidates[i],
                    score=float(scores[i]),
                    wins=int((win[i] > 0.5).sum()),
                    reasons=reasons,
                )
            )
        ranked.sort(key=lambda item: (-item.score, item.index))
        return Ranking(candidates=tuple(ranked), judge_calls=0)


class PreferLongerJudge:
    """The baseline rule: prefer the longer reply (tie when equally long)."""

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        """Prefer whichever reply has more characters."""
        if len(first) == len(second):
            return Verdict(preferred="tie", prob_first=0.5, reasoning="equally long", source="structured")
        longer_first = len(first) > len(second)
        return Verdict(
            preferred="first" if longer_first else "second",
            prob_first=1.0 if longer_first else 0.0,
            reasoning="the longer reply",
            source="structured",
        )

    async def rank(self, context: Sequence[Turn], candidates: Sequence[str]) -> Ranking:
        """Order `candidates` longest first; a score is the share of the others it is longer than."""
        lengths = [len(candidate) for candidate in candidates]

        def beats(i: int, j: int) -> float:
            return 1.0 if lengths[i] > lengths[j] else 0.5 if lengths[i] == lengths[j] else 0.0

        others = [[j for j in range(len(lengths)) if j != i] for i in range(len(lengths))]
        ranked = [
            RankedCandidate(
                index=i,
                content=candidates[i],
                score=sum(beats(i, j) for j in others[i]) / max(len(others[i]), 1),
                wins=sum(beats(i, j) == 1.0 for j in others[i]),
                reasons=("the longer reply",),
            )
            for i in range(len(candidates))
        ]
        ranked.sort(key=lambda item: (-item.score, item.index))
        return Ranking(candidates=tuple(ranked), judge_calls=0)
