"""Settings resolution: environment beats .env beats defaults; bad values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigurationError
from persona_agent.settings import load_settings


def test_defaults_use_the_embedded_model_and_a_local_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PERSONA_AGENT_DATA_DIR")
    settings = load_settings()
    assert not settings.uses_endpoint
    assert settings.concurrency == 1
    assert settings.chroma_server is None
    assert settings.data_dir.name == "persona-agent"
    assert settings.chroma_dir == settings.data_dir / "chroma"
    assert settings.candidates == 3


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1/")
    monkeypatch.setenv("PERSONA_AGENT_MODEL", "llama-3.3-70b")
    monkeypatch.setenv("PERSONA_AGENT_CANDIDATES", "5")
    monkeypatch.setenv("PERSONA_AGENT_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("PERSONA_AGENT_CHROMA_SERVER", "127.0.0.1:8123")
    settings = load_settings()
    assert settings.uses_endpoint
    assert settings.openai_base_url == "http://127.0.0.1:8080/v1"
    assert settings.model == "llama-3.3-70b"
    assert settings.candidates == 5
    assert settings.concurrency == 8
    assert settings.data_dir == tmp_path / "d"
    assert settings.chroma_server == "127.0.0.1:8123"


def test_environment_beats_dotenv_which_beats_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PERSONA_AGENT_CANDIDATES=4\nPERSONA_AGENT_DEMO_K=6\n")
    monkeypatch.setenv("PERSONA_AGENT_DEMO_K", "2")
    settings = load_settings()
    assert settings.candidates == 4  # from .env
    assert settings.demo_k == 2  # environment wins


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("PERSONA_AGENT_CANDIDATES", "many", "candidates"),
        ("PERSONA_AGENT_CANDIDATES", "9", "candidates"),
        ("OPENAI_BASE_URL", "localhost:8000", "http://"),
        ("PERSONA_AGENT_CHROMA_SERVER", "no-port", "host:port"),
        ("PERSONA_AGENT_STRUCTURED_OUTPUT_METHOD", "xml", "structured_output_method"),
        ("PERSONA_AGENT_JUDGE", "oracle", "judge"),
        ("PERSONA_AGENT_CHECKPOINT_SYNC", "off", "checkpoint_sync"),
        ("PERSONA_AGENT_CHECKPOINT_DURABILITY", "never", "checkpoint_durability"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, fragment: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=fragment):
        load_settings()


def test_judge_defaults_to_offline_with_the_embedded_model_and_llm_with_an_endpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().judge == "offline"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    assert load_settings().judge == "llm"
    monkeypatch.setenv("PERSONA_AGENT_JUDGE", "hybrid")
    assert load_settings().judge == "hybrid"


def test_the_induction_budget_reaches_the_fit_within_the_embedded_context(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from persona_agent.factory import build_synthesize_me
    from tests.fakes import CountingChatModel, default_responder

    monkeypatch.chdir(tmp_path)
    model = CountingChatModel(responder=default_responder())
    monkeypatch.setenv("PERSONA_AGENT_INDUCTION_MAX_TOKENS", "12000")
    monkeypatch.setenv("PERSONA_AGENT_EMBEDDED_CONTEXT_TOKENS", "8192")
    assert build_synthesize_me(load_settings(), model, model).induction_max_tokens == 4096
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    assert build_synthesize_me(load_settings(), model, model).induction_max_tokens == 12000
    monkeypatch.setenv("PERSONA_AGENT_INDUCTION_MAX_TOKENS", "10")
    with pytest.raises(ConfigurationError, match="induction_max_tokens"):
        load_settings()


@pytest.mark.parametrize(("sync", "pragma"), [("normal", 1), ("full", 2)])
async def test_checkpointer_opens_in_wal_mode_with_the_configured_sync_and_keeps_threads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sync: str, pragma: int
) -> None:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import empty_checkpoint

    from persona_agent.factory import build_checkpointer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERSONA_AGENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PERSONA_AGENT_CHECKPOINT_SYNC", sync)
    settings = load_settings()
    config = RunnableConfig(configurable={"thread_id": "t1", "checkpoint_ns": ""})
    async with build_checkpointer(settings) as saver:
        await saver.setup()
        async with saver.conn.execute("PRAGMA synchronous") as cursor:
            assert (await cursor.fetchone()) == (pragma,)
        async with saver.conn.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone()) == ("wal",)
        stored = await saver.aput(config, empty_checkpoint(), {"step": 1}, {})
    async with build_checkpointer(settings) as saver:  # a restart finds the thread
        found = await saver.aget_tuple(config)
    assert found is not None
    assert found.config["configurable"]["checkpoint_id"] == stored["configurable"]["checkpoint_id"]


async def test_checkpointer_refuses_an_unknown_sync_mode(tmp_path: Path) -> None:
    from persona_agent.factory import open_checkpointer

    with pytest.raises(ConfigurationError, match="'normal' or 'full'"):
        async with open_checkpointer(tmp_path / "c.sqlite", sync="off"):  # type: ignore[arg-type]
            pass
    assert not (tmp_path / "c.sqlite").exists()
