"""Leak-free splits of preference pairs: siblings stay together, held-out pairs never train.

Pairs that share a context and a chosen reply are *siblings* (one ``choice`` feedback stores N-1
of them; PRISM and MT-Bench have them too): they always land in the same split, since a sibling
in train would show the judge the answer to its twin in val or test.

- `split_train_val`: the product's split of a user's stored pairs. A sibling group validates or
  trains by a hash of its content (`holds_out`), fixed when the pair is created, so a pair any
  persona was fitted on never validates a later persona, however many pairs arrive between fits.
- `split_user_pairs`: a benchmark file's split of one user's pairs: the file's own ``split``
  labels (a group spanning labels keeps only its most held-out members: test, then val), or a
  seeded shuffle of the sibling groups into test (30%), val (20%) and train.

Demos never include the pair being judged: `demos_without` filters them, `check_no_demo_leak`
refuses a judge that would show one.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.formats import split_of
from agent.records import Demo, PreferencePair

VAL_EVERY = 3  # one sibling group in three validates
MIN_TRAIN_PAIRS = 2
FILE_SPLITS = ("test", "val", "train")  # most held out first


def sibling_key(pair: PreferencePair) -> str:
    """Return the identity a pair shares with its siblings: a hash of its context and chosen reply."""
    canonical = json.dumps(
        [[[turn.role, turn.content] for turn in pair.context], pair.chosen],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def holds_out(pair: PreferencePair) -> bool:
    """Say whether the pair (with all its siblings) is a validation pair, never a training one."""
    digest = hashlib.sha256(f"validation:{sibling_key(pair)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % VAL_EVERY == 0


def sibling_groups(pairs: Iterable[PreferencePair]) -> dict[str, list[PreferencePair]]:
    """Group pairs by `sibling_key`, in first-seen order."""
    groups: dict[str, list[PreferencePair]] = defaultdict(list)
    for pair in pairs:
        groups[sibling_key(pair)].append(pair)
    return dict(groups)


def split_train_val(pairs: Sequence[PreferencePair]) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Split a user's stored pairs oldest first into train and val by `holds_out`."""
    ordered = sorted(pairs, key=lambda pair: (pair.created_at, pair.id))
    return [p for p in ordered if not holds_out(p)], [p for p in ordered if holds_out(p)]


def split_user_pairs(
    pairs: Sequence[PreferencePair], *, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair], list[PreferencePair], str]:
    """Return (train, val, test, how) for one user's pairs of a benchmark file (see the module)."""
    groups = sibling_groups(pairs)
    labelled = [pair for pair in pairs if split_of(pair) in FILE_SPLITS]
    if labelled:
        parts: dict[str, list[PreferencePair]] = {name: [] for name in FILE_SPLITS}
        dropped = 0
        for group in groups.values():
            labels = {split_of(pair) for pair in group}
            home = next((name for name in FILE_SPLITS if name in labels), None)
            if home is None:
                continue
            parts[home].extend(pair for pair in group if split_of(pair) == home)
            dropped += sum(1 for pair in group if split_of(pair) in FILE_SPLITS and split_of(pair) != home)
        how = "the file's split" + (f", {dropped} siblings of held-out pairs left out" if dropped else "")
        return parts["train"], parts["val"], parts["test"], how
    ordered = sorted(groups.values(), key=lambda group: group[0].id)
    random.Random(seed).shuffle(ordered)
    n_test = max(1, round(0.3 * len(pairs)))
    n_val = round(0.2 * len(pairs)) if len(pairs) - n_test >= 4 else 0
    test: list[PreferencePair] = []
    val: list[PreferencePair] = []
    train: list[PreferencePair] = []
    for group in ordered:
        if len(test) < n_test:
            test.extend(group)
        elif len(val) < n_val:
            val.extend(group)
        else:
            train.extend(group)
    return train, val, test, f"seeded split {len(train)}/{len(val)}/{len(test)}"


@dataclass(frozen=True)
class UserSplit:
    """One user's train, val and test pairs, and how they were split."""

    user_id: str
    train: list[PreferencePair]
    val: list[PreferencePair]
    test: list[PreferencePair]
    how: str


def user_splits(
    pairs: Sequence[PreferencePair], *, users: int | None = None, seed: int = 0
) -> tuple[list[UserSplit], dict[str, str]]:
    """Split each user's pairs (file order of users); return the first `users` usable ones and the skipped.

    Pairs labelled ``population`` are not evaluated; a user with fewer than 2 train pairs or no
    test pair is skipped with the reason.
    """
    by_user: dict[str, list[PreferencePair]] = defaultdict(list)
    for pair in pairs:
        if split_of(pair) != "population":
            by_user[pair.user_id].append(pair)
    chosen: list[UserSplit] = []
    skipped: dict[str, str] = {}
    for user, own in by_user.items():
        if users is not None and len(chosen) >= users:
            break
        train, val, test, how = split_user_pairs(own, seed=seed)
        if len(train) < MIN_TRAIN_PAIRS or not test:
            skipped[user] = f"too few pairs ({how})"
            continue
        chosen.append(UserSplit(user, train, val, test, how))
    return chosen, skipped


def demos_without(pair: PreferencePair, demos: Sequence[Demo]) -> list[Demo]:
    """Drop from `demos` the pair being judged and its siblings."""
    key = sibling_key(pair)
    return [demo for demo in demos if sibling_key(demo.pair) != key]


def check_no_demo_leak(judge: object, pair: PreferencePair) -> None:
    """Raise ValueError when the judge would be shown `pair`, or a sibling of it, as a demo."""
    demos: Sequence[Demo] = getattr(judge, "demos", ())
    if len(demos_without(pair, demos)) != len(demos):
        raise ValueError(f"pair {pair.id} is judged by a judge that shows it (or a sibling) as a demo")
