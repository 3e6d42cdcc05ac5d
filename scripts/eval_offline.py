"""Evaluate the offline reward model on MT-Bench human judges; print a table (or JSON).

    python scripts/eval_offline.py --data ../shared/data/mt_bench_human/pairs.jsonl \\
        [--split val|test] [--json] [--tune] [--speed] [--sample-user]

Rows: prefer-the-longer-reply; the population model alone (each tested user's prior is fitted on
the `population` and `train` pairs of every other user); the population model adapted on the
user's own `train` pairs. Accuracy counts both reply orders, macro over users, with a 95%
bootstrap interval (agent.evaluation). `--split` picks the evaluated split (default `test`).
`--tune` grid-searches the regularization on the `val` split (never on `test`) and prints each
setting's validation accuracy. `--sample-user` fits the shipped prior on the demo's sample user
(`persona_agent/data/sample_user.jsonl`): its first 8 pairs, then its last 4 held out, and
prints the persona of all 12.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The fits are small matrix solves; threaded BLAS only fights over the cores (20x slower under load).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from agent.evaluation import AccuracyReport, evaluate
from agent.features import CachedEmbedder, FeatureExtractor
from agent.formats import read_pairs, split_of
from agent.records import PreferencePair
from agent.reward_model import (
    OfflineJudge,
    Regularization,
    RewardModel,
    describe_preferences,
    evaluate_offline,
    fit_user,
    leave_user_out_priors,
    render_persona,
)

SAMPLE_USER_FILE = Path(__file__).resolve().parents[1] / "persona_agent" / "data" / "sample_user.jsonl"

LABELS = {
    "prefer_longer": "prefer the longer reply",
    "population": "population model only",
    "population_plus_user": "population + per-user",
}


def build_extractor(cache: Path | None) -> FeatureExtractor:
    """Return a feature extractor on MiniLM embeddings, cached in `cache` when given."""
    from memory.embeddings import MiniLMEmbeddings

    return FeatureExtractor(CachedEmbedder(MiniLMEmbeddings(), cache))


def print_table(reports: dict[str, AccuracyReport], *, title: str) -> None:
    """Print one row per method: macro accuracy, CI, users and pairs."""
    print(title)
    print(f"{'method':28s} {'macro acc':>9s}  {'95% CI':>15s}  {'users':>5s}  {'pairs':>5s}")
    for key, report in reports.items():
        print(
            f"{LABELS.get(key, key):28s} {report.macro_accuracy:9.1%}  "
            f"[{report.ci_low:5.1%}, {report.ci_high:5.1%}]  {report.n_users:5d}  {report.n_pairs:5d}"
        )


def tune(pairs: list[PreferencePair], extractor: FeatureExtractor, *, user_only: bool) -> Regularization:
    """Grid-search the regularization on the val split; print every setting; return the best."""
    users = sorted({pair.user_id for pair in pairs if split_of(pair) == "val"})
    shipped = Regularization()
    population_grid = (
        [(shipped.population_interpretable, shipped.population_embedding)]
        if user_only
        else list(itertools.product((0.1, 0.3, 1.0, 3.0), (0.3, 1.0, 3.0, 10.0)))
    )
    user_grid = [
        (strength, tuple(weaker), embedding)
        for strength, weaker, embedding in itertools.product(
            (3.0, 10.0, 30.0, 100.0), ((), (3.0, 1.0)), (None, 10.0, 100.0)
        )
        if all(value < strength for value in weaker)
    ]
    rows = []
    for pop_i, pop_e in population_grid:
        base = Regularization(population_interpretable=pop_i, population_embedding=pop_e)
        priors = leave_user_out_priors(pairs, extractor, users, regularization=base)
        for strength, weaker, embedding in user_grid:
            reg = replace(
                base, user_interpretable=strength, user_interpretable_weaker=weaker, user_embedding=embedding
            )
            reports = evaluate_offline(pairs, extractor, regularization=reg, eval_split="val", priors=priors)
            population, personal = (
                reports[key].macro_accuracy for key in ("population", "population_plus_user")
            )
            rows.append((reg, population, personal))
            print(f"{reg}  population {population:.3f}  +user {personal:.3f}", flush=True)
    best = max(rows, key=lambda row: row[2])
    print(f"best on val: {best[0]} (population {best[1]:.3f}, +user {best[2]:.3f})")
    return best[0]


def sample_user(extractor: FeatureExtractor) -> dict[str, object]:
    """Fit the shipped prior on the sample user's first 8 pairs; score the last 4; persona of all 12."""
    prior = RewardModel.load()
    pairs = read_pairs(SAMPLE_USER_FILE)
    train, held_out = pairs[:8], pairs[8:]
    personal = fit_user(prior, extractor, train)
    reports = {
        name: asyncio.run(evaluate(OfflineJudge(model, extractor), held_out))
        for name, model in (("population", prior), ("population_plus_user", personal))
    }
    everything = fit_user(prior, extractor, pairs)
    return {
        **{f"{name} on the last {len(held_out)}": report.macro_accuracy for name, report in reports.items()},
        "pull on the first 8": personal.user_strength,
        "pull on all 12": everything.user_strength,
        "persona of all 12": render_persona(describe_preferences(everything, prior)),
    }


def measure_speed(pairs: list[PreferencePair], extractor: FeatureExtractor) -> dict[str, float]:
    """Time a 25-pair user fit (features cached) and one cached pair comparison, in milliseconds."""
    prior = RewardModel.load()
    by_user: dict[str, list[PreferencePair]] = {}
    for pair in pairs:
        by_user.setdefault(pair.user_id, []).append(pair)
    user_pairs = max(by_user.values(), key=len)[:25]
    fit_times = []
    for _ in range(20):
        started = time.perf_counter()
        model = fit_user(prior, extractor, user_pairs)
        fit_times.append(time.perf_counter() - started)
    judge = OfflineJudge(model, extractor)
    pair = user_pairs[0]
    compare_times = []
    for _ in range(200):
        started = time.perf_counter()
        asyncio.run(judge.compare(pair.context, pair.chosen, pair.rejected))
        compare_times.append(time.perf_counter() - started)
    return {
        "fit_25_pairs_ms_median": 1000 * statistics.median(fit_times),
        "fit_25_pairs_ms_max": 1000 * max(fit_times),
        "compare_ms_median": 1000 * statistics.median(compare_times),
        "compare_ms_max": 1000 * max(compare_times),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mt_bench_human/pairs.jsonl"))
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache/minilm_mt_bench.npz"))
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("--speed", action="store_true", help="time a user fit and a comparison")
    parser.add_argument("--split", choices=("val", "test"), default="test", help="the split to evaluate")
    parser.add_argument("--tune", action="store_true", help="grid-search regularization on the val split")
    parser.add_argument(
        "--tune-user-only", action="store_true", help="with --tune: keep the shipped population strengths"
    )
    parser.add_argument("--sample-user", action="store_true", help="fit and score the demo's sample user")
    args = parser.parse_args(argv)

    pairs = read_pairs(args.data, skip_invalid=True)
    extractor = build_extractor(args.cache)
    started = time.perf_counter()
    extractor.pair_differences(pairs)
    extractor.embedder.save(args.cache)
    print(f"features of {len(pairs)} pairs in {time.perf_counter() - started:.1f}s", file=sys.stderr)

    if args.speed:
        for key, value in measure_speed(pairs, extractor).items():
            print(f"{key:26s} {value:8.2f}")
        return 0
    if args.tune:
        tune(pairs, extractor, user_only=args.tune_user_only)
        return 0
    if args.sample_user:
        for key, shown in sample_user(extractor).items():
            print(f"{key:34s} {shown}")
        return 0

    started = time.perf_counter()
    reports = evaluate_offline(pairs, extractor, eval_split=args.split)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({key: report.model_dump(mode="json") for key, report in reports.items()}, indent=2))
    else:
        print_table(reports, title=f"MT-Bench human judges, {args.split} split ({elapsed:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
