"""The `pairs`, `persona` and `memory` command groups against a real local store under tmp_path."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.errors import InvalidPreference, NotFound, UnknownUser
from agent.records import Demo, Persona
from persona_agent import cli
from persona_agent.factory import build_store
from persona_agent.settings import load_settings
from tests.conftest import MT_BENCH
from tests.fakes import make_pair

runner = CliRunner()


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the CLI at a fresh local store, away from any `.env` or Chroma server of the machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERSONA_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PERSONA_AGENT_CHROMA_SERVER", raising=False)
    return tmp_path / "data"


def run_json(*args: str) -> dict:
    result = runner.invoke(cli.app, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def add(user: str, context: str, chosen: str = "Short and clear.", rejected: str = "Rambling.") -> dict:
    return run_json(
        "pairs", "add", "--user", user, "--context", context, "--chosen", chosen, "--rejected", rejected
    )


def test_add_list_delete(tmp_path: Path) -> None:
    first = add("alice", "How do I boil an egg?")
    assert first["added"] is True and first["count"] == 1
    assert add("alice", "How do I boil an egg?")["added"] is False  # idempotent
    add("alice", "What is a good first houseplant?")
    listed = run_json("pairs", "list", "--user", "alice")
    assert listed["total"] == 2
    assert [p["context"][0]["content"] for p in listed["pairs"]][1] == "How do I boil an egg?"
    assert run_json("pairs", "list", "--user", "bob")["pairs"] == []

    result = runner.invoke(cli.app, ["pairs", "delete", first["id"], "--user", "bob"])
    assert isinstance(result.exception, NotFound)
    assert run_json("pairs", "list", "--user", "alice")["total"] == 2
    assert run_json("pairs", "delete", first["id"], "--user", "alice")["deleted"] == first["id"]
    assert run_json("pairs", "list", "--user", "alice")["total"] == 1

    human = runner.invoke(cli.app, ["pairs", "list", "--user", "alice"])
    assert "houseplant" in human.stdout and "1 shown of 1" in human.stdout


def test_inferred_pairs_list_by_source_with_their_weight_and_delete_like_any_pair() -> None:
    store = build_store(load_settings())
    stored = {
        source: store.add_pairs("alice", [make_pair("alice", f"a {source} question", source=source)])[0]
        for source in ("explicit", "edit", "regenerate")
    }
    human = runner.invoke(cli.app, ["pairs", "list", "--user", "alice", "--source", "regenerate"])
    assert human.exit_code == 0, human.output
    assert "regenerate ×0.3" in human.stdout and "a regenerate question" in human.stdout
    assert "a edit question" not in human.stdout and "1 shown of 3" in human.stdout
    edits = run_json("pairs", "list", "--user", "alice", "--source", "edit")["pairs"]
    assert [(pair["id"], pair["source"]) for pair in edits] == [(stored["edit"], "edit")]
    bad = runner.invoke(cli.app, ["pairs", "list", "--user", "alice", "--source", "edited"])
    message = " ".join(bad.output.replace("│", " ").split())  # unwrapped from rich's error box
    assert bad.exit_code == 2 and "must be one of explicit, import, implicit, edit, regenerate" in message
    deleted = run_json("pairs", "delete", stored["regenerate"], "--user", "alice")["deleted"]
    assert deleted == stored["regenerate"]
    assert run_json("pairs", "list", "--user", "alice", "--source", "regenerate")["pairs"] == []


def test_import_is_all_or_nothing(tmp_path: Path) -> None:
    records = [json.loads(line) for line in MT_BENCH.read_text().splitlines()[:30]]
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run_json("pairs", "import", str(good))
    assert result["read"] == 30
    users = {r["user_id"] for r in records}
    assert set(result["added"]) == users
    some_user = sorted(users)[0]
    assert (
        run_json("pairs", "list", "--user", some_user, "--limit", "100")["total"]
        == result["added"][some_user]
    )

    bad = tmp_path / "bad.jsonl"
    broken = {**records[0], "rejected": records[0]["chosen"]}
    bad.write_text(json.dumps({**records[1], "user_id": "zoe"}) + "\n" + json.dumps(broken) + "\n")
    failed = runner.invoke(cli.app, ["pairs", "import", str(bad), "--user", "zoe"])
    assert isinstance(failed.exception, InvalidPreference)
    assert run_json("pairs", "list", "--user", "zoe")["total"] == 0
    skipped = run_json("pairs", "import", str(bad), "--user", "zoe", "--skip-invalid")
    assert skipped == {"read": 1, "added": {"zoe": 1}}


def _save_personas(user: str) -> None:
    store = build_store(load_settings())
    pair = store.list_pairs(user)[0]
    store.save_persona(
        Persona(user_id=user, text="Likes short answers.", val_accuracy=0.6), [Demo(pair=pair)]
    )
    store.save_persona(Persona(user_id=user, text="Likes short, concrete answers.", val_accuracy=0.7), [])


def test_persona_show_history_rollback() -> None:
    add("alice", "How do I boil an egg?")
    missing = runner.invoke(cli.app, ["persona", "show", "--user", "alice"])
    assert isinstance(missing.exception, UnknownUser)
    _save_personas("alice")

    shown = run_json("persona", "show", "--user", "alice")
    assert shown["persona"]["version"] == 2 and shown["current"] is True and shown["demos"] == []
    history = run_json("persona", "history", "--user", "alice")
    assert [v["version"] for v in history["versions"]] == [1, 2] and history["current_version"] == 2

    assert run_json("persona", "rollback", "1", "--user", "alice")["current_version"] == 1
    shown = run_json("persona", "show", "--user", "alice")
    assert shown["persona"]["text"] == "Likes short answers." and len(shown["demos"]) == 1
    assert run_json("persona", "show", "--user", "alice", "--version", "2")["current"] is False
    text = runner.invoke(cli.app, ["persona", "history", "--user", "alice"]).stdout
    assert "v1" in text and "(current)" in text.splitlines()[0]

    # Bob has no personas and cannot roll Alice back.
    assert run_json("persona", "history", "--user", "bob")["versions"] == []
    assert isinstance(
        runner.invoke(cli.app, ["persona", "rollback", "2", "--user", "bob"]).exception, NotFound
    )
    assert run_json("persona", "show", "--user", "alice")["persona"]["version"] == 1


def test_memory_export_delete_import(tmp_path: Path) -> None:
    add("alice", "How do I boil an egg?")
    add("alice", "Best way to learn Spanish?")
    add("bob", "How do I boil an egg?")
    _save_personas("alice")
    out = tmp_path / "alice.jsonl"
    assert run_json("memory", "export", "--user", "alice", "--output", str(out))["lines"] == 4
    stdout_export = runner.invoke(cli.app, ["memory", "export", "--user", "alice"]).stdout
    assert stdout_export == out.read_text()

    aborted = runner.invoke(cli.app, ["memory", "delete", "--user", "alice"], input="n\n")
    assert aborted.exit_code != 0
    assert run_json("pairs", "list", "--user", "alice")["total"] == 2

    deleted = run_json("memory", "delete", "--user", "alice", "--yes")["deleted"]
    assert deleted["pairs"] == 2 and deleted["personas"] == 2 and deleted["demos"] == 1
    assert run_json("pairs", "list", "--user", "alice")["total"] == 0
    assert run_json("pairs", "list", "--user", "bob")["total"] == 1
    assert isinstance(runner.invoke(cli.app, ["memory", "export", "--user", "alice"]).exception, UnknownUser)

    assert run_json("memory", "import", str(out)) == {"pairs": 2, "personas": 2}
    assert run_json("persona", "history", "--user", "alice")["current_version"] == 2
    assert runner.invoke(cli.app, ["memory", "export", "--user", "alice"]).stdout == out.read_text()


def test_errors_become_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["persona-agent", "persona", "rollback", "3", "--user", "alice"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == NotFound.exit_code


@pytest.mark.parametrize("group", ["pairs", "persona", "memory"])
def test_help_lists_the_commands(group: str) -> None:
    result = runner.invoke(cli.app, [group, "--help"])
    assert result.exit_code == 0
    expected = {"pairs": ["add", "import", "list", "delete"], "persona": ["show", "history", "rollback"]}
    for command in expected.get(group, ["export", "import", "delete", "learn-tastes", "tastes"]):
        assert command in result.stdout


def test_persona_show_puts_the_offline_reward_models_view_beside_the_llm_persona() -> None:
    topics = ["eggs", "ferns", "taxes", "chess", "sourdough", "running", "git", "jazz", "tides", "bees"]
    for topic in topics:
        add(
            "alice",
            f"Tell me how to get started with {topic}.",
            chosen=f"- Read one guide on {topic}\n- Try it for ten minutes\n- Ask one expert",
            rejected=f"Getting started with {topic} is a journey. " * 12,
        )
    _save_personas("alice")
    shown = run_json("persona", "show", "--user", "alice")
    offline = shown["offline_persona"]
    # What the model concludes from 10 pairs is the reward model's business (tests/test_reward_model.py
    # plants and recovers preferences); here: it is fitted on this user's stored pairs and shown.
    assert offline["text"].startswith(("Compared with most people, this user", "No clear departure"))
    assert all(statement["n_pairs"] == len(topics) for statement in offline["statements"])
    assert offline["statements_from"] == "offline model" and offline["n_pairs"] == len(topics)
    text = runner.invoke(cli.app, ["persona", "show", "--user", "alice"]).stdout
    assert "offline reward model (no LLM), measured on the same 10 pairs" in text
    for statement in offline["statements"]:
        assert f"{statement['text']}  (weight {statement['weight']:+.2f}" in text
    # imported pairs are no picks among drafted replies: nothing to agree with yet
    assert shown["judge_agreement"] == {"picks": 0, "agreed": 0, "rate": None, "recent": []}
    assert "Judge agreement: no picks yet" in text
    assert run_json("persona", "show", "--user", "alice", "--no-offline")["offline_persona"] is None


def test_memory_learn_tastes_learns_from_every_stored_user_and_tastes_shows_it() -> None:
    assert run_json("memory", "tastes") is None
    assert "no shared tastes learnt yet" in runner.invoke(cli.app, ["memory", "tastes"]).stdout
    topics = ["eggs", "ferns", "taxes", "chess", "sourdough"]
    for user in ("alice", "bob", "carol"):
        for topic in topics:
            add(
                user,
                f"Tell me how to get started with {topic}.",
                chosen=f"- Read one guide on {topic}\n- Try it for ten minutes\n- Ask one expert",
                rejected=f"Getting started with {topic} is a journey. " * 12,
            )
    learnt = run_json("memory", "learn-tastes")
    assert learnt["n_users"] == 3 and learnt["current"] is True
    assert datetime.fromisoformat(learnt["learnt_at"]) <= datetime.now(UTC)
    # three users who all pick the listed, shorter reply share a taste for lists or for short replies
    named = [item["taste"] for item in learnt["shared"]]
    assert {"a rule for more list lines", "a rule for less length"} & set(named)
    assert [item["share"] for item in learnt["shared"]] == sorted(
        (item["share"] for item in learnt["shared"]), reverse=True
    )
    assert run_json("memory", "tastes") == learnt
    shown = runner.invoke(cli.app, ["memory", "tastes"]).stdout
    assert "shared tastes of 3 users" in shown and learnt["shared"][0]["taste"] in shown
    run_json("memory", "delete", "--user", "alice", "--yes")
    assert run_json("memory", "tastes")["n_users"] == 2
