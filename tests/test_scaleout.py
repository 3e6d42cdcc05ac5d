"""Past one machine: threads in a real PostgreSQL, memory on a `chroma run` server, several app processes.

The PostgreSQL server comes from Debian's packages (`postgres_cluster` in conftest.py starts one
in a temporary folder); `make test` and `.ci/run` install them when missing.
"""

from __future__ import annotations

# ruff: noqa: F811 - the fixtures imported from tests.fakes are redefined as test parameters
import asyncio
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig
from typer.testing import CliRunner

from agent.errors import ConfigurationError
from devtools.chroma_server import ChromaServer
from devtools.openai_stub import OpenAIStub
from memory.store import PreferenceStore
from persona_agent import factory
from persona_agent.benchmarks.scaleout import run_scaleout
from persona_agent.cli import app
from persona_agent.settings import load_settings
from tests.fakes import (
    CountingChatModel,
    chat_cli_fakes,  # noqa: F401
    chroma_server,  # noqa: F401
)


def _chat_twice(user: str, thread: str) -> str:
    """Run one chat session, then a second one that picks from the first's turn; return its output."""
    runner = CliRunner()
    first = runner.invoke(app, ["chat", "-u", user, "--thread", thread], input="Tell me about ferns\n")
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["chat", "-u", user, "--thread", thread], input="/pick 2\nAnd moss?\n")
    assert second.exit_code == 0, second.output
    return second.output


async def _checkpoints(thread: str) -> tuple[list[int], list[str]]:
    """Return the steps of a thread's checkpoints, newest first, and its messages."""
    config = RunnableConfig(configurable={"thread_id": thread})
    async with factory.build_checkpointer(load_settings()) as saver:
        steps = [int(checkpoint.metadata["step"]) async for checkpoint in saver.alist(config)]
        latest = await saver.aget_tuple(config)
    assert latest is not None
    return steps, [message.text for message in latest.checkpoint["channel_values"]["messages"]]


@pytest.mark.scaleout
@pytest.mark.parametrize("durability", ["exit", "async"])
def test_chat_keeps_its_thread_in_postgresql_and_resumes_it_in_a_new_session(
    chat_cli_fakes: tuple[CountingChatModel, PreferenceStore],
    checkpoint_url: str,
    monkeypatch: pytest.MonkeyPatch,
    durability: str,
) -> None:
    _, memory = chat_cli_fakes
    monkeypatch.setenv("PERSONA_AGENT_CHECKPOINT_DURABILITY", durability)
    # The same two sessions over the local SQLite file, for comparison.
    _chat_twice("alice", "local")
    local_steps, _ = asyncio.run(_checkpoints("local"))
    assert load_settings().checkpoint_path.exists()

    monkeypatch.setenv("PERSONA_AGENT_CHECKPOINT_URL", checkpoint_url)
    # The second session (another process, as far as the database knows) picks from the first's turn.
    output = _chat_twice("bob", "shared")
    assert "Stored 2 preference pairs" in output and memory.count_pairs("bob") == 2
    steps, messages = asyncio.run(_checkpoints("shared"))
    assert messages[0] == "Tell me about ferns" and messages[2] == "And moss?" and len(messages) == 4
    # Three runs (a turn, a pick, a turn): the durability setting writes the same checkpoints.
    assert steps == local_steps
    assert len(steps) == 3 if durability == "exit" else len(steps) > 3
    monkeypatch.delenv("PERSONA_AGENT_CHECKPOINT_URL")
    with pytest.raises(AssertionError):  # the PostgreSQL thread never went to the SQLite file
        asyncio.run(_checkpoints("shared"))


@pytest.mark.scaleout
async def test_processes_opening_one_new_database_at_once_all_find_its_tables(checkpoint_url: str) -> None:
    async def open_and_write(index: int) -> str | None:
        async with factory.open_postgres_checkpointer(checkpoint_url, pool_size=2) as saver:
            config = RunnableConfig(configurable={"thread_id": f"t{index}", "checkpoint_ns": ""})
            checkpoint = {
                "v": 1,
                "id": f"1f0{index:05d}-0000-6000-8000-000000000000",
                "ts": "2026-12-01T00:00:00+00:00",
                "channel_values": {"note": f"from opener {index}"},
                "channel_versions": {"note": 1},
                "versions_seen": {},
            }
            await saver.aput(config, checkpoint, {"step": 0}, {"note": 1})  # type: ignore[arg-type]
            found = await saver.aget_tuple(RunnableConfig(configurable={"thread_id": f"t{index}"}))
            return found.checkpoint["channel_values"]["note"] if found else None

    # Each opener runs the saver's migrations on a fresh database; none may collide or deadlock.
    notes = await asyncio.wait_for(asyncio.gather(*(open_and_write(i) for i in range(4))), timeout=60)
    assert notes == [f"from opener {i}" for i in range(4)]


async def test_an_unreachable_checkpoint_database_is_a_clear_error_without_the_password() -> None:
    from persona_agent.benchmarks.ports import free_port

    url = f"postgresql://alice:s3cret@127.0.0.1:{free_port()}/threads"
    with pytest.raises(ConfigurationError, match="cannot use PostgreSQL") as caught:
        async with factory.open_postgres_checkpointer(url):
            pass
    assert "s3cret" not in str(caught.value) and "alice:***@127.0.0.1" in str(caught.value)


def test_a_checkpoint_url_that_is_not_postgresql_names_the_setting_not_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PERSONA_AGENT_CHECKPOINT_URL", "mysql://alice:s3cret@db/threads")
    with pytest.raises(ConfigurationError, match=r"checkpoint_url: .*postgresql://") as caught:
        load_settings()
    assert "s3cret" not in str(caught.value)
    monkeypatch.setenv("PERSONA_AGENT_CHECKPOINT_URL", "")
    assert load_settings().checkpoint_url is None


@pytest.mark.slow
@pytest.mark.scaleout
def test_four_app_processes_serving_the_same_users_lose_nothing(
    checkpoint_url: str, chroma_server: ChromaServer, tmp_path: Path
) -> None:
    """The scale-out check with 4 workers: 20 users, 120 turns (the script runs 200)."""
    with OpenAIStub() as stub:
        report = run_scaleout(
            workers=4,
            users=20,
            turns=120,
            checkpoint_url=checkpoint_url,
            chroma_server=chroma_server.address,
            openai_base_url=stub.base_url,
            run_id="test",
            folder=tmp_path / "run",
        )
    assert report["problems"] == []
    assert report["answered"] == report["turns"] == 120
    assert report["feedback_turns"] == 60 and report["pairs"] == 120
    # Syntheses ran, each saved persona came from one of them.
    assert report["fits"] >= report["accepted_syntheses"] > 0


def test_the_servers_routes_and_auth_need_nothing_of_the_in_memory_runtime(tmp_path: Path) -> None:
    """A PostgreSQL-backed LangGraph server has no `langgraph_runtime_inmem`: server.py must not need it."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "for name in ('langgraph_runtime_inmem', 'langgraph_api', 'langgraph_runtime'):\n"
        "    sys.modules[name] = None  # importing any of them now fails\n"
        "import server\n"
        "from starlette.testclient import TestClient\n"
        "with TestClient(server.app) as client:\n"
        "    assert client.get('/memory/persona').status_code == 401\n"
        "    signed_in = {'Authorization': 'Bearer token-of-alice'}\n"
        "    answer = client.get('/memory/persona', headers=signed_in)\n"
        "    assert answer.status_code == 200 and answer.json()['user_id'] == 'alice', answer.text\n"
        "    assert client.get('/inspector').status_code == 200\n"
        "print(type(server.auth).__name__)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {
        "PYTHONPATH": str(root),
        "PERSONA_AGENT_TOKENS": "token-of-alice=alice",
        "PERSONA_AGENT_DATA_DIR": str(tmp_path / "data"),
        "ANONYMIZED_TELEMETRY": "False",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "Auth"
