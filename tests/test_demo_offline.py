"""The main job runs with every non-loopback socket blocked and prints a persona and judged replies."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from persona_agent.cli import app

pytestmark = pytest.mark.slow


def test_demo_runs_offline(no_network: list[object], monkeypatch: pytest.MonkeyPatch) -> None:
    # A smaller budget keeps this test short; the path through every part is the same as `make demo`.
    monkeypatch.setenv("PERSONA_AGENT_MAX_CALLS_PER_SYNTHESIS", "24")
    monkeypatch.setenv("PERSONA_AGENT_CANDIDATES", "2")
    monkeypatch.setenv("COLUMNS", "120")
    result = CliRunner().invoke(app, ["demo"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert no_network == []
    output = result.output
    assert "Persona v1 of sample-user" in output
    assert output.count("Judge's reason:") == 2
    assert output.count("Picked by") == 2
    assert "★ chosen" in output
    assert "Memory lives in Chroma at" in output
    assert "SmolLM2-135M" in output
