"""Pairwise accuracy against a hand-computed example: both orders, ties wrong, macro over users, CI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from agent.evaluation import bootstrap_ci, evaluate, outcome_of, summarize
from agent.records import PreferencePair, Turn, Verdict

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

FIRST = Verdict(preferred="first", prob_first=1.0)
SECOND = Verdict(preferred="second", prob_first=0.0)
TIE = Verdict(preferred="tie", prob_first=0.5)


def pair(user: str, n: int) -> PreferencePair:
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


# u1: pair 1 right in both orders (1.0); pair 2 right with chosen first, tie with chosen second (0.5)
# -> u1 = 0.75. u2: pair 3 picks the first reply in both orders, so right once (0.5); pair 4
# wrong in both orders (0.0) -> u2 = 0.25. Macro = (0.75 + 0.25) / 2 = 0.5; micro would also be 0.5,
# so u3 (one pair, right in both orders: 1.0) makes them differ: macro = (0.75 + 0.25 + 1) / 3 = 2/3,
# micro over the 5 pairs = (1 + 0.5 + 0.5 + 0 + 1) / 5 = 0.6.
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
    assert {u.user_id: u.accuracy for u in report.users} == {"u1": 0.75, "u2": 0.25, "u3": 1.0}
    assert {u.user_id: u.n_pairs for u in report.users} == {"u1": 2, "u2": 2, "u3": 1}
    assert report.macro_accuracy == pytest.approx(2 / 3)
    assert (report.n_users, report.n_pairs) == (3, 5)
    assert report.ci_low <= report.macro_accuracy <= report.ci_high


async def test_evaluate_takes_a_judge_per_user() -> None:
    always_first = ScriptedComparer({key: FIRST for key in TABLE})
    perfect = ScriptedComparer({key: (FIRST if key[0].startswith("good") else SECOND) for key in TABLE})
    report = await evaluate(lambda p: perfect if p.user_id == "u1" else always_first, PAIRS)
    assert {u.user_id: u.accuracy for u in report.users} == {"u1": 1.0, "u2": 0.5, "u3": 0.5}


def test_a_tie_scores_nothing_in_either_order() -> None:
    outcome = outcome_of(pair("u1", 1), TIE, TIE)
    assert (outcome.chosen_first_correct, outcome.chosen_second_correct, outcome.score) == (False, False, 0.0)


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
    micro = np.mean([o.score for o in outcomes])
    assert micro == pytest.approx(0.6)
    assert report.macro_accuracy == pytest.approx(2 / 3)


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
