"""The evaluation protocol: both orders, per-order and debiased scoring, splits, pairing, leaks."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from agent.evaluation import (
    bootstrap_ci,
    evaluate,
    outcome_of,
    paired_difference,
    run_judges,
    same_judge,
    summarize,
)
from agent.judge import PersonaJudge
from agent.records import Demo, PreferencePair, Turn, Verdict
from agent.splits import UserSplit, demos_without, holds_out, sibling_key, split_train_val, split_user_pairs
from tests.fakes import PositionBiasedChatModel

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

FIRST = Verdict(preferred="first", prob_first=1.0)
SECOND = Verdict(preferred="second", prob_first=0.0)
TIE = Verdict(preferred="tie", prob_first=0.5)


def pair(user: str, n: int | str) -> PreferencePair:
    return PreferencePair(
        user_id=user, context=(Turn(role="user", content=f"q{n}"),), chosen=f"good {n}", rejected=f"bad {n}"
    )


class ScriptedComparer:
    """Answers each (first, second) order from a table and records what it was asked."""

    def __init__(self, table: dict[tuple[str, str], Verdict]) -> None:
        self.table = table
        self.asked: list[tuple[str, str]] = []

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        self.asked.append((first, second))
        return self.table[(first, second)]


# Per order (each order alone, ties 0): u1: pair 1 right in both orders (1), pair 2 right with
# chosen first, tie with chosen second (0.5) -> 0.75. u2: pair 3 names the first reply in both
# orders (0.5), pair 4 wrong in both (0) -> 0.25. u3: pair 5 right in both (1).
# Debiased (P(chosen) averaged over the two orders, > 0.5 scores 1): pair 1: 1; pair 2:
# (1 + 0.5) / 2 = 0.75 -> 1; pair 3: (1 + 0) / 2 = 0.5, a tie -> 0; pair 4: 0; pair 5: 1.
# -> u1 1.0, u2 0.0, u3 1.0. Consistency: pairs 1, 4 and 5 name one reply in both orders
# -> u1 0.5, u2 0.5, u3 1.0.
TABLE = {
    ("good 1", "bad 1"): FIRST,
    ("bad 1", "good 1"): SECOND,
    ("good 2", "bad 2"): FIRST,
    ("bad 2", "good 2"): TIE,
    ("good 3", "bad 3"): FIRST,
    ("bad 3", "good 3"): FIRST,
    ("good 4", "bad 4"): SECOND,
    ("bad 4", "good 4"): FIRST,
    ("good 5", "bad 5"): FIRST,
    ("bad 5", "good 5"): SECOND,
}
PAIRS = [pair("u1", 1), pair("u1", 2), pair("u2", 3), pair("u2", 4), pair("u3", 5)]


async def test_evaluate_matches_the_hand_computed_example() -> None:
    judge = ScriptedComparer(TABLE)
    report = await evaluate(judge, PAIRS, concurrency=2)

    assert sorted(judge.asked) == sorted(TABLE)  # every pair judged in both orders, once each
    rows = {u.user_id: u for u in report.users}
    assert {u: r.accuracy_per_order for u, r in rows.items()} == {"u1": 0.75, "u2": 0.25, "u3": 1.0}
    assert {u: r.accuracy for u, r in rows.items()} == {"u1": 1.0, "u2": 0.0, "u3": 1.0}
    assert {u: r.position_consistency for u, r in rows.items()} == {"u1": 0.5, "u2": 0.5, "u3": 1.0}
    assert {u: r.n_pairs for u, r in rows.items()} == {"u1": 2, "u2": 2, "u3": 1}
    assert report.macro_accuracy_per_order == pytest.approx(2 / 3)
    assert report.macro_accuracy == pytest.approx(2 / 3)
    assert report.position_consistency == pytest.approx(2 / 3)
    assert (report.n_users, report.n_pairs) == (3, 5)
    assert report.ci_low <= report.macro_accuracy <= report.ci_high
    assert report.ci_per_order_low <= report.macro_accuracy_per_order <= report.ci_per_order_high


async def test_evaluate_takes_a_judge_per_user() -> None:
    always_first = ScriptedComparer({key: FIRST for key in TABLE})
    perfect = ScriptedComparer({key: (FIRST if key[0].startswith("good") else SECOND) for key in TABLE})
    report = await evaluate(lambda p: perfect if p.user_id == "u1" else always_first, PAIRS)
    per_order = {u.user_id: u.accuracy_per_order for u in report.users}
    assert per_order == {"u1": 1.0, "u2": 0.5, "u3": 0.5}
    assert {u.user_id: u.accuracy for u in report.users} == {"u1": 1.0, "u2": 0.0, "u3": 0.0}


def test_a_tie_scores_nothing_in_either_order() -> None:
    outcome = outcome_of(pair("u1", 1), TIE, TIE)
    assert (outcome.chosen_first_correct, outcome.chosen_second_correct) == (False, False)
    assert (outcome.per_order_score, outcome.score, outcome.consistent) == (0.0, 0.0, False)


class LeaningJudge:
    """Judges one order at a time: P(First) is 0.8 when the chosen reply is first, 0.6 when it is second.

    It always names First (position-biased), yet the chosen reply raises P(First) in both orders.
    """

    def __init__(self) -> None:
        self.orders: list[tuple[str, str]] = []

    async def judge_order(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        self.orders.append((first, second))
        prob_first = 0.8 if first.startswith("good") else 0.6
        return Verdict(preferred="first", prob_first=prob_first, source="logprobs")

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        raise AssertionError("a judge that judges single orders is asked per order")


async def test_per_order_and_debiased_part_on_a_position_biased_judge() -> None:
    judge = LeaningJudge()
    report = await evaluate(judge, PAIRS)

    assert len(judge.orders) == 2 * len(PAIRS)
    # Per order: right whenever the chosen reply is shown first, wrong whenever it is second.
    assert report.macro_accuracy_per_order == 0.5
    assert all(user.accuracy_per_order == 0.5 for user in report.users)
    # Debiased: P(chosen) = (0.8 + (1 - 0.6)) / 2 = 0.6 for every pair: always right.
    assert report.macro_accuracy == 1.0
    # It names First in both orders, so never the same reply twice.
    assert report.position_consistency == 0.0


async def test_the_llm_judge_that_always_names_first_scores_half_per_order_and_nothing_debiased() -> None:
    model = PositionBiasedChatModel(position="First")
    judge = PersonaJudge(model, "Likes soup.", structured_method="function_calling")
    report = await evaluate(judge, PAIRS)

    assert len(model.calls) == 2 * len(PAIRS)  # one call per order
    assert report.macro_accuracy_per_order == 0.5
    assert report.macro_accuracy == 0.0  # both orders combined: a tie on every pair
    assert report.position_consistency == 0.0


def test_bootstrap_ci_of_two_users_spans_the_resampled_means() -> None:
    # Resampling [0.75, 0.25] gives means 0.25 (p=1/4), 0.5 (1/2), 0.75 (1/4): the 2.5th and 97.5th
    # percentiles are the extremes.
    assert bootstrap_ci([0.75, 0.25]) == (0.25, 0.75)
    assert bootstrap_ci([0.6]) == (0.6, 0.6)
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert all(np.isnan(bootstrap_ci([])))


def test_bootstrap_ci_agrees_with_the_normal_approximation_for_many_users() -> None:
    values = np.random.default_rng(1).uniform(0.3, 0.9, size=400)
    low, high = bootstrap_ci(values, seed=3)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half_width, abs=0.004)
    assert high == pytest.approx(values.mean() + half_width, abs=0.004)


def test_summarize_is_macro_not_micro() -> None:
    outcomes = [outcome_of(p, TABLE[(p.chosen, p.rejected)], TABLE[(p.rejected, p.chosen)]) for p in PAIRS]
    report = summarize(outcomes)
    micro = np.mean([o.per_order_score for o in outcomes])
    assert micro == pytest.approx(0.6)
    assert report.macro_accuracy_per_order == pytest.approx(2 / 3)


def user_pairs(user: str, n: int) -> list[PreferencePair]:
    return [pair(user, f"{user}-{k}") for k in range(n)]


class RightOnSome:
    """Right in both orders on the pairs of `right`, wrong in both on the others."""

    def __init__(self, right: set[str]) -> None:
        self.right = right

    async def compare(self, context: Sequence[Turn], first: str, second: str) -> Verdict:
        chosen = first if first.startswith("good") else second
        names_chosen = context[-1].content in self.right
        return FIRST if (first == chosen) == names_chosen else SECOND


def right_on(fractions: dict[str, float], n: int) -> RightOnSome:
    return RightOnSome({f"q{user}-{k}" for user, share in fractions.items() for k in range(round(share * n))})


async def test_paired_bootstrap_of_two_judges_on_the_same_users() -> None:
    # Four users of 4 pairs; judge B is right on 0%, 25%, 50%, 75% of them, judge A on 25% more each.
    users = ["u1", "u2", "u3", "u4"]
    shares_b = dict(zip(users, (0.0, 0.25, 0.5, 0.75), strict=True))
    judge_a = right_on({u: s + 0.25 for u, s in shares_b.items()}, 4)
    judge_b = right_on(shares_b, 4)
    pairs = [p for u in users for p in user_pairs(u, 4)]
    report_a, report_b = await evaluate(judge_a, pairs), await evaluate(judge_b, pairs)
    assert report_a.macro_accuracy - report_b.macro_accuracy == pytest.approx(0.25)

    difference = paired_difference(report_a, report_b, names=("A", "B"))
    # Every user gains exactly 0.25: resampling users cannot move a paired difference.
    assert (difference.difference, difference.ci_low, difference.ci_high) == (0.25, 0.25, 0.25)
    assert (difference.a, difference.b, difference.n_users) == ("A", "B", 4)
    # Unpaired, the spread between users would swamp the same gain.
    assert report_a.ci_high - report_a.ci_low > 0.4

    # A judge that loses on one user and wins on three: the interval spans the resampled means.
    mixed = right_on({"u1": 0.0, "u2": 0.5, "u3": 0.75, "u4": 1.0}, 4)
    report_mixed = await evaluate(mixed, pairs)
    difference = paired_difference(report_mixed, report_b, metric="accuracy_per_order")
    gains = [0.0, 0.25, 0.25, 0.25]
    assert difference.difference == pytest.approx(np.mean(gains))
    assert (difference.ci_low, difference.ci_high) == bootstrap_ci(gains)
    assert difference.ci_low < difference.difference <= difference.ci_high


async def test_a_user_one_judge_failed_for_is_left_out_of_every_judges_figures() -> None:
    from agent.errors import NotEnoughPreferences

    splits = [
        UserSplit(user, user_pairs(user, 2), [], user_pairs(user, 4)[2:], "test") for user in ("amy", "ben")
    ]
    perfect = right_on({"amy": 1.0, "ben": 1.0}, 4)

    async def flaky(split: UserSplit):  # type: ignore[no-untyped-def]
        if split.user_id == "amy":
            raise NotEnoughPreferences("no fit")
        return same_judge(perfect)

    async def steady(split: UserSplit):  # type: ignore[no-untyped-def]
        return same_judge(right_on({"amy": 0.5, "ben": 0.0}, 4))

    evaluation = await run_judges(splits, {"flaky": flaky, "steady": steady})
    assert evaluation.users == ("ben",)
    assert evaluation.excluded == {"amy": {"flaky": "NotEnoughPreferences: no fit"}}
    steady_report = evaluation.report("steady")
    assert steady_report is not None
    # Amy's pairs were judged by "steady" but count nowhere: figures are on Ben alone.
    assert [u.user_id for u in steady_report.users] == ["ben"] and steady_report.macro_accuracy == 0.0
    difference = evaluation.difference("flaky", "steady")
    assert difference is not None and (difference.difference, difference.n_users) == (1.0, 1)


def choice_siblings(user: str, turn: int, candidates: int) -> list[PreferencePair]:
    """The pairs one `choice` feedback stores: the chosen candidate against each of the others."""
    context = (Turn(role="user", content=f"{user} asks question {turn}"),)
    return [
        PreferencePair(user_id=user, context=context, chosen=f"pick {turn}", rejected=f"other {turn}.{k}")
        for k in range(candidates - 1)
    ]


def test_siblings_of_one_choice_land_in_one_split() -> None:
    pairs = [p for turn in range(12) for p in choice_siblings("cat", turn, 4)]
    assert len({sibling_key(p) for p in pairs}) == 12
    for seed in range(20):
        train, val, test, _ = split_user_pairs(pairs, seed=seed)
        assert len(train) + len(val) + len(test) == len(pairs)
        homes = [{sibling_key(p) for p in part} for part in (train, val, test)]
        assert not (homes[0] & homes[1] or homes[0] & homes[2] or homes[1] & homes[2])
        assert test and val and train
    train, val = split_train_val(pairs)
    assert train and val
    assert not {sibling_key(p) for p in train} & {sibling_key(p) for p in val}


def test_a_files_split_keeps_siblings_with_the_most_held_out_member() -> None:
    def labelled(p: PreferencePair, split: str) -> PreferencePair:
        return p.model_copy(update={"metadata": {"split": split}})

    a, b, c = choice_siblings("dan", 1, 4)
    d, e = choice_siblings("dan", 2, 3)
    f, g = choice_siblings("dan", 3, 3)
    pairs = [
        labelled(a, "train"),
        labelled(b, "test"),
        labelled(c, "val"),
        labelled(d, "train"),
        labelled(e, "val"),
        labelled(f, "train"),
        labelled(g, "train"),
    ]
    train, val, test, how = split_user_pairs(pairs)
    assert [p.id for p in test] == [b.id]
    assert [p.id for p in val] == [e.id]
    assert [p.id for p in train] == [f.id, g.id]
    assert "3 siblings of held-out pairs left out" in how


def test_a_pair_any_persona_was_fitted_on_never_validates_a_later_one() -> None:
    rng = random.Random(7)
    arrived: list[PreferencePair] = []
    fitted_on: set[str] = set()
    for turn in range(40):
        arrived += choice_siblings("eve", turn, rng.randint(2, 4))
        if turn % 3 == 2:  # a synthesis every few turns, on everything stored so far
            train, val = split_train_val(list(reversed(arrived)))
            assert not fitted_on & {p.id for p in val}
            fitted_on |= {p.id for p in train}
    assert all(
        holds_out(p) == holds_out(q) for p in arrived for q in arrived if sibling_key(p) == sibling_key(q)
    )
    share = sum(holds_out(p) for p in arrived) / len(arrived)
    assert 0.15 < share < 0.5


async def test_a_judge_is_never_shown_the_pair_it_judges() -> None:
    pairs = choice_siblings("fay", 1, 3) + user_pairs("fay", 2)
    leaking = PersonaJudge(
        PositionBiasedChatModel(), "Likes soup.", [Demo(pair=pairs[1])], structured_method="function_calling"
    )
    split = UserSplit("fay", pairs[1:], [], pairs[:1], "test")

    async def build(split: UserSplit):  # type: ignore[no-untyped-def]
        return same_judge(leaking)

    with pytest.raises(ValueError, match="as a demo"):  # pairs[1] is a sibling of pairs[0]
        await run_judges([split], {"leaking": build})
    demos = [Demo(pair=p) for p in pairs[1:]]
    assert [d.pair.id for d in demos_without(pairs[0], demos)] == [p.id for p in pairs[2:]]
    assert [d.pair.id for d in demos_without(pairs[3], demos)] == [p.id for p in pairs[1:3]]


def test_the_stage_1_teacher_is_never_shown_a_sibling_of_the_pair_it_explains() -> None:
    from agent.demo_sets import others

    first, sibling = choice_siblings("gus", 1, 3)
    unrelated = user_pairs("gus", 2)
    shown = others([first, sibling, *unrelated], first, 4)
    assert [demo.pair.id for demo in shown] == [pair.id for pair in unrelated]


@pytest.mark.slow
def test_eval_command_runs_end_to_end_on_the_embedded_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llama_cpp")
    from typer.testing import CliRunner

    from persona_agent.cli import app

    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "PERSONA_AGENT_OPENAI_API_KEY",
        "PERSONA_AGENT_OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PERSONA_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no .env from the working directory
    data = DATA / "prism_examples" / "pairs.jsonl"

    result = CliRunner().invoke(app, ["eval", "--data", str(data), "--users", "1", "--json"])

    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    (user,) = document["users"]
    assert document["note"] and "pipeline" in document["note"]
    assert user["reference_persona"] and user["persona"]
    assert user["fit_calls"] >= user["n_train"] + 1
    assert 0.0 <= document["macro_accuracy"] <= 1.0
    for key in ("macro_accuracy_per_order", "position_consistency"):
        assert 0.0 <= document[key] <= 1.0
        assert user[key.removeprefix("macro_")] == document[key]  # one user: macro = that user
