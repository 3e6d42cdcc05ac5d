"""Measure how well the offline reward model learns a person's taste; print tables (or JSON).

    python scripts/eval_offline.py [--planted ../shared/data/planted] [--mt-bench FILE]
        [--prism FILE] [--curve docs/learning_curve.svg] [--ablate] [--speed] [--implicit]
        [--strengths 1,3,10] [--prism-splits 20] [--shared-directions 1,2,4] [--community]
        [--no-shared-tastes] [--json]

Every figure is pairwise accuracy by `agent.evaluation` (each held-out pair judged in both
orders, macro over users), the judges fitted on the users' `train` pairs, each user with the
taste prior the file's other users share (`agent.shared_tastes`, learnt from their `train`
pairs), as `bench accuracy --judge offline` fits them; `--no-shared-tastes` fits every user with
the prior's own masses instead:

* planted tastes: per taste and training size (5, 10, 20 pairs), the shipped prior adapted on
  each simulated user, beside the population alone; and how many test pairs have a chosen reply
  that loops (`agent.features.degeneracy`), which every judge here loses by design; and the
  ceiling: each visible taste's own rule, known in advance, as this model reads it, and learners
  told only that each user's taste is one of the visible five, or only the features they are on;
* MT-Bench human judges (`val` and `test`): each user's prior refitted without them
  (`agent.evaluation.leave_user_out_priors`);
* PRISM examples: the seeded split of `agent.evaluation` (sibling pairs kept together), the shipped prior;
* loops: each real MT-Bench answer that does not itself loop, against a copy of another answer
  to the same question that breaks into a loop, judged for every planted user and the population;
* strays: each real MT-Bench answer against a real answer to another MT-Bench question, judged
  the same way, with and without the off-topic rule (`TastePrior.off_topic`); and the real pairs
  of the MT-Bench, PRISM and planted files (both replies answer) in which the rule calls one stray;
* `--ablate`: the same on planted users and MT-Bench `val` with one part of the design removed;
* `--speed`: median time to fit a user on 25 pairs and to compare one pair (features cached);
* `--implicit`: planted users with 10 training pairs, half of them given as inferred pairs
  (`edit`, `regenerate`: they count less in the fit, `agent.records.SOURCE_WEIGHTS`), against
  all ten as stated picks;
* `--prism-splits N`: PRISM over N seeded splits (seeds 0 to N-1): the population alone, the
  personal judge with and without its one-feature tastes, and prefer-longer, each as its mean,
  its spread over the splits and in how many splits it is under the population alone;
* `--strengths 1,3,...`: the population alone (MT-Bench `val` and `test` with leave-user-out
  priors, PRISM) at each L2 strength on its embedding weights: how `population_embedding` is chosen;
* `--community`: the personal judge with the prior's own taste masses beside those the other users
  of each file share, on the planted users, MT-Bench `val` and `test`, and PRISM;
* `--shared-directions 1,2,...`: MT-Bench `val` and `test` with each judge's embedding weights
  moved along that many directions shared across the other judges (low-rank user offsets), at
  several prior spreads: what keeping the population's judgement of quality whole leaves out.

`--curve` writes the learning curve (accuracy against training pairs) as an SVG picture.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The fits are small matrix solves; threaded BLAS only fights over the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from agent.embedding import CachedEmbedder
from agent.evaluation import evaluate, leave_user_out_priors
from agent.features import (
    DEGENERATE_REPETITION,
    INTERPRETABLE_NAMES,
    N_INTERPRETABLE,
    FeatureExtractor,
    degeneracy,
    repetition,
    strays,
)
from agent.formats import read_pairs, split_of
from agent.offline_judge import OfflineJudge, PreferLongerJudge
from agent.records import PreferencePair, Turn
from agent.reward_model import (
    Component,
    RewardModel,
    RuleComponent,
    fit_logistic,
    fit_population,
    pair_rows,
)
from agent.shared_tastes import SharedTastes
from agent.splits import user_splits
from agent.taste import rule_on

SIZES = (5, 10, 20)
Prior = Callable[[str], RewardModel]
Users = dict[str, list[PreferencePair]]


def by_user(pairs: Sequence[PreferencePair], split: str | None = None) -> dict[str, list[PreferencePair]]:
    grouped: dict[str, list[PreferencePair]] = defaultdict(list)
    for pair in pairs:
        if split is None or split_of(pair) == split:
            grouped[pair.user_id].append(pair)
    return dict(grouped)


def splits_of(
    pairs: Sequence[PreferencePair], seed: int = 0
) -> tuple[dict[str, list[PreferencePair]], dict[str, list[PreferencePair]], dict[str, list[PreferencePair]]]:
    """Return each user's train, val and test pairs as the evaluation protocol splits them."""
    found, _ = user_splits(pairs, seed=seed)
    return (
        {split.user_id: split.train for split in found},
        {split.user_id: split.val for split in found},
        {split.user_id: split.test for split in found},
    )


# Fit each user with the tastes the other users of the file share, as the product does after
# `persona-agent memory learn-tastes` (`--no-shared-tastes` turns it off for a whole run).
SHARED_TASTES = True


def accuracy(
    extractor: FeatureExtractor,
    prior: Prior,
    train: Users,
    held_out: Users,
    *,
    adapt: bool = True,
    shared: bool | None = None,
    tastes: SharedTastes | None = None,
) -> dict[str, float]:
    """Return each user's accuracy on their held-out pairs.

    With `shared` (default: `SHARED_TASTES`) each user is fitted with the taste prior the *other*
    users share (`agent.shared_tastes`): `tastes` when given, else learnt from `train`; without,
    with the prior's own masses.
    """
    if not adapt or not (SHARED_TASTES if shared is None else shared):
        tastes = None
    elif tastes is None:
        tastes = SharedTastes.learn(prior, extractor, train)
    judges = {
        user: OfflineJudge.for_user(
            prior(user),
            extractor,
            train.get(user, []),
            masses=tastes.masses_for(user, prior(user)) if tastes is not None else None,
        )
        if adapt
        else OfflineJudge(prior(user), extractor)
        for user in held_out
    }
    found = {}
    for user, pairs in held_out.items():
        report = asyncio.run(evaluate(judges[user], pairs))
        found[user] = report.macro_accuracy
    return found


def macro(per_user: dict[str, float]) -> float:
    return 100 * float(np.mean(list(per_user.values())))


def taste_of(user_id: str) -> str:
    return user_id.removeprefix("planted_").rsplit("_", 1)[0]


def planted_users(
    extractor: FeatureExtractor, prior: RewardModel, folder: Path
) -> dict[str, dict[str, float]]:
    """Return each planted user's test accuracy per training size ("n5": {user: accuracy}, ...)."""
    found = {}
    for size in SIZES:
        pairs = read_pairs(folder / f"visible_n{size}.jsonl")
        extractor.pair_differences(pairs)
        train, _, test = splits_of(pairs)
        found[f"n{size}"] = accuracy(extractor, lambda _: prior, train, test)
    return found


def planted_table(
    extractor: FeatureExtractor, prior: RewardModel, folder: Path, judged: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Return accuracy per taste (and overall) per training size of the users `judged`
    (`planted_users`), and the population alone."""
    train, _, test = splits_of(read_pairs(folder / f"visible_n{SIZES[0]}.jsonl"))
    population = accuracy(extractor, lambda _: prior, train, test, adapt=False)
    table: dict[str, dict[str, float]] = {"population alone": {"all": macro(population)}}
    for column, per_user in judged.items():
        for name in sorted({taste_of(user) for user in per_user}):
            table.setdefault(name, {})[column] = macro(
                {u: a for u, a in per_user.items() if taste_of(u) == name}
            )
        table.setdefault("all planted users", {})[column] = macro(per_user)
    return table


# Each visible planted taste as a rule on this model's features: (feature, direction, flips with
# the kind of question). Only the ceiling below reads it; the judges learn tastes in general.
PLANTED_RULES = {
    "short": ("length", -1, False),
    "lists": ("lists", 1, False),
    "no_hedging": ("hedging", -1, False),
    "direct_start": ("first_sentence", -1, False),
    "short_on_stem_long_on_writing": ("length", -1, True),
}


def planted_rule(prior: RewardModel, taste: str) -> RuleComponent:
    """Return a visible planted taste as a rule on this model's features (`PLANTED_RULES`)."""
    feature, direction, conditional = PLANTED_RULES[taste]
    return rule_on(prior, feature, direction, conditional=conditional)


def _accuracy_of(
    extractor: FeatureExtractor,
    fitted: RewardModel,
    components: tuple[tuple[float, Component], ...],
    test: list[PreferencePair],
) -> float:
    """Return a fitted user's test accuracy when their taste posterior is replaced by `components`."""
    assert fitted.taste is not None
    model = replace(fitted, taste=replace(fitted.taste, components=components))
    return asyncio.run(evaluate(OfflineJudge(model, extractor), test)).macro_accuracy


def planted_ceiling(
    extractor: FeatureExtractor, prior: RewardModel, folder: Path
) -> dict[str, dict[str, float]]:
    """Return planted test accuracy of each user's own rule, known in advance, judged by this model.

    The rule's judge is a fitted user's model whose taste posterior is replaced by the rule alone
    (`RuleComponent`, deciding every pick, with the population's quality measurements), so the
    loop gate and the measurements are the shipped ones: what learning the taste perfectly gives.
    Beside it, per training size, two learners told part of the answer, each the Bayes posterior
    over its rules (equally likely beforehand) from the user's train pairs: one told that the
    taste is one of the visible five (not which), one told only the four features they are on
    (not the direction, nor whether it flips with the kind of question: 16 rules). They bound
    what a learner of tastes in general can reach on these files.
    """
    own_rules = {taste: planted_rule(prior, taste) for taste in PLANTED_RULES}
    features = sorted({feature for feature, _, _ in PLANTED_RULES.values()})
    told = {
        "told the five tastes": list(own_rules.values()),
        f"told the {len(features)} features": [
            rule_on(prior, feature, direction, conditional=conditional)
            for feature in features
            for direction in (1, -1)
            for conditional in (False, True)
        ],
    }
    found: dict[str, dict[str, float]] = {}
    for size in SIZES:
        train, _, test = splits_of(read_pairs(folder / f"visible_n{size}.jsonl"))
        users = [user for user in test if taste_of(user) in own_rules]
        if not users:
            return {}
        per_learner: dict[str, dict[str, float]] = defaultdict(dict)
        for user in users:
            rows = pair_rows(prior, extractor, train[user])
            fitted = OfflineJudge.for_user(prior, extractor, train[user]).model
            for name, rules in told.items():
                evidence = np.array([np.log(rule.prob_first(rows)).sum() for rule in rules])
                posterior = np.exp(evidence - evidence.max())
                mixture = tuple(zip((posterior / posterior.sum()).tolist(), rules, strict=True))
                per_learner[name][user] = _accuracy_of(extractor, fitted, mixture, test[user])
            own = ((1.0, own_rules[taste_of(user)]),)
            per_learner["each user's own rule"][user] = _accuracy_of(extractor, fitted, own, test[user])
        for name, per_user in per_learner.items():
            found.setdefault(name, {})[f"n{size}"] = macro(per_user)
    return found


def rule_calls(
    prior: RewardModel, extractor: FeatureExtractor, user: str, pairs: Sequence[PreferencePair]
) -> np.ndarray:
    """Return the chance the planted user's own rule (`planted_rule`) gives each of their picks."""
    return planted_rule(prior, taste_of(user)).prob_first(pair_rows(prior, extractor, pairs))


def short_of_the_ceiling(
    extractor: FeatureExtractor, prior: RewardModel, folder: Path, judged: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Return the planted users this judge scores at least 5 points under their own rule, at any size.

    Per user: the judge's test accuracy at each training size (`judged`, from `planted_users`),
    their own rule's (`planted_rule`, the ceiling) and how many of their first 10 train picks
    (`SIZES[1]`) that rule calls wrong (flipped picks, as these features read the taste).
    """
    train, _, test = splits_of(read_pairs(folder / f"visible_n{SIZES[1]}.jsonl"))
    rows = {}
    for user in sorted(user for user in test if taste_of(user) in PLANTED_RULES):
        row = {column: 100 * per_user[user] for column, per_user in judged.items()}
        fitted = OfflineJudge.for_user(prior, extractor, train[user]).model
        own = ((1.0, planted_rule(prior, taste_of(user))),)
        row["own rule"] = 100 * _accuracy_of(extractor, fitted, own, test[user])
        row["picks against the rule"] = float((rule_calls(prior, extractor, user, train[user]) < 0.5).sum())
        if min(row[column] for column in judged) <= row["own rule"] - 5:
            rows[user] = row
    return rows


def following_the_taste(
    extractor: FeatureExtractor, prior: RewardModel, folder: Path
) -> dict[str, dict[str, float]]:
    """Return planted test accuracy of this judge trained on pairs that all follow the user's taste.

    Each user's training pairs are the first 5 and 10 of their largest file's train pairs whose pick
    their own rule (`planted_rule`) calls right: the planted taste without its flipped picks, so
    the figures say what the learner makes of a taste the pairs do show, beside the ceiling.
    """
    train, _, test = splits_of(read_pairs(folder / f"visible_n{SIZES[-1]}.jsonl"))
    users = [user for user in test if taste_of(user) in PLANTED_RULES]
    following = {}
    for user in users:
        calls = rule_calls(prior, extractor, user, train[user])
        following[user] = [pair for pair, chance in zip(train[user], calls, strict=True) if chance > 0.5]
    found: dict[str, float] = {}
    for size in SIZES[:-1]:
        own = {user: pairs[:size] for user, pairs in following.items()}
        found[f"n{size}"] = macro(accuracy(extractor, lambda _: prior, own, {u: test[u] for u in users}))
    return {"this judge, on training pairs that all follow the taste": found} if users else {}


def looping_picks(extractor: FeatureExtractor, folder: Path) -> dict[str, float]:
    """Count planted test pairs whose chosen reply loops and the other does not (lost by design)."""
    pairs = [pair for pair in read_pairs(folder / f"visible_n{SIZES[0]}.jsonl") if split_of(pair) == "test"]
    chosen, rejected = extractor.pair_features(pairs)
    lost = int((degeneracy(chosen) > degeneracy(rejected)).sum())
    return {"test pairs": len(pairs), "chosen reply loops": lost, "% of pairs": 100 * lost / len(pairs)}


def mt_bench_judges(
    extractor: FeatureExtractor, prior: RewardModel, path: Path
) -> tuple[Users, dict[str, Users], dict[str, RewardModel]]:
    """Return the MT-Bench judges' train pairs, their `val` and `test` pairs (judges who have
    some), and each judge's prior refitted without them (`leave_user_out_priors`)."""
    pairs = read_pairs(path, skip_invalid=True)
    extractor.pair_differences(pairs)
    train, val, test = splits_of(pairs)
    priors = leave_user_out_priors(pairs, extractor, sorted(train), template=prior)
    held_out = {
        split: {user: own for user, own in held.items() if own}
        for split, held in (("val", val), ("test", test))
    }
    return train, held_out, priors


def mt_bench(
    extractor: FeatureExtractor,
    prior: RewardModel,
    path: Path,
    splits: Sequence[str],
    *,
    personal: bool = True,
    shared: bool | None = None,
) -> dict[str, dict[str, float]]:
    """Return population-alone (and personal) accuracy on MT-Bench splits, leave-user-out priors
    (`shared`: as `accuracy` takes it)."""
    train, held_out, priors = mt_bench_judges(extractor, prior, path)
    found: dict[str, dict[str, float]] = {}
    for split in splits:
        held = held_out[split]
        found[split] = {
            "population": macro(accuracy(extractor, priors.__getitem__, train, held, adapt=False))
        }
        if personal:
            found[split]["personal"] = macro(
                accuracy(extractor, priors.__getitem__, train, held, shared=shared)
            )
    return found


def prism(
    extractor: FeatureExtractor, prior: RewardModel, path: Path, *, personal: bool = True
) -> dict[str, float]:
    """Return accuracy on the PRISM examples' seeded test split."""
    pairs = read_pairs(path)
    extractor.pair_differences(pairs)
    train, _, test = splits_of(pairs)
    found = {"population": macro(accuracy(extractor, lambda _: prior, train, test, adapt=False))}
    if personal:
        found["personal"] = macro(accuracy(extractor, lambda _: prior, train, test))
    return found


def embedding_strengths(
    extractor: FeatureExtractor,
    prior: RewardModel,
    mt_path: Path,
    prism_path: Path,
    strengths: Sequence[float],
) -> dict[str, dict[str, float]]:
    """Return the population alone at each L2 strength on its embedding weights (`population_embedding`).

    MT-Bench `val` and `test` with leave-user-out priors, and PRISM with the population fitted on
    MT-Bench's `train` and `population` pairs, as `scripts/fit_prior.py` fits the shipped one.
    """
    pool = [
        pair for pair in read_pairs(mt_path, skip_invalid=True) if split_of(pair) in ("train", "population")
    ]
    found = {}
    for strength in strengths:
        settings = replace(prior.taste_prior, population_embedding=strength)
        template = replace(prior, taste_prior=settings)
        row = {
            f"MT-Bench {split}": figures["population"]
            for split, figures in mt_bench(
                extractor, template, mt_path, ("val", "test"), personal=False
            ).items()
        }
        population = fit_population(extractor, pool, axis=prior.axis, taste_prior=settings)
        row["PRISM"] = prism(extractor, population, prism_path, personal=False)["population"]
        found[f"{strength:g}"] = row
    return found


def shared_directions(
    extractor: FeatureExtractor,
    prior: RewardModel,
    path: Path,
    ranks: Sequence[int],
    spreads: Sequence[float] = (0.01, 0.03, 0.1, 0.3, 1.0),
) -> dict[str, dict[str, float]]:
    """Return MT-Bench `val` and `test` with each judge's embedding weights moved along a few
    directions shared across judges (low-rank user offsets, as LoRe learns them).

    A judge's directions are the leading principal directions of the other judges' departures
    on the embedding weights: each a MAP fit of that judge's train pairs on their leave-user-out
    population, with the population's own prior variance (1 / `population_embedding`). The judge
    then moves along `rank` of them by a MAP fit of their own train pairs, prior variance `spread`
    per direction. The population's judgement of quality stays whole in the shipped design; this
    measures what moving it through shared directions would give the real judges.
    """
    train, held_out, priors = mt_bench_judges(extractor, prior, path)
    embedding = slice(N_INTERPRETABLE, prior.dimensions)
    width = prior.dimensions - N_INTERPRETABLE
    rows = {user: pair_rows(priors[user], extractor, own) for user, own in train.items() if own}
    offsets = {user: own @ priors[user].coefficients for user, own in rows.items()}
    learning = np.full(width, prior.taste_prior.population_embedding)
    departures = {
        user: fit_logistic(own[:, embedding], learning, offset=offsets[user]) for user, own in rows.items()
    }

    def leading(user: str) -> np.ndarray:
        others = np.array([departure for other, departure in departures.items() if other != user])
        return np.linalg.svd(others, full_matrices=False)[2][: max(ranks)].T

    directions = {user: leading(user) for user in rows}

    def figures(models: dict[str, RewardModel]) -> dict[str, float]:
        return {
            f"MT-Bench {split}": macro(accuracy(extractor, models.__getitem__, train, held, adapt=False))
            for split, held in held_out.items()
        }

    found = {"population alone": figures(priors)}
    for rank in ranks:
        for spread in spreads:
            moved = dict(priors)
            for user, own in rows.items():
                basis = directions[user][:, :rank]
                move = fit_logistic(
                    own[:, embedding] @ basis, np.full(rank, 1 / spread), offset=offsets[user]
                )
                weights = priors[user].weights.copy()
                weights[embedding] += basis @ move
                moved[user] = replace(priors[user], weights=weights)
            found[f"{rank} direction{'s' if rank > 1 else ''}, spread {spread:g}"] = figures(moved)
    return found


def community(
    extractor: FeatureExtractor, prior: RewardModel, folder: Path, mt_path: Path, prism_path: Path
) -> dict[str, dict[str, float]]:
    """Return planted (n5, n10, n20), MT-Bench (val, test) and PRISM accuracy of the personal judge
    with the prior's own taste masses and with those the other users of the file share.

    MT-Bench users have leave-user-out priors; planted and PRISM users the shipped one.
    """
    found: dict[str, dict[str, float]] = {"the prior's own masses": {}, "shared by the other users": {}}

    def both(column: str, prior_of: Prior, train: Users, held: Users) -> None:
        for name, shared in zip(found, (False, True), strict=True):
            found[name][column] = macro(accuracy(extractor, prior_of, train, held, shared=shared))

    for size in SIZES:
        train, _, test = splits_of(read_pairs(folder / f"visible_n{size}.jsonl"))
        both(f"planted n{size}", lambda _: prior, train, test)
    train, held_out, priors = mt_bench_judges(extractor, prior, mt_path)
    for split, held in held_out.items():
        both(f"MT-Bench {split}", priors.__getitem__, train, held)
    pairs = read_pairs(prism_path)
    extractor.pair_differences(pairs)
    train, _, test = splits_of(pairs)
    both("PRISM", lambda _: prior, train, test)
    return found


def looping_copy(text: str, rng: random.Random) -> str:
    """Return the start of `text`, then a short phrase of it repeated over ten lines."""
    words = text.split()
    cut = min(len(words), max(6, int(len(words) * rng.uniform(0.2, 0.7))))
    unit = " ".join(words[max(0, cut - rng.randint(2, 6)) : cut])
    lines = "\n".join(" ".join([unit] * rng.randint(3, 6)) for _ in range(10))
    return " ".join(words[:cut]) + " " + lines


def answers_by_question(path: Path) -> tuple[dict[str, set[str]], dict[str, tuple[Turn, ...]]]:
    """Return the distinct answers in a pairs file per question, and each question's context."""
    answers: dict[str, set[str]] = defaultdict(set)
    contexts = {}
    for pair in read_pairs(path, skip_invalid=True):
        answers[pair.query].update((pair.chosen, pair.rejected))
        contexts[pair.query] = pair.context
    return answers, contexts


def loop_pairs(path: Path, *, seed: int = 0) -> list[PreferencePair]:
    """Pair each sane real answer (chosen) with a looping copy of another answer to its question."""
    rng = random.Random(seed)
    answers, contexts = answers_by_question(path)
    sane_limit = int(np.expm1(DEGENERATE_REPETITION))
    made = []
    for query, texts in sorted(answers.items()):
        usable = sorted(text for text in texts if len(text.split()) >= 10)
        for real in usable:
            if repetition(real) >= sane_limit:
                continue
            for other in usable:
                if other != real:
                    made.append(
                        PreferencePair(
                            user_id="loops",
                            context=contexts[query],
                            chosen=real,
                            rejected=looping_copy(other, rng),
                        )
                    )
    return made


def stray_pairs(path: Path, *, seed: int = 0) -> list[PreferencePair]:
    """Pair each real answer (chosen) with a real answer to another question, drawn at random."""
    rng = random.Random(seed)
    answers, contexts = answers_by_question(path)
    queries = sorted(answers)
    made = []
    for query in queries:
        for real in sorted(answers[query]):
            other = rng.choice([q for q in queries if q != query])
            made.append(
                PreferencePair(
                    user_id="strays",
                    context=contexts[query],
                    chosen=real,
                    rejected=rng.choice(sorted(answers[other])),
                )
            )
    return made


def against_broken(
    extractor: FeatureExtractor, prior: RewardModel, pairs: list[PreferencePair], planted: Path | None
) -> dict[str, float]:
    """Return the share of `pairs` (sane reply chosen) the population and the worst planted user get right."""
    extractor.pair_differences(pairs)
    name = pairs[0].user_id
    held = {name: pairs}
    found = {"population": macro(accuracy(extractor, lambda _: prior, {}, held, adapt=False))}
    if planted is not None:
        train, _, _ = splits_of(read_pairs(planted / "visible_n10.jsonl"))
        # each planted user judged with what the other planted users share
        everyone = SharedTastes.learn(lambda _: prior, extractor, train)
        worst = min(
            macro(accuracy(extractor, lambda _: prior, {name: own}, held, tastes=everyone.without(user)))
            for user, own in train.items()
        )
        found["worst planted user (10 pairs)"] = worst
    found["pairs"] = len(pairs)
    return found


def false_strays(extractor: FeatureExtractor, prior: RewardModel, paths: Sequence[Path]) -> dict[str, float]:
    """Count real pairs (both replies answer the question) in which the off-topic rule calls one stray."""
    found = {"pairs": 0.0, "chosen called stray": 0.0, "rejected called stray": 0.0}
    for path in paths:
        pairs = read_pairs(path, skip_invalid=True)
        chosen, rejected = extractor.pair_features(pairs)
        for first, second in zip(chosen, rejected, strict=True):
            called = strays(np.stack([first, second]), *prior.taste_prior.off_topic)
            found["chosen called stray"] += float(called[0, 1])
            found["rejected called stray"] += float(called[1, 0])
        found["pairs"] += len(pairs)
    return found


ABLATIONS: dict[str, Callable[[RewardModel], RewardModel]] = {
    "full design": lambda prior: prior,
    "no strong tastes (broad only)": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, strong_share=0.0, rule_share=0.0)
    ),
    "no rules (strong tastes as weights only)": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, rule_share=0.0)
    ),
    "rules from any number of pairs": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, rule_min_pairs=0)
    ),
    "tastes read from any difference, not only clear ones": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, shown_clear=prior.taste_prior.rule_clear)
    ),
    "rules decide every pick they can": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, rule_follow=(1.0,))
    ),
    "no question-kind tastes": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, conditional_share=0.0)
    ),
    "no lapse": lambda prior: replace(prior, taste_prior=replace(prior.taste_prior, lapse=1e-6)),
    "embedding on every question": lambda prior: replace(prior, questions=np.zeros((0, 0))),
    "strong tastes keep full trust in the population": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, strong_trust=(1.0,))
    ),
    "strong tastes never set the population aside": lambda prior: replace(
        prior,
        taste_prior=replace(
            prior.taste_prior, strong_trust=tuple(t for t in prior.taste_prior.strong_trust if t > 0)
        ),
    ),
    "relevance to the question a matter of taste": lambda prior: _personal_relevance(prior),
    # less prior mass on one-feature tastes: room for real judges, at the planted users' cost
    "rules 0.45, strong weights 0.6 of the rest": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, strong_share=0.6)
    ),
    "rules 0.3, strong weights 0.6 of the rest": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, rule_share=0.3, strong_share=0.6)
    ),
    "rules 0.2, strong weights 0.5 of the rest": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, rule_share=0.2, strong_share=0.5)
    ),
    "rules decide all or three quarters of the picks": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, rule_follow=(0.75, 1.0))
    ),
    "rules only ever decide half the picks": lambda prior: replace(
        prior, taste_prior=replace(prior.taste_prior, rule_follow=(0.5,))
    ),
}


def _personal_relevance(prior: RewardModel) -> RewardModel:
    """Return the prior with the question-relevance measurements open to a user's taste."""
    relevance = {"query_overlap", "query_similarity"}
    taste_prior = prior.taste_prior
    fixed = tuple(name for name in taste_prior.fixed_features if name not in relevance)
    # the artifact's between-user variances are 0 for fixed features: give them the typical one
    typical = float(np.median([v for v in taste_prior.user_variance if v > 0]))
    typical_interaction = float(np.median([v for v in taste_prior.interaction_variance if v > 0]))
    opened = [name in relevance for name in INTERPRETABLE_NAMES]
    return replace(
        prior,
        taste_prior=replace(
            taste_prior,
            fixed_features=fixed,
            user_variance=tuple(
                typical if open_ else v for open_, v in zip(opened, taste_prior.user_variance, strict=True)
            ),
            interaction_variance=tuple(
                typical_interaction if open_ else v
                for open_, v in zip(opened, taste_prior.interaction_variance, strict=True)
            ),
        ),
    )


def ablate(
    extractor: FeatureExtractor, prior: RewardModel, folder: Path, mt_path: Path
) -> dict[str, dict[str, float]]:
    """Return planted (n5, n10, n20) and MT-Bench val accuracy with each part of the design removed.

    A part removed has no prior mass, so no taste the other users share brings it back; with
    shared tastes on, one more row fits every user with the prior's own masses.
    """
    variants: list[tuple[str, RewardModel, bool | None]] = [
        (name, change(prior), None) for name, change in ABLATIONS.items()
    ]
    if SHARED_TASTES:
        variants.insert(1, ("no shared tastes (the prior's own masses)", prior, False))
    found = {}
    for name, changed, shared in variants:
        row = {}
        for size in SIZES:
            pairs = read_pairs(folder / f"visible_n{size}.jsonl")
            train, _, test = splits_of(pairs)
            row[f"planted n{size}"] = macro(
                accuracy(extractor, lambda _, m=changed: m, train, test, shared=shared)
            )
        row["MT-Bench val"] = mt_bench(extractor, changed, mt_path, ("val",), shared=shared)["val"][
            "personal"
        ]
        found[name] = row
    return found


# the parts of the design that decide what a user with 2-3 pairs reads by chance, each changed in
# turn on PRISM
PRISM_VARIANTS = (
    "full design",
    "rules from any number of pairs",
    "tastes read from any difference, not only clear ones",
    "no rules (strong tastes as weights only)",
    "no strong tastes (broad only)",
)


def prism_over_splits(
    extractor: FeatureExtractor, prior: RewardModel, path: Path, count: int
) -> dict[str, dict[str, float]]:
    """Return PRISM accuracy over `count` seeded splits (seeds 0 to count-1): each judge's mean,
    the spread of its split figures, and in how many splits it is under the population alone.

    One split holds about 28 test pairs and 2-3 train pairs a user: too few to rank two judges;
    each split re-deals which pairs train and which test.
    """
    pairs = read_pairs(path)
    extractor.pair_differences(pairs)
    figures: dict[str, list[float]] = defaultdict(list)
    for seed in range(count):
        train, _, test = splits_of(pairs, seed)
        figures["population alone"].append(
            macro(accuracy(extractor, lambda _: prior, train, test, adapt=False))
        )
        for name in PRISM_VARIANTS:
            changed = ABLATIONS[name](prior)
            figures[name].append(macro(accuracy(extractor, lambda _, m=changed: m, train, test)))
        figures["prefer the longer reply"].append(
            macro(
                {
                    user: asyncio.run(evaluate(PreferLongerJudge(), own)).macro_accuracy
                    for user, own in test.items()
                }
            )
        )
    baseline = np.array(figures["population alone"])
    return {
        name: {
            "mean": float(np.mean(values)),
            "sd over splits": float(np.std(values)),
            "splits under the population": float((np.array(values) < baseline).sum()),
        }
        for name, values in figures.items()
    }


def implicit(extractor: FeatureExtractor, prior: RewardModel, folder: Path) -> dict[str, dict[str, float]]:
    """Return planted accuracy at 10 training pairs, all stated or every other one inferred."""
    pairs = read_pairs(folder / "visible_n10.jsonl")
    train, _, test = splits_of(pairs)
    found = {"all 10 stated picks": macro(accuracy(extractor, lambda _: prior, train, test))}
    for source in ("edit", "regenerate"):
        inferred = {
            user: [pair.model_copy(update={"source": source}) if i % 2 else pair for i, pair in enumerate(ps)]
            for user, ps in train.items()
        }
        found[f"5 stated + 5 {source}"] = macro(accuracy(extractor, lambda _: prior, inferred, test))
    return {"planted n10": found}


def speed(
    extractor: FeatureExtractor, prior: RewardModel, folder: Path, *, rounds: int = 20
) -> dict[str, float]:
    """Return median milliseconds to fit a user on 25 pairs and to compare one pair, features cached."""
    pairs = read_pairs(folder / "visible_n20.jsonl")
    extractor.pair_differences(pairs)
    own = by_user([p for p in pairs if split_of(p) in ("train", "val")])
    user_pairs = next(ps for ps in own.values() if len(ps) >= 25)[:25]
    fits, compares = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        judge = OfflineJudge.for_user(prior, extractor, user_pairs)
        fits.append(time.perf_counter() - started)
        pair = user_pairs[len(compares) % len(user_pairs)]
        started = time.perf_counter()
        asyncio.run(judge.compare(pair.context, pair.chosen, pair.rejected))
        compares.append(time.perf_counter() - started)
    return {
        "fit 25 pairs (ms)": 1000 * statistics.median(fits),
        "compare (ms)": 1000 * statistics.median(compares),
    }


def learning_curve_svg(table: dict[str, dict[str, float]]) -> str:
    """Draw accuracy against training pairs, one line per taste, as a small SVG."""
    width, height, left, bottom, top = 680, 320, 50, 40, 20
    plot_w, plot_h = width - left - 230, height - bottom - top

    def x(size: int) -> float:
        return left + plot_w * SIZES.index(size) / (len(SIZES) - 1)

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - 40) / 60)

    colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#333333"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for value in range(40, 101, 10):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#ddd"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value}%</text>')
    for size in SIZES:
        parts.append(f'<text x="{x(size):.1f}" y="{height - bottom + 16}" text-anchor="middle">{size}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">training pairs per user</text>'
    )
    rows = [name for name in table if name != "population alone"]
    for index, name in enumerate(rows):
        colour = colours[index % len(colours)]
        points = " ".join(f"{x(size):.1f},{y(table[name][f'n{size}']):.1f}" for size in SIZES)
        dash = ' stroke-dasharray="5,3"' if name == "all planted users" else ""
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(
            f'<text x="{left + plot_w + 8}" y="{top + 14 * index + 10}" fill="{colour}">{name}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    columns = list(dict.fromkeys(column for row in rows.values() for column in row))
    print(f"\n{title}")
    print("| | " + " | ".join(columns) + " |")
    print("| --- |" + " ---: |" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.1f}" if c in row else "" for c in columns) + " |")


def _numbers(kind: Callable[[str], float]) -> Callable[[str], list[float]]:
    """Return a parser of comma-separated numbers of `kind` ("1,3,10")."""
    return lambda text: [kind(value) for value in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    """Run the evaluations named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path("../shared/data")
    parser.add_argument("--planted", type=Path, default=data / "planted")
    parser.add_argument("--mt-bench", type=Path, default=data / "mt_bench_human" / "pairs.jsonl")
    parser.add_argument("--prism", type=Path, default=data / "prism_examples" / "pairs.jsonl")
    parser.add_argument(
        "--prior", type=Path, default=None, help="a prior artifact (default: the shipped one)"
    )
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache/minilm_mt_bench.npz"))
    parser.add_argument("--curve", type=Path, default=None, help="write the learning curve as SVG here")
    parser.add_argument("--ablate", action="store_true", help="also remove each part of the design in turn")
    parser.add_argument("--speed", action="store_true", help="also time a fit and a comparison")
    parser.add_argument("--implicit", action="store_true", help="also weigh half the pairs as inferred ones")
    parser.add_argument(
        "--strengths",
        type=_numbers(float),
        default=None,
        help="also the population alone at each L2 strength on its embedding weights, e.g. 1,3,10,30",
    )
    parser.add_argument(
        "--prism-splits",
        type=int,
        default=0,
        help="also PRISM over this many seeded splits, with the one-feature tastes removed in turn",
    )
    parser.add_argument(
        "--shared-directions",
        type=_numbers(int),
        default=None,
        help="also MT-Bench with judges moved along this many directions shared across judges, e.g. 1,2,4",
    )
    parser.add_argument(
        "--community",
        action="store_true",
        help="also the personal judge with the prior's own taste masses beside those the users share",
    )
    parser.add_argument(
        "--no-shared-tastes",
        action="store_true",
        help="fit every user with the prior's own taste masses, not those the file's other users share",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    global SHARED_TASTES
    SHARED_TASTES = not args.no_shared_tastes

    from memory.embeddings import MiniLMEmbeddings

    prior = RewardModel.load(args.prior) if args.prior else RewardModel.load()
    extractor = FeatureExtractor(CachedEmbedder(MiniLMEmbeddings(), args.cache))
    report: dict[str, object] = {"prior": prior.description}
    judged = planted_users(extractor, prior, args.planted)
    planted = planted_table(extractor, prior, args.planted, judged)
    report["planted"] = planted
    report["looping_picks"] = looping_picks(extractor, args.planted)
    report["ceiling"] = planted_ceiling(extractor, prior, args.planted) | following_the_taste(
        extractor, prior, args.planted
    )
    report["short_of_the_ceiling"] = short_of_the_ceiling(extractor, prior, args.planted, judged)
    report["mt_bench"] = mt_bench(extractor, prior, args.mt_bench, ("val", "test"))
    report["prism"] = prism(extractor, prior, args.prism)
    report["loops"] = against_broken(extractor, prior, loop_pairs(args.mt_bench), args.planted)
    no_rule = replace(prior, taste_prior=replace(prior.taste_prior, off_topic=()))
    elsewhere = stray_pairs(args.mt_bench)
    report["strays"] = {
        "with the rule": against_broken(extractor, prior, elsewhere, args.planted),
        "without it": against_broken(extractor, no_rule, elsewhere, args.planted),
    }
    report["false_strays"] = false_strays(
        extractor, prior, [args.mt_bench, args.prism, args.planted / f"visible_n{SIZES[-1]}.jsonl"]
    )
    if args.ablate:
        report["ablations"] = ablate(extractor, prior, args.planted, args.mt_bench)
    if args.speed:
        report["speed"] = speed(extractor, prior, args.planted)
    if args.implicit:
        report["implicit"] = implicit(extractor, prior, args.planted)
    if args.prism_splits:
        report["prism_splits"] = prism_over_splits(extractor, prior, args.prism, args.prism_splits)
    if args.shared_directions:
        report["shared_directions"] = shared_directions(
            extractor, prior, args.mt_bench, args.shared_directions
        )
    if args.community:
        report["community"] = community(extractor, prior, args.planted, args.mt_bench, args.prism)
    if args.strengths:
        report["strengths"] = embedding_strengths(extractor, prior, args.mt_bench, args.prism, args.strengths)
    extractor.embedder.save(args.cache)
    if args.curve:
        args.curve.parent.mkdir(parents=True, exist_ok=True)
        args.curve.write_text(learning_curve_svg(planted), encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"prior: {prior.description}")
    masses = "shared by the other users of each file" if SHARED_TASTES else "the prior's own"
    print(f"taste masses: {masses}")
    print_table("Planted tastes (test pairs, % accuracy)", planted)
    print_table("Planted picks of a reply that loops", {"planted": report["looping_picks"]})  # type: ignore[dict-item]
    if report["ceiling"]:
        print_table("Planted users judged by learners told part of their taste", report["ceiling"])  # type: ignore[arg-type]
        print_table(
            "Planted users 5 points or more under their own rule (first 10 train picks against it)",
            report["short_of_the_ceiling"],  # type: ignore[arg-type]
        )
    print_table("MT-Bench human judges, leave-user-out priors", report["mt_bench"])  # type: ignore[arg-type]
    print_table("PRISM examples (seeded split)", {"PRISM": report["prism"]})  # type: ignore[dict-item]
    print_table("Sane answer against a looping copy of another", {"loops": report["loops"]})  # type: ignore[dict-item]
    print_table("Answer against an answer to another question", report["strays"])  # type: ignore[arg-type]
    print_table(
        "Real pairs the off-topic rule calls stray", {"MT-Bench, PRISM, planted n20": report["false_strays"]}
    )  # type: ignore[dict-item]
    if args.ablate:
        print_table("Ablations", report["ablations"])  # type: ignore[arg-type]
    if args.speed:
        print_table("Speed, median of 20 (features cached)", {"offline model": report["speed"]})  # type: ignore[dict-item]
    if args.implicit:
        print_table("Inferred pairs (planted, 10 training pairs)", report["implicit"])  # type: ignore[arg-type]
    if args.prism_splits:
        print_table(f"PRISM examples over {args.prism_splits} seeded splits", report["prism_splits"])  # type: ignore[arg-type]
    if args.strengths:
        print_table("The population alone by L2 strength on its embedding weights", report["strengths"])  # type: ignore[arg-type]
    if args.community:
        print_table("Taste masses: the prior's own, or shared by the other users", report["community"])  # type: ignore[arg-type]
    if args.shared_directions:
        print_table(
            "MT-Bench judges moved along directions shared across judges",
            report["shared_directions"],  # type: ignore[arg-type]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
