"""Fit the population prior of the offline reward model and save it as a JSON artifact.

    python scripts/fit_prior.py --data ../shared/data/mt_bench_human/pairs.jsonl \\
        --out agent/data/population_prior.json

Three parts, all from the data file:

* the question-kind probe: a logistic fit on the embeddings of the file's questions telling the
  technical categories (coding, math, reasoning, STEM, extraction) from the open-ended ones
  (writing, roleplay, humanities);
* the population weights, fitted on every user's `train` and `population` pairs (no `val`, no
  `test`); evaluations refit them without each evaluated user (`agent.evaluation`);
* the between-user variance of each interpretable weight, estimated by empirical Bayes over
  the users' `train` pairs (`agent.taste.estimate_user_variance`), each user's departure
  measured from a population fitted without them;
* the archetypes a new user may start from (`agent.archetypes`): clusters of those users'
  departures from the population, written beside the prior (`--archetypes`).

Rerun it whenever `agent.features.FEATURES_VERSION` changes: a prior of another version is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The fit is one small matrix solve per step; threaded BLAS only fights over the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from agent.archetypes import DEFAULT_ARCHETYPES_PATH, fit_archetypes, save_archetypes
from agent.embedding import CachedEmbedder
from agent.evaluation import leave_user_out_priors
from agent.features import MINILM_OFF_TOPIC, N_INTERPRETABLE, FeatureExtractor
from agent.formats import read_pairs, split_of
from agent.reward_model import (
    DEFAULT_PRIOR_PATH,
    TastePrior,
    fit_population,
    fit_question_kind,
    pair_rows,
)
from agent.taste import estimate_user_variance

TECHNICAL = frozenset({"coding", "math", "reasoning", "stem", "extraction"})
OPEN_ENDED = frozenset({"writing", "roleplay", "humanities"})
# users with fewer train pairs than this say too little about their own weights to count
MIN_USER_PAIRS = 3


def question_categories(path: Path) -> dict[str, str]:
    """Return each question's category, as the data file gives it."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if isinstance(record.get("category"), str):
                found[record["context"][-1]["content"]] = record["category"]
    return found


def main(argv: list[str] | None = None) -> int:
    """Fit and save the prior from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mt_bench_human/pairs.jsonl"))
    parser.add_argument("--out", type=Path, default=DEFAULT_PRIOR_PATH)
    parser.add_argument("--archetypes", type=Path, default=DEFAULT_ARCHETYPES_PATH)
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache/minilm_mt_bench.npz"))
    args = parser.parse_args(argv)

    from memory.embeddings import MiniLMEmbeddings

    pairs = [p for p in read_pairs(args.data, skip_invalid=True) if split_of(p) in ("train", "population")]
    extractor = FeatureExtractor(CachedEmbedder(MiniLMEmbeddings(), args.cache))
    started = time.perf_counter()
    extractor.pair_differences(pairs)
    categories = question_categories(args.data)
    questions = sorted(q for q, category in categories.items() if category in TECHNICAL | OPEN_ENDED)
    if not questions:
        raise SystemExit(f"{args.data}: no question carries a category to fit the question-kind probe on")
    axis = fit_question_kind(
        extractor.embedder.embed(questions), np.array([categories[q] in TECHNICAL for q in questions])
    )
    extractor.embedder.save(args.cache)
    users = len({pair.user_id for pair in pairs})
    model = fit_population(
        extractor,
        pairs,
        axis=axis,
        taste_prior=TastePrior(off_topic=MINILM_OFF_TOPIC),
        description=f"population prior: {args.data.parent.name} train+population pairs of all {users} users",
    )
    by_user = defaultdict(list)
    for pair in pairs:
        if split_of(pair) == "train":
            by_user[pair.user_id].append(pair)
    measured = sorted(user for user, own in by_user.items() if len(own) >= MIN_USER_PAIRS)
    # each user's departure is measured from a population that never saw their pairs
    without = leave_user_out_priors(pairs, extractor, measured, template=model)
    rows = [pair_rows(model, extractor, by_user[user]) for user in measured]
    offsets = [
        pair_rows(without[user], extractor, by_user[user]) @ without[user].coefficients for user in measured
    ]
    variances = estimate_user_variance(model, rows, offsets)
    model = replace(
        model,
        taste_prior=replace(
            model.taste_prior,
            user_variance=tuple(float(v) for v in variances[:N_INTERPRETABLE]),
            interaction_variance=tuple(float(v) for v in variances[N_INTERPRETABLE:]),
        ),
    )
    model.save(args.out)
    archetypes = fit_archetypes(model, rows)
    save_archetypes(archetypes, args.archetypes)
    print(
        f"fitted on {model.n_pairs} pairs of {model.n_users} users, between-user variances from "
        f"{len(rows)} users, in {time.perf_counter() - started:.1f}s; "
        f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)"
    )
    for archetype in archetypes:
        print(f"archetype {archetype.key} ({archetype.users} users): {archetype.title}")
    print(f"wrote {args.archetypes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
