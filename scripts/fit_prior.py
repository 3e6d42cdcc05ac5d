"""Fit the population prior of the offline reward model and save it as a JSON artifact.

    python scripts/fit_prior.py --data ../shared/data/mt_bench_human/pairs.jsonl \\
        --out agent/data/population_prior.json

The shipped artifact is fitted on every user's `train` and `population` pairs (no `val`, no
`test`). Evaluations must not use it for users it was fitted on: `scripts/eval_offline.py`
refits a leave-user-out prior for each tested user instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The fit is one small matrix solve per step; threaded BLAS only fights over the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from agent.features import CachedEmbedder, FeatureExtractor
from agent.formats import read_pairs, split_of
from agent.reward_model import DEFAULT_PRIOR_PATH, fit_population


def main(argv: list[str] | None = None) -> int:
    """Fit and save the prior from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mt_bench_human/pairs.jsonl"))
    parser.add_argument("--out", type=Path, default=DEFAULT_PRIOR_PATH)
    parser.add_argument("--splits", default="train,population", help="comma-separated splits to fit on")
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache/minilm_mt_bench.npz"))
    args = parser.parse_args(argv)

    from memory.embeddings import MiniLMEmbeddings

    splits = set(args.splits.split(","))
    pairs = [pair for pair in read_pairs(args.data, skip_invalid=True) if split_of(pair) in splits]
    extractor = FeatureExtractor(CachedEmbedder(MiniLMEmbeddings(), args.cache))
    started = time.perf_counter()
    extractor.pair_differences(pairs)
    extractor.embedder.save(args.cache)
    users = len({pair.user_id for pair in pairs})
    model = fit_population(
        extractor,
        pairs,
        description=(
            f"population prior: {args.data.parent.name} {'+'.join(sorted(splits))} pairs of all {users} users"
        ),
    )
    model.save(args.out)
    print(
        f"fitted on {model.n_pairs} pairs of {model.n_users} users in {time.perf_counter() - started:.1f}s; "
        f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
