"""A new user's start: an archetype's persona before the first pair, and the three-question quiz.

Driven through the CLI (`persona start`, `persona show`, `/start` in chat), the chat graph (quiz
answers as feedback, the persona and judge of the first turn) and the store (export, import,
delete), with the shipped archetypes and quiz.
"""

# ruff: noqa: F811 - the fixture imported from tests.fakes is redefined as a test parameter

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from agent.archetypes import ALSO_COUNTS, load_archetypes
from agent.errors import InvalidPreference, UnknownUser
from agent.features import INTERPRETABLE_NAMES, measure
from agent.persona_edits import listed_statements
from agent.records import Turn
from agent.reward_model import RewardModel
from agent.starting import QUIZ_METADATA, load_quiz
from memory.store import PreferenceStore
from persona_agent import cli
from persona_agent.starting import start_from_archetype
from tests.fakes import (
    SlowInductionModel,
    chat_cli_fakes,  # noqa: F401 - a fixture, found by name
    make_graph,
    make_memory,
    make_pair,
)

runner = CliRunner()
QUIZ = load_quiz()


def run_config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


async def answer(graph: Any, user: str, question: str, choice: int, thread: str = "t1") -> dict[str, Any]:
    """Send one quiz answer as feedback; return the thread's state values."""
    feedback = {"quiz": {"question": question, "choice": choice}}
    await graph.ainvoke({"feedback": feedback}, run_config(thread), context={"user_id": user})
    return (await graph.aget_state(run_config(thread))).values


# --- the CLI ---------------------------------------------------------------------------------
@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the CLI at a fresh local store, away from any `.env` or Chroma server of the machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERSONA_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PERSONA_AGENT_CHROMA_SERVER", raising=False)
    return tmp_path / "data"


def test_persona_start_gives_a_persona_before_the_first_pair(data_dir: Path) -> None:
    before = runner.invoke(cli.app, ["persona", "show", "--user", "amy", "--json"])
    assert isinstance(before.exception, UnknownUser)  # no persona, no pairs

    listed = runner.invoke(cli.app, ["persona", "start", "--user", "amy"])
    assert listed.exit_code == 0, listed.output
    for archetype in load_archetypes():
        assert archetype.key in listed.output and archetype.title in listed.output
        assert f"({archetype.users} people in the data)" in listed.output

    chosen = runner.invoke(cli.app, ["persona", "start", "concise", "--user", "amy"])
    assert chosen.exit_code == 0, chosen.output
    assert "prefers shorter replies than most people" in chosen.output

    shown = json.loads(runner.invoke(cli.app, ["persona", "show", "--user", "amy", "--json"]).stdout)
    persona = shown["persona"]
    assert shown["current"] and persona["source"] == "archetype" and persona["model"] == "archetype concise"
    assert "- prefers shorter replies than most people" in persona["text"]
    assert "keep it short" in persona["text"]  # what it asks of a drafted reply
    assert persona["pair_ids"] == []
    human = runner.invoke(cli.app, ["persona", "show", "--user", "amy", "--no-offline"]).output
    assert "archetype concise" in human and "source: a starting archetype the user chose" in human

    again = json.loads(runner.invoke(cli.app, ["persona", "start", "--user", "amy", "--json"]).stdout)
    assert again["chosen"]["archetype"] == "concise" and again["offered"] is True
    assert "(your start)" in runner.invoke(cli.app, ["persona", "start", "--user", "amy"]).output
    others = json.loads(runner.invoke(cli.app, ["persona", "start", "--user", "bob", "--json"]).stdout)
    assert others["chosen"] is None  # what amy chose is not bob's


def test_an_archetype_persona_lists_the_archetypes_statements_to_pin_or_remove() -> None:
    memory = make_memory()
    persona, _ = start_from_archetype(memory, "amy", "concise")
    concise = next(a for a in load_archetypes() if a.key == "concise")
    listed = listed_statements(persona, [])
    assert [item.text for item in listed] == list(concise.statements)
    assert all(item.origin == "synthesized" for item in listed)


def test_an_unknown_archetype_names_the_known_ones_and_stores_nothing(data_dir: Path) -> None:
    result = runner.invoke(cli.app, ["persona", "start", "chatty", "--user", "amy"])
    assert isinstance(result.exception, InvalidPreference)
    message = str(result.exception)
    assert "'chatty'" in message and all(a.key in message for a in load_archetypes())
    history = json.loads(runner.invoke(cli.app, ["persona", "history", "--user", "amy", "--json"]).stdout)
    assert history["versions"] == [] and history["current_version"] is None
    view = json.loads(runner.invoke(cli.app, ["persona", "start", "--user", "amy", "--json"]).stdout)
    assert view["chosen"] is None


# --- the store -------------------------------------------------------------------------------
def test_the_choice_goes_with_export_and_import_and_is_deleted_with_the_user() -> None:
    memory = make_memory()
    persona, choice = start_from_archetype(memory, "amy", "concise")
    assert memory.current_persona("amy") == persona and persona.version == 1
    stored = memory.starting_choice("amy")
    assert stored is not None and stored.archetype == "concise" and stored.chosen_at == choice.chosen_at
    assert memory.starting_choice("bob") is None

    exported = memory.export_user("amy")
    assert json.loads(exported.splitlines()[-1]) == {"kind": "start", **choice.to_json()}
    other = make_memory()
    assert other.import_user(exported) == {"pairs": 0, "personas": 1}
    imported = other.starting_choice("amy")
    assert imported is not None and imported.archetype == "concise"
    assert other.current_persona("amy") is not None
    assert other.current_persona("amy").source == "archetype"  # type: ignore[union-attr]

    memory.delete_user("amy")
    assert memory.starting_choice("amy") is None and memory.current_persona("amy") is None
    with pytest.raises(UnknownUser):
        memory.export_user("amy")


def test_a_bad_start_line_in_an_import_stores_nothing() -> None:
    memory = make_memory()
    start_from_archetype(memory, "amy", "typical")
    lines = memory.export_user("amy").splitlines()
    broken = "\n".join([*lines[:-1], json.dumps({"kind": "start", "archetype": "", "chosen_at": "x"})])
    other = make_memory()
    with pytest.raises(InvalidPreference, match="start record"):
        other.import_user(broken)
    assert other.persona_history("amy") == [] and other.starting_choice("amy") is None


# --- the server's route ---------------------------------------------------------------------
def test_the_start_route_lists_chooses_and_the_persona_route_shows_the_choice() -> None:
    from starlette.testclient import TestClient

    from persona_agent.server.resources import ServerResources
    from persona_agent.server.routes import create_app
    from persona_agent.settings import Settings

    memory = make_memory()
    resources = ServerResources(
        settings_factory=lambda: Settings(tokens="amy-secret-token=amy,bob-secret-token=bob"),  # type: ignore[call-arg]
        store_factory=lambda _settings: memory,
    )
    amy, bob = {"Authorization": "Bearer amy-secret-token"}, {"Authorization": "Bearer bob-secret-token"}
    with TestClient(create_app(resources)) as client:
        listed = client.get("/memory/start", headers=amy).json()
        assert [item["key"] for item in listed["archetypes"]] == [a.key for a in load_archetypes()]
        assert listed["offered"] is True and listed["chosen"] is None
        assert [item["key"] for item in listed["quiz"]] == [q.key for q in QUIZ]

        unknown = client.post("/memory/start", json={"archetype": "chatty"}, headers=amy)
        assert unknown.status_code == 422 and "known: typical, concise" in unknown.json()["detail"]
        assert client.post("/memory/start", json={"key": "concise"}, headers=amy).status_code == 422
        assert memory.persona_history("amy") == []

        chosen = client.post("/memory/start", json={"archetype": "concise"}, headers=amy)
        assert chosen.status_code == 201 and chosen.json()["current"]["source"] == "archetype"
        persona = client.get("/memory/persona", headers=amy).json()
        assert (
            persona["start"]["archetype"] == "concise" and persona["current"]["model"] == "archetype concise"
        )
        assert client.get("/memory/persona", headers=bob).json()["start"] is None
        assert client.get("/memory/start", headers=bob).json()["chosen"] is None


# --- the offline judge -----------------------------------------------------------------------
SHORT = "Water it when the top of the soil is dry, and keep it in a sunny window."
LONG = (
    "Water it when the top of the soil is dry, and keep it in a sunny window. Basil likes six to eight "
    "hours of light a day. A window that faces south suits it well. Pinch off the top leaves every "
    "week, so that the plant grows bushy. Take off any flower buds as soon as they show. Once it "
    "flowers, the leaves turn bitter. Use a pot with holes in the bottom, so the roots never sit in "
    "water. Feed it a weak fertiliser once a month in summer."
)


async def test_after_choosing_concise_the_offline_judge_prefers_shorter_replies_more() -> None:
    from agent.features import FeatureExtractor
    from graphs.judges import OfflineJudges
    from memory.embeddings import MiniLMEmbeddings

    prior = RewardModel.load()
    gaps = np.abs(measure(SHORT, "q") - measure(LONG, "q")) / prior.scale[: len(INTERPRETABLE_NAMES)]
    # the pair differs mostly in length, counted in words or in sentences
    assert INTERPRETABLE_NAMES[int(np.argmax(gaps))] in {"length", *ALSO_COUNTS["length"]}

    memory = make_memory()
    start_from_archetype(memory, "amy", "concise")
    judges = OfflineJudges(memory, prior, FeatureExtractor(MiniLMEmbeddings()), archetypes=load_archetypes())
    context = (Turn(role="user", content="How do I keep a basil plant alive on my windowsill?"),)
    chances = {}
    for user in ("amy", "bob"):  # bob chose nothing: the population's judge
        judge, label = await judges(user, None, [])
        assert label == "offline"
        chances[user] = (await judge.compare(context, SHORT, LONG)).prob_first
    assert chances["amy"] > chances["bob"] + 0.02, chances

    # their own pairs move each judge from where it started: with the same five picks of the longer
    # reply, amy's judge still leans further towards the shorter reply than bob's
    for user in ("amy", "bob"):
        picks = [
            make_pair(user, f"How do I look after plant {i}?", chosen=LONG + f" Plant {i}.", rejected=SHORT)
            for i in range(5)
        ]
        memory.add_pairs(user, picks)
    moved = {}
    for user in ("amy", "bob"):
        judge, _ = await judges(user, None, [])
        moved[user] = (await judge.compare(context, SHORT, LONG)).prob_first
    assert moved["amy"] > moved["bob"], moved
    assert moved != chances  # the pairs were fitted


# --- the chat graph --------------------------------------------------------------------------
async def test_the_first_turn_after_a_choice_uses_the_archetype_persona() -> None:
    memory = make_memory()
    graph, model = make_graph(memory)
    persona, _ = start_from_archetype(memory, "amy", "concise")
    await graph.ainvoke(
        {"messages": [HumanMessage("How do I water ferns?")]}, run_config("t1"), context={"user_id": "amy"}
    )
    state = (await graph.aget_state(run_config("t1"))).values
    assert state["persona"]["version"] == persona.version and state["judge"] == "persona"
    drafts = model.calls_of("other")
    assert drafts and all("keep it short" in call.messages[0].text for call in drafts)
    assert state["pair_count"] == 0 and state["synthesis_due"] is None


async def test_the_quiz_stores_three_explicit_pairs_and_waits_for_the_first_synthesis() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory, first_synthesis_at=5, resynthesize_every=3)
    start_from_archetype(memory, "amy", "concise")
    picks = {"length": 0, "lists": 1, "hedging": 0}
    for question in QUIZ:
        state = await answer(graph, "amy", question.key, picks[question.key])
    assert state["pair_count"] == 3
    # an archetype's persona is not one learnt from pairs: 3 pairs do not re-synthesize it
    assert state["synthesis_due"] is None and state.get("synthesis") is None
    stored = {pair.metadata[QUIZ_METADATA]: pair for pair in memory.list_pairs("amy")}
    assert set(stored) == {"length", "lists", "hedging"}
    for question in QUIZ:
        pair = stored[question.key]
        assert pair.source == "explicit" and pair.weight == 1.0
        assert pair.query == question.question
        assert pair.chosen == question.replies[picks[question.key]]
        assert pair.rejected == question.replies[1 - picks[question.key]]
    assert memory.count_pairs("bob") == 0
    # two more pairs make the five a first synthesis needs: it runs (deferred, in the same run)
    for i in range(2):
        pair = {"chosen": f"Short answer {i}.", "rejected": f"A long, rambling answer {i}."}
        feedback = {**pair, "context": [{"role": "user", "content": f"Question {i}?"}]}
        await graph.ainvoke({"feedback": feedback}, run_config("t1"), context={"user_id": "amy"})
    state = (await graph.aget_state(run_config("t1"))).values
    assert state["pair_count"] == 5 and state["synthesis"] is not None


async def test_retaking_a_quiz_question_replaces_the_earlier_answer() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    memory.add_pairs("amy", [make_pair("amy", "What is 2 + 2?", chosen="4.", rejected="Five.")])
    await answer(graph, "amy", "length", 0)
    await answer(graph, "amy", "lists", 1)
    state = await answer(graph, "amy", "length", 1)
    assert state["pair_count"] == 3
    stored = memory.list_pairs("amy")
    answers = {pair.metadata[QUIZ_METADATA]: pair for pair in stored if QUIZ_METADATA in pair.metadata}
    length = next(question for question in QUIZ if question.key == "length")
    assert answers["length"].chosen == length.replies[1] and answers["length"].rejected == length.replies[0]
    assert "lists" in answers and any(pair.query == "What is 2 + 2?" for pair in stored)
    # the same answer again stores nothing new and forgets nothing
    state = await answer(graph, "amy", "length", 1)
    assert state["pair_count"] == 3
    assert answers["length"].id in {pair.id for pair in memory.list_pairs("amy")}


async def test_bad_quiz_answers_are_refused_and_store_nothing() -> None:
    memory = make_memory()
    graph, _ = make_graph(memory)
    for feedback, message in (
        (
            {"quiz": {"question": "colour", "choice": 0}},
            "no question 'colour'; known: length, lists, hedging",
        ),
        ({"quiz": {"question": "length", "choice": 2}}, "must be 0 or 1"),
        ({"quiz": {"question": "length", "choice": 0}, "choice": 1}, "comes alone"),
        ({"quiz": "length"}, "feedback.quiz"),
    ):
        with pytest.raises(InvalidPreference, match=message):
            await graph.ainvoke({"feedback": feedback}, run_config("t1"), context={"user_id": "amy"})
    assert memory.count_pairs("amy") == 0


def test_each_quiz_question_differs_on_the_taste_it_names() -> None:
    prior = RewardModel.load()
    assert len(QUIZ) == 3
    for question in QUIZ:
        first, second = (measure(reply, question.question) for reply in question.replies)
        gaps = np.abs(first - second) / prior.scale[: len(first)]
        # the feature it names, or one that counts the same thing another way
        assert INTERPRETABLE_NAMES[int(np.argmax(gaps))] in {question.key, *ALSO_COUNTS.get(question.key, ())}


# --- /start in chat --------------------------------------------------------------------------
def test_chat_start_lists_chooses_and_asks_the_quiz(
    chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore],
) -> None:
    _, memory = chat_cli_fakes
    script = "\n".join(
        ["/start", "/start chatty", "/start concise", "/persona", "/start quiz", "1", "2", "2", ""]
    )
    result = runner.invoke(cli.app, ["chat", "--user", "amy"], input=script)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "New here? /start lists starting personas" in out
    concise = next(archetype for archetype in load_archetypes() if archetype.key == "concise")
    assert f"{concise.title} ({concise.users} people in the data)" in out
    assert "no archetype 'chatty'; known: typical, concise" in out
    assert "You start from 'concise' (persona v1)" in out
    assert "Persona v1 of amy" in out
    for question in QUIZ:
        assert question.question in out
    assert "your answers are stored as preference pairs (3 in all)" in out
    pairs = {pair.metadata[QUIZ_METADATA]: pair for pair in memory.list_pairs("amy")}
    assert [pairs[q.key].chosen for q in QUIZ] == [QUIZ[0].replies[0], QUIZ[1].replies[1], QUIZ[2].replies[1]]
    assert memory.current_persona("amy").source == "archetype"  # type: ignore[union-attr]
    # once a persona is learnt from pairs, or there are enough of them, no start is offered
    later = runner.invoke(cli.app, ["chat", "--user", "amy"], input="/quit\n")
    assert "New here?" in later.output  # 3 pairs, fewer than the first synthesis needs
    memory.add_pairs("amy", [make_pair("amy", f"question {i}", minutes=i) for i in range(2)])
    assert "New here?" not in runner.invoke(cli.app, ["chat", "--user", "amy"], input="/quit\n").output
