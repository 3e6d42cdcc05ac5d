"""`persona-agent chat` driven through piped input, with fake models and a fast store."""

# ruff: noqa: F811 - the fixture imported from tests.fakes is redefined as a test parameter

from __future__ import annotations

import asyncio
import io
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import graphs.synthesis
from memory.store import PreferenceStore
from persona_agent import factory
from persona_agent.cli import app
from tests.fakes import (
    PERSONA_TEXT,
    STYLE_REPLIES,
    SlowInductionModel,
    chat_cli_fakes,  # noqa: F401 - a fixture, found by name
    task_of,
)


def test_chat_picks_a_candidate_and_the_pair_count_grows(
    chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore],
) -> None:
    _, memory = chat_cli_fakes
    script = "\n".join(
        ["How do I water plants?", "/candidates", "/pick 2", "/persona", "/pick 9", "/quit", ""]
    )
    result = CliRunner().invoke(app, ["chat", "--user", "alice"], input=script)
    assert result.exit_code == 0, result.output
    out = result.output
    warm = STYLE_REPLIES[list(STYLE_REPLIES)[2]]
    thorough = STYLE_REPLIES[list(STYLE_REPLIES)[1]]
    assert warm[:20] in out  # the judge's pick is shown as the reply
    assert "Candidates (judge: default)" in out and thorough[:20] in out
    assert "Stored 2 preference pairs; you have 2 in all" in out
    assert "No persona yet (2 pairs stored)" in out
    assert "Usage: /pick N with N in 1-3" in out
    assert memory.count_pairs("alice") == 2
    assert {pair.chosen[:20] for pair in memory.list_pairs("alice")} == {thorough[:20]}


def test_chat_resumes_the_thread_and_reports_a_new_persona(
    chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore],
) -> None:
    _, memory = chat_cli_fakes
    runner = CliRunner()
    first = runner.invoke(app, ["chat", "-u", "alice"], input="Tell me about ferns\n/pick 1\n")
    assert first.exit_code == 0, first.output
    # a second session resumes the same thread: its candidates can still be picked
    second = runner.invoke(app, ["chat", "-u", "alice"], input="/pick 2\nAnd about moss?\n/pick 3\n/quit\n")
    assert second.exit_code == 0, second.output
    assert memory.count_pairs("alice") == 6
    # the update runs in the background; leaving waits for it and reports it
    assert "Updating your persona from 6 pairs in the background" in second.output
    assert "Persona updated to v1" in second.output
    third = runner.invoke(app, ["chat", "-u", "alice"], input="/persona\n")
    assert "Persona v1 of alice" in third.output and "synthesized" in third.output
    assert "update is running" not in third.output
    # an LLM wrote this persona: what the offline reward model measures is shown beside it
    assert "What the offline reward model measured on your 6 newest pairs:" in third.output
    # Three picks in all; the scripted judge ranks the warm third candidate first, picked once.
    assert "Judge agreement: of your last 3 picks, the judge had ranked 1 first (33%)." in third.output


def test_retry_then_going_on_stores_a_weak_pair_for_the_kept_reply(
    chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore],
) -> None:
    _, memory = chat_cli_fakes
    direct, _, warm, _ = STYLE_REPLIES.values()
    runner = CliRunner()
    asked = runner.invoke(app, ["chat", "-u", "alice"], input="How do I water plants?\n/retry\n/quit\n")
    assert asked.exit_code == 0, asked.output
    # the judge's pick is shown first, then another reply to the same message
    assert asked.output.index(warm[:20]) < asked.output.index(direct[:20])
    assert "Another reply to your message" in asked.output
    assert memory.count_pairs("alice") == 0  # nothing stored until the user goes on

    went_on = runner.invoke(app, ["chat", "-u", "alice"], input="And in winter?\n/quit\n")
    assert went_on.exit_code == 0, went_on.output
    assert "Stored 1 weak preference pair(s)" in went_on.output
    (pair,) = memory.list_pairs("alice")
    assert (pair.source, pair.weight, pair.query) == ("regenerate", 0.3, "How do I water plants?")
    assert pair.chosen.startswith(direct) and pair.rejected.startswith(warm)
    assert memory.count_pairs("bob") == 0


def test_edit_on_one_line_or_several_stores_an_edit_pair(
    chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore],
) -> None:
    _, memory = chat_cli_fakes
    _, _, warm, _ = STYLE_REPLIES.values()
    script = [
        "How do I water plants?",
        "/edit Soak them weekly.",
        "And ferns?",
        "/edit",
        "Mist them daily.",
        "Keep them out of the sun.",
        ".",
        "/quit",
    ]
    result = CliRunner().invoke(app, ["chat", "-u", "alice"], input="\n".join(script) + "\n")
    assert result.exit_code == 0, result.output
    assert "Stored your edit over the original reply" in result.output
    pairs = {pair.query: pair for pair in memory.list_pairs("alice")}
    assert set(pairs) == {"How do I water plants?", "And ferns?"}
    one_line, several = pairs["How do I water plants?"], pairs["And ferns?"]
    assert (one_line.chosen, one_line.source, one_line.weight) == ("Soak them weekly.", "edit", 0.7)
    assert one_line.rejected.startswith(warm)
    assert several.chosen == "Mist them daily.\nKeep them out of the sun." and several.source == "edit"
    # the second turn was answered after the edited reply: its context holds the user's text
    assert several.context[1].content == "Soak them weekly."


def test_retry_and_edit_without_a_reply_say_why_and_store_nothing(
    chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore],
) -> None:
    _, memory = chat_cli_fakes
    result = CliRunner().invoke(
        app, ["chat", "-u", "alice", "--new"], input="/retry\n/edit Better.\nHi there\n/edit  \n/quit\n"
    )
    assert result.exit_code == 0, result.output
    assert "feedback.regenerate: there is no previous reply to redo" in result.output
    assert "feedback.edited: there is no previous reply to edit" in result.output
    # "/edit" with only blanks reads a multi-line edit; the input ends before its closing "."
    assert "Edit not finished; the reply stays as it was." in result.output
    assert memory.count_pairs("alice") == 0


def test_chat_refuses_a_bad_user_id(chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore]) -> None:
    result = CliRunner().invoke(app, ["chat", "--user", "a/b"], input="/quit\n")
    assert result.exit_code != 0 and "may only hold" in result.output


def test_the_judge_setting_picks_the_judge_factory(
    chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore],
) -> None:
    from graphs.judges import HybridJudges, LLMJudges, OfflineJudges
    from persona_agent.settings import load_settings

    model, memory = chat_cli_fakes
    kinds = {"llm": LLMJudges, "offline": OfflineJudges, "hybrid": HybridJudges}
    for name, kind in kinds.items():
        judges = factory.build_judges(load_settings(judge=name), store=memory, judge_model=model)
        assert type(judges) is kind
    options = factory.chat_options(load_settings(candidates=5, synthesis_mode="inline", first_synthesis_at=7))
    assert (options.candidates, options.synthesis_mode, options.first_synthesis_at) == (5, "inline", 7)
    assert options.reply_timeout_s is None  # the embedded model: no per-attempt timeout


@pytest.mark.parametrize(("durability", "saved"), [("exit", 2), ("async", 12)])
def test_chat_writes_thread_checkpoints_as_the_durability_setting_says(
    chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore],
    monkeypatch: pytest.MonkeyPatch,
    durability: str,
    saved: int,
) -> None:

    from langchain_core.runnables import RunnableConfig

    from persona_agent.settings import load_settings

    monkeypatch.setenv("PERSONA_AGENT_CHECKPOINT_DURABILITY", durability)
    script = "Tell me about ferns\nAnd about moss?\n/quit\n"
    result = CliRunner().invoke(app, ["chat", "-u", "alice", "--thread", "t1"], input=script)
    assert result.exit_code == 0, result.output

    async def steps() -> list[int]:
        config = RunnableConfig(configurable={"thread_id": "t1"})
        async with factory.build_checkpointer(load_settings()) as saver:
            return [int(checkpoint.metadata["step"]) async for checkpoint in saver.alist(config)]

    written = asyncio.run(steps())
    # Two turns: async keeps a checkpoint per step (six a turn: the input, the state it makes, then
    # feedback, persona, draft + retrieve, judge), exit only each turn's last, the same step 10.
    assert len(written) == saved
    assert written[0] == 10


class ScriptedStdin(io.RawIOBase):
    """Standard input that gives one line per read, each once its condition holds.

    It notes when each line was asked for: the moment the chat showed its prompt again.
    """

    def __init__(self, steps: list[tuple[str, Callable[[], bool] | None]]) -> None:
        self.steps = list(steps)
        self.asked: list[float] = []
        self.given: list[tuple[str, float]] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if len(buffer) == 0:  # a probe (read(0)), not a request for a line
            return 0
        self.asked.append(time.monotonic())
        if not self.steps:
            return 0
        line, ready = self.steps.pop(0)
        deadline = time.monotonic() + 20
        while ready is not None and not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        data = (line + "\n").encode()
        buffer[: len(data)] = data
        self.given.append((line, time.monotonic()))
        return len(data)

    def seconds_to_prompt_after(self, line: str) -> list[float]:
        """Return, for each time `line` was given, the seconds until the next prompt asked for input."""
        return [
            min(asked for asked in self.asked if asked > given) - given
            for text, given in self.given
            if text == line
        ]


def test_picks_that_trigger_a_synthesis_return_at_once_and_the_persona_follows(
    chat_cli_fakes: tuple[SlowInductionModel, PreferenceStore],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, memory = chat_cli_fakes
    model.delay_s = 4.0  # every synthesis outlasts the 2 s a pick may take
    # every pick (2 pairs) is due a synthesis: the first at 2 pairs, then after each 2 more
    monkeypatch.setenv("PERSONA_AGENT_FIRST_SYNTHESIS_AT", "2")
    monkeypatch.setenv("PERSONA_AGENT_RESYNTHESIZE_EVERY", "2")
    # Every pick's pairs train, whichever of them the content hash would hold out for validation
    # (tests/test_evaluation.py covers that split): each synthesis here makes a persona.
    monkeypatch.setattr(graphs.synthesis, "split_train_val", lambda pairs: (list(pairs), []))

    def saved(version: int) -> Callable[[], bool]:
        return lambda: len(memory.persona_history("alice")) >= version

    stdin = ScriptedStdin(
        [
            ("How do I water plants?", None),
            ("/pick 3", None),
            ("And what about ferns?", None),  # answered while the first synthesis runs
            ("/persona", None),
            ("And moss?", saved(1)),
            ("/pick 1", None),
            ("And roses?", saved(2)),
            ("/pick 2", None),
            ("/persona", saved(3)),
        ]
    )
    # typer's runner takes text only as standard input: the command reads the scripted stream
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(stdin), encoding="utf-8"))
    app(["chat", "-u", "alice"], standalone_mode=False)
    out = capsys.readouterr().out

    waits = stdin.seconds_to_prompt_after("/pick 1") + stdin.seconds_to_prompt_after("/pick 2")
    waits += stdin.seconds_to_prompt_after("/pick 3")
    assert len(waits) == 3 and max(waits) < 2.0, waits  # each synthesis takes over 4 s
    assert out.count("in the background; keep chatting") == 3
    assert "A persona update is running" in out and "(updating persona: " in out
    assert [p.version for p in memory.persona_history("alice")] == [1, 2, 3]
    assert all(f"Persona updated to v{version}" in out for version in (1, 2, 3))
    assert "Persona v3 of alice" in out
    # the turn during the first synthesis was drafted without a persona; the turn after it was
    # saved, with it
    drafts = [call for call in model.calls if task_of(call.messages) == "other"]
    ferns = [call.messages[0].text for call in drafts if call.messages[-1].text == "And what about ferns?"]
    moss = [call.messages[0].text for call in drafts if call.messages[-1].text == "And moss?"]
    assert len(ferns) == len(moss) == 3
    assert not any("<persona>" in system for system in ferns)
    assert all(f"<persona>\n{PERSONA_TEXT}\n</persona>" in system for system in moss)


@pytest.mark.slow
def test_with_the_embedded_model_a_pick_that_triggers_a_synthesis_returns_at_once(
    no_network: list[object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The real default parts (embedded model, MiniLM, local Chroma): the second pick is due a synthesis."""
    monkeypatch.setenv("PERSONA_AGENT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PERSONA_AGENT_FIRST_SYNTHESIS_AT", "4")
    stdin = ScriptedStdin(
        [
            ("Give me a tip for watering plants.", None),
            ("/pick 2", None),
            ("How do I repot a cactus?", None),
            ("/pick 1", None),  # 4 pairs: the first synthesis starts
        ]
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(stdin), encoding="utf-8"))
    app(["chat", "-u", "bob"], standalone_mode=False)
    out = capsys.readouterr().out
    assert no_network == []
    assert "Updating your persona from 4 pairs in the background" in out
    assert max(stdin.seconds_to_prompt_after("/pick 1")) < 2.0
    # leaving waited for the update and said how it ended
    assert re.search(r"Persona updated to v1|Persona not updated: (rejected|skipped|failed)", out), out
