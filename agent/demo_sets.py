"""The candidate demo sets of a SynthesizeMe fit and how the winner is chosen.

A fit (`agent.synthesis`) scores a few demo sets on the user's val pairs: none, labelled pairs
(which reply won, no reasoning), the verified reasoning, and optionally seeded random draws of
it. `select_best` keeps the highest val accuracy, and on a tie the fewest demos.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from agent.records import Demo, PreferencePair
from agent.splits import demos_without

CANDIDATE_SETS = ("persona only", "labelled", "verified")


class CandidateScore(BaseModel):
    """Val accuracy of one candidate demo set under the new persona."""

    model_config = ConfigDict(frozen=True)

    name: str
    demo_pair_ids: tuple[str, ...]
    val_accuracy: float | None


def labelled_demo(pair: PreferencePair) -> Demo:
    """Show a past choice with its label only: which reply the user chose."""
    return Demo(pair=pair, why="a labelled choice of this user")


def labelled_pool(train: Sequence[PreferencePair], count: int, seed: int) -> list[PreferencePair]:
    """Draw `count` + 1 train pairs (seeded): any pair's `count` others come from them."""
    return random.Random(f"{seed}:labelled").sample(list(train), min(len(train), count + 1))


def others(pool: Sequence[PreferencePair], pair: PreferencePair, count: int) -> list[Demo]:
    """Return up to `count` labelled demos from `pool`, never the pair itself or a sibling of it."""
    return demos_without(pair, [labelled_demo(other) for other in pool])[:count]


def select_best(scores: Sequence[CandidateScore]) -> CandidateScore:
    """Pick the highest val accuracy; on a tie the fewest demos, then the earlier candidate."""
    if not scores:
        raise ValueError("no candidate demo sets to choose from")
    ranked = sorted(
        enumerate(scores),
        key=lambda item: (-(item[1].val_accuracy or 0.0), len(item[1].demo_pair_ids), item[0]),
    )
    return ranked[0][1]


def merge_demos(selected: Sequence[Demo], retrieved: Sequence[Demo]) -> list[Demo]:
    """Return the val-selected demos, then the retrieved ones that show other pairs."""
    shown = {demo.pair.id for demo in selected}
    return [*selected, *(demo for demo in retrieved if demo.pair.id not in shown)]


def demo_ids(demos: Sequence[Demo]) -> tuple[str, ...]:
    return tuple(demo.pair.id for demo in demos)


def newest_demos(demos: Sequence[Demo], count: int) -> list[Demo]:
    return sorted(demos, key=lambda demo: demo.pair.created_at)[-count:] if count > 0 else []


def candidate_sets(labelled: list[Demo], verified: list[Demo]) -> dict[str, list[Demo]]:
    """Build the candidate demo sets, dropping empty and duplicate ones (none is always kept)."""
    options: dict[str, list[Demo]] = {CANDIDATE_SETS[0]: []}
    seen: set[tuple[tuple[str, bool], ...]] = {()}
    for name, demos in zip(CANDIDATE_SETS[1:], (labelled, verified), strict=True):
        if _set_key(demos) not in seen:
            seen.add(_set_key(demos))
            options[name] = demos
    return options


def _set_key(demos: Sequence[Demo]) -> tuple[tuple[str, bool], ...]:
    """Identify a demo set by its pairs and whether each shows reasoning."""
    return tuple((demo.pair.id, bool(demo.reasoning)) for demo in demos)


def random_sets(
    demos: Sequence[Demo], options: dict[str, list[Demo]], count: int, max_demos: int, seed: int
) -> dict[str, list[Demo]]:
    """Draw up to `count` demo sets from `demos` (first copy of a pair wins), skipping sets in `options`."""
    pool: list[Demo] = []
    for demo in demos:
        if demo.pair.id not in {kept.pair.id for kept in pool}:
            pool.append(demo)
    if not pool or max_demos < 1:
        return {}
    rng = random.Random(f"{seed}:demo-sets")
    seen = {frozenset(demo_ids(existing)) for existing in options.values()}
    drawn: dict[str, list[Demo]] = {}
    for number in range(1, count + 1):
        sample = rng.sample(pool, rng.randint(1, min(max_demos, len(pool))))
        if frozenset(demo_ids(sample)) not in seen:
            seen.add(frozenset(demo_ids(sample)))
            drawn[f"random {number}"] = sample
    return drawn
