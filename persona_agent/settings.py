"""One settings object, read from the environment and an optional `.env` file.

Every entry point (CLI, demo, server, benchmarks) builds its parts from `Settings` through
`persona_agent.factory`; library code in `agent/`, `memory/` and `graphs/` never reads the
environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.errors import ConfigurationError
from agent.records import Limits
from graphs.state import InRunSynthesisMode

StructuredOutputMethod = Literal["json_schema", "function_calling", "json_mode"]
JudgeKind = Literal["llm", "offline", "hybrid"]
PersonaSource = Literal["llm", "offline", "auto"]
AuthMode = Literal["tokens", "dev"]
CheckpointSync = Literal["normal", "full"]
CheckpointDurability = Literal["exit", "async", "sync"]
# How the product writes a chat turn's checkpoint unless configured otherwise (the bench measures it).
DEFAULT_CHECKPOINT_DURABILITY: CheckpointDurability = "exit"


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"PERSONA_AGENT_{name.upper()}", name)


class Settings(BaseSettings):
    """Configuration of persona-agent. Environment variables beat `.env`, which beats defaults."""

    model_config = SettingsConfigDict(
        env_prefix="PERSONA_AGENT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- language model -----------------------------------------------------------------
    openai_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "PERSONA_AGENT_OPENAI_BASE_URL", "openai_base_url"),
        description="Base URL of an OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server, OpenAI).",
    )
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "PERSONA_AGENT_OPENAI_API_KEY", "openai_api_key"),
    )
    model: str = Field("gpt-4o-mini", description="Chat model name at the endpoint.")
    judge_model: str | None = Field(None, description="Separate judge model name; defaults to `model`.")
    structured_output_method: StructuredOutputMethod = Field(
        "json_schema", description="How the endpoint is asked for structured output; servers differ."
    )
    logprobs: bool = Field(True, description="Ask the judge model for token log-probabilities.")
    request_timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10, description="Retries of a failed model call.")
    llm_concurrency: int | None = Field(
        None, ge=1, le=64, description="Concurrent model calls; default 1 embedded, 8 for an endpoint."
    )
    temperature: float = Field(0.8, ge=0.0, le=2.0, description="Sampling temperature of drafted replies.")

    # --- embedded model -----------------------------------------------------------------
    embedded_model_path: Path | None = Field(None, description="A GGUF file; default: SmolLM2-135M.")
    embedded_threads: int = Field(2, ge=1, le=256)
    embedded_context_tokens: int = Field(4096, ge=512)

    # --- memory -------------------------------------------------------------------------
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("persona-agent")))
    chroma_server: str | None = Field(
        None, description="host:port of a `chroma run` server; unset means a local store under data_dir."
    )
    checkpoint_sync: CheckpointSync = Field(
        "normal",
        description="SQLite `synchronous` mode of the thread checkpoints (WAL journal): normal syncs at "
        "WAL checkpoints only, so a power cut may lose the last turns' checkpoints but never corrupts "
        "the file; full syncs every write (slower; BENCHMARKS.md has the figures).",
    )
    checkpoint_url: SecretStr | None = Field(
        None,
        description="A postgresql:// URL: chat threads are checkpointed in that PostgreSQL database, "
        "which several app processes can share; unset means a SQLite file under data_dir.",
    )
    checkpoint_pool_size: int = Field(
        10, ge=1, le=200, description="Most PostgreSQL connections one process opens for checkpoints."
    )
    checkpoint_durability: CheckpointDurability = Field(
        DEFAULT_CHECKPOINT_DURABILITY,
        description="When a chat turn's thread checkpoint is written (LangGraph `durability`): exit "
        "writes once, when the turn ends (also on an error); async after every step, beside the next "
        "one; sync after every step, before the next one. exit writes least; a turn killed mid-way "
        "then leaves its thread as it was before the turn, and the user sends it again.",
    )

    # --- serving ----------------------------------------------------------------------------
    auth: AuthMode = Field(
        "tokens", description="How the server maps bearer tokens to users: tokens (files/env) or dev."
    )
    tokens_file: Path | None = Field(None, description='JSON file of {"token": "user_id"} for the server.')
    tokens: SecretStr | None = Field(None, description='Server tokens as "token1=alice,token2=bob".')

    # --- agent behaviour ------------------------------------------------------------------
    candidates: int = Field(3, ge=1, le=8, description="Candidate replies drafted per chat turn.")
    first_synthesis_at: int = Field(5, ge=2, description="Pairs needed before the first persona.")
    resynthesize_every: int = Field(3, ge=1, description="New pairs that trigger a re-synthesis.")
    synthesis_mode: InRunSynthesisMode = "deferred"
    judge: JudgeKind | None = Field(
        None,
        description="Which judge picks replies: llm, offline or hybrid. Unset: llm with an endpoint, "
        "offline with the embedded model (a 135M model judges at about chance; BENCHMARKS.md has "
        "each judge's accuracy).",
    )
    persona_source: PersonaSource = Field(
        "auto",
        description="What writes a user's persona: llm (SynthesizeMe), offline (the personal reward "
        "model's statements, no LLM call) or auto (llm with an endpoint, offline with the embedded "
        "model, which cannot write a usable persona).",
    )
    learn_tastes_every_s: float = Field(
        0.0,
        ge=0.0,
        description="Seconds between the server's own runs of `persona-agent memory learn-tastes`, "
        "the first at start-up; 0: the server never runs it.",
    )
    demo_k: int = Field(3, ge=0, le=16, description="Demos retrieved per chat turn.")
    retrieval_similarity_weight: float = Field(1.0, ge=0.0)
    retrieval_informativeness_weight: float = Field(0.3, ge=0.0)
    retrieval_mmr_lambda: float = Field(0.7, ge=0.0, le=1.0)
    max_pairs_per_synthesis: int = Field(40, ge=2, description="Most recent pairs one synthesis reads.")
    max_calls_per_synthesis: int = Field(80, ge=1, description="LLM-call budget of one synthesis.")
    induction_max_tokens: int = Field(
        16_000,
        ge=1_000,
        description="Token budget (estimated as characters / 4) of the prompt that writes a persona: "
        "each past choice shown gets an equal share, with its replies and reasoning in full and as "
        "many of its conversation's turns as fit, oldest dropped first. Keep it below the judge "
        "model's context window, less room for the answer; with the embedded model it is capped "
        "at half of embedded_context_tokens.",
    )
    max_text_chars: int = Field(20_000, ge=100, description="Longest text accepted in a pair.")
    max_context_turns: int = Field(64, ge=1)

    @field_validator("openai_base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("chroma_server")
    @classmethod
    def _chroma_server(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be host:port, got {value!r}")
        return value

    @field_validator("checkpoint_url")
    @classmethod
    def _checkpoint_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        # The URL may hold a password: the message names the problem, never the value.
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        if self.judge is None:
            self.judge = "llm" if self.uses_endpoint else "offline"
        if self.persona_source == "auto":
            self.persona_source = "llm" if self.uses_endpoint else "offline"
        return self

    # --- derived ----------------------------------------------------------------------
    @property
    def uses_endpoint(self) -> bool:
        """True when an OpenAI-compatible endpoint is configured (base URL or API key)."""
        return self.openai_base_url is not None or self.openai_api_key is not None

    @property
    def concurrency(self) -> int:
        """How many model calls may run at once."""
        if self.llm_concurrency is not None:
            return self.llm_concurrency
        return 8 if self.uses_endpoint else 1

    @property
    def chroma_dir(self) -> Path:
        """Directory of the local Chroma store."""
        return self.data_dir / "chroma"

    @property
    def checkpoint_path(self) -> Path:
        """SQLite file of LangGraph thread checkpoints."""
        return self.data_dir / "checkpoints.sqlite"

    @property
    def limits(self) -> Limits:
        """Size caps applied to every stored pair."""
        return Limits(max_text_chars=self.max_text_chars, max_context_turns=self.max_context_turns)

    @property
    def model_label(self) -> str:
        """Human-readable name of the chat model in use."""
        if self.uses_endpoint:
            return f"{self.model} at {self.openai_base_url or 'api.openai.com'}"
        return f"embedded {self.embedded_model_path.name if self.embedded_model_path else 'SmolLM2-135M'}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into a ConfigurationError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ConfigurationError(f"bad setting: {problems}") from None
