"""`persona-agent demo` offline, as a newcomer sees it: the pairs, the persona learnt, the picks and why.

The main job runs with every non-loopback socket blocked, the embedded model drafting and the
offline reward model writing the persona and judging.
"""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from agent.formats import read_pairs
from agent.offline_persona import statements_of
from persona_agent.cli import app
from persona_agent.factory import build_store
from persona_agent.settings import load_settings
from tests.conftest import SAMPLE_USER

pytestmark = pytest.mark.slow


def test_demo_shows_what_was_learnt_offline(
    no_network: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two candidates keep this test short; the path through every part is the same as `make demo`.
    monkeypatch.setenv("PERSONA_AGENT_CANDIDATES", "2")
    monkeypatch.setenv("COLUMNS", "160")
    result = CliRunner().invoke(app, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert no_network == []
    output = result.output
    flat = " ".join(output.split())

    # The sample user's pairs, in brief: one row per pair, each question shown.
    assert "persona written by the offline reward model" in output
    assert "What sample-user chose (12 pairs)" in output
    questions = [pair.query for pair in read_pairs(SAMPLE_USER, user_id="sample-user")]
    assert "How do I make my Python script faster?" in flat
    assert sum(question[:25] in flat for question in questions) >= 10  # long ones wrap; most show whole

    # The persona learnt: the statements stored as persona v1, each with the pairs behind it.
    persona = build_store(load_settings()).current_persona("sample-user")
    assert persona is not None and persona.version == 1 and persona.source == "offline"
    statements = statements_of(persona)
    assert statements, "the sample user's pairs depart from most people's taste somewhere"
    assert "Persona v1 of sample-user, learnt by the offline reward model" in output
    for statement in statements:
        row = re.search(re.escape(statement.text) + r".*?([+-]\d\.\d\d) \(([+-]\d\.\d\d)\)\s+(\d+)", output)
        assert row is not None, statement.text
        assert row.groups() == (f"{statement.weight:+.2f}", f"{statement.population_weight:+.2f}", "12")
    accuracy = "n/a" if persona.val_accuracy is None else f"{persona.val_accuracy:.0%}"
    assert f"held-out accuracy {accuracy} · 12 pairs · 0 LLM calls" in output

    # Each question: this user's pick, beside the default judge's when they differ, and why.
    assert output.count("★ sample-user's pick") == 2
    same = output.count("would pick the same reply")
    differ = output.count("Why sample-user's judge differs from most people's model")
    assert same + differ == 2
    assert output.count("Default pick: candidate") == differ
    # When both pick the same reply, the statements that speak for it over the runner-up are named.
    assert output.count("Statements for it over candidate") == same
    assert output.count("picked by this user's offline reward model") == 2

    # It ends by saying how to chat and how to point it at an endpoint.
    assert "persona-agent chat --user sample-user" in flat
    tail = flat[flat.index("Memory lives in Chroma at") :]
    assert "OPENAI_BASE_URL=" in tail and "PERSONA_AGENT_MODEL=" in tail
