"""`persona-agent chat` driven through piped input, with fake models and a fast store."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from memory.store import PreferenceStore
from persona_agent import factory
from persona_agent.cli import app
from tests.fakes import CountingChatModel
from tests.test_graph_chat import STYLE_REPLIES, chat_responder, make_memory


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[CountingChatModel, PreferenceStore]:
    """Swap the factory's models and store for fakes; the store lives under this test's data dir."""
    model = CountingChatModel(responder=chat_responder())
    memory = make_memory(tmp_path / "chroma", prefix="cli_chat")
    monkeypatch.setattr(factory, "build_chat_model", lambda settings: model)
    monkeypatch.setattr(factory, "build_judge_model", lambda settings: model)
    monkeypatch.setattr(factory, "build_store", lambda settings: memory)
    # The scripted model stands in for an LLM judge (the embedded default would be the offline one).
    monkeypatch.setenv("PERSONA_AGENT_JUDGE", "llm")
    monkeypatch.setenv("PERSONA_AGENT_PERSONA_SOURCE", "llm")  # and it writes the persona
    return model, memory


def test_chat_picks_a_candidate_and_the_pair_count_grows(
    parts: tuple[CountingChatModel, PreferenceStore],
) -> None:
    _, memory = parts
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
    parts: tuple[CountingChatModel, PreferenceStore],
) -> None:
    _, memory = parts
    runner = CliRunner()
    first = runner.invoke(app, ["chat", "-u", "alice"], input="Tell me about ferns\n/pick 1\n")
    assert first.exit_code == 0, first.output
    # a second session resumes the same thread: its candidates can still be picked
    second = runner.invoke(
        app, ["chat", "-u", "alice"], input="/pick 2\nAnd about moss?\n/pick 3\n/persona\n/quit\n"
    )
    assert second.exit_code == 0, second.output
    assert memory.count_pairs("alice") == 6
    assert "Persona updated to v1" in second.output
    assert "Persona v1 of alice" in second.output and "synthesized" in second.output
    # Three picks in all; the scripted judge ranks the warm third candidate first, picked once.
    assert "Judge agreement: of your last 3 picks, the judge had ranked 1 first (33%)." in second.output


def test_chat_refuses_a_bad_user_id(parts: tuple[CountingChatModel, PreferenceStore]) -> None:
    result = CliRunner().invoke(app, ["chat", "--user", "a/b"], input="/quit\n")
    assert result.exit_code != 0 and "may only hold" in result.output


def test_the_judge_setting_picks_the_judge_factory(parts: tuple[CountingChatModel, PreferenceStore]) -> None:
    from graphs.judges import HybridJudges, LLMJudges, OfflineJudges
    from persona_agent.settings import load_settings

    model, memory = parts
    kinds = {"llm": LLMJudges, "offline": OfflineJudges, "hybrid": HybridJudges}
    for name, kind in kinds.items():
        judges = factory.build_judges(load_settings(judge=name), store=memory, judge_model=model)
        assert type(judges) is kind
    options = factory.chat_options(load_settings(candidates=5, synthesis_mode="inline", first_synthesis_at=7))
    assert (options.candidates, options.synthesis_mode, options.first_synthesis_at) == (5, "inline", 7)
    assert options.reply_timeout_s is None  # the embedded model: no per-attempt timeout


@pytest.mark.parametrize(("durability", "saved"), [("exit", 2), ("async", 12)])
def test_chat_writes_thread_checkpoints_as_the_durability_setting_says(
    parts: tuple[CountingChatModel, PreferenceStore],
    monkeypatch: pytest.MonkeyPatch,
    durability: str,
    saved: int,
) -> None:
    import asyncio

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
