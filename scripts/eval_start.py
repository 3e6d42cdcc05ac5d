"""Measure what starting from an archetype buys a new user's offline judge; print a table (or JSON).

    python scripts/eval_start.py [--planted ../shared/data/planted] [--json]

On the planted users (`visible_n5.jsonl`: simulated users over real MT-Bench answers, 20 test
pairs each), each user's offline judge is fitted on their first 0, 1, 3 and 5 train pairs,
starting from the population prior or from each shipped archetype (`agent.starting`), and scored
on their test pairs (`agent.evaluation`: both reply orders, macro over users), per planted taste.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The fits are small matrix solves; threaded BLAS only fights over the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from agent.archetypes import load_archetypes
from agent.embedding import CachedEmbedder
from agent.features import FeatureExtractor
from agent.formats import read_pairs
from agent.reward_model import RewardModel
from agent.starting import starting_prior
from scripts.eval_offline import accuracy, macro, splits_of, taste_of

SIZES = (0, 1, 3, 5)


def start_table(extractor: FeatureExtractor, prior: RewardModel, folder: Path) -> dict[str, dict[str, float]]:
    """Return accuracy per planted taste, per start (population or archetype) and training size."""
    pairs = read_pairs(folder / "visible_n5.jsonl")
    extractor.pair_differences(pairs)
    train, _, test = splits_of(pairs)
    archetypes = load_archetypes()
    table: dict[str, dict[str, float]] = {}
    for key in (None, *(archetype.key for archetype in archetypes)):
        start = starting_prior(prior, archetypes, key)
        for size in SIZES:
            first = {user: own[:size] for user, own in train.items()}
            per_user = accuracy(extractor, lambda _user, start=start: start, first, test)
            column = f"{key or 'population'} n{size}"
            for name in sorted({taste_of(user) for user in per_user}):
                table.setdefault(name, {})[column] = macro(
                    {user: value for user, value in per_user.items() if taste_of(user) == name}
                )
            table.setdefault("all planted users", {})[column] = macro(per_user)
    return table


def main(argv: list[str] | None = None) -> int:
    """Print the table of accuracy by start and training size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", type=Path, default=Path("../shared/data/planted"))
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache/minilm_mt_bench.npz"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from memory.embeddings import MiniLMEmbeddings

    extractor = FeatureExtractor(CachedEmbedder(MiniLMEmbeddings(), args.cache))
    table = start_table(extractor, RewardModel.load(), args.planted)
    extractor.embedder.save(args.cache)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    columns = list(next(iter(table.values())))
    print("| planted taste | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[column]:.1f}" for column in columns) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
