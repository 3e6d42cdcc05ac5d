"""Build the project's parts from `Settings`: chat and judge models, embeddings, memory store.

This is the one place that turns configuration into objects; the CLI, the demo, `server.py` and
the benchmarks call it, and library code receives the objects it builds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from langchain_core.language_models import BaseChatModel
from langgraph.types import Checkpointer

from agent.errors import ConfigurationError
from persona_agent.settings import CheckpointSync, Settings

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph.state import CompiledStateGraph

    from agent.archetypes import Archetype
    from agent.features import FeatureExtractor
    from agent.reward_model import RewardModel
    from agent.shared_tastes import SharedTastes
    from agent.synthesis import PersonaSynthesizer, SynthesizeMe
    from graphs.chat import ChatOptions
    from graphs.judges import JudgeFactory, OfflineJudges
    from memory.embeddings import MiniLMEmbeddings
    from memory.store import PreferenceStore


def _endpoint_model(settings: Settings, name: str, *, temperature: float, logprobs: bool) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=name,
        base_url=settings.openai_base_url,
        # Local servers accept any key; ChatOpenAI insists on one being set.
        api_key=settings.openai_api_key or "not-needed",
        temperature=temperature,
        timeout=settings.request_timeout_s,
        max_retries=settings.max_retries,
        logprobs=logprobs or None,
        top_logprobs=5 if logprobs else None,
    )


def build_chat_model(settings: Settings) -> BaseChatModel:
    """Return the model that drafts replies and writes personas."""
    if settings.uses_endpoint:
        return _endpoint_model(settings, settings.model, temperature=settings.temperature, logprobs=False)
    from persona_agent.embedded_llm import ChatLlamaCpp, bundled_model_path

    return ChatLlamaCpp(
        model_path=settings.embedded_model_path or bundled_model_path(),
        n_threads=settings.embedded_threads,
        n_ctx=settings.embedded_context_tokens,
        temperature=settings.temperature,
    )


def build_judge_model(settings: Settings) -> BaseChatModel:
    """Return the model that judges pairs: deterministic, with log-probabilities when enabled."""
    if settings.uses_endpoint:
        return _endpoint_model(
            settings, settings.judge_model or settings.model, temperature=0.0, logprobs=settings.logprobs
        )
    from persona_agent.embedded_llm import ChatLlamaCpp, bundled_model_path

    return ChatLlamaCpp(
        model_path=settings.embedded_model_path or bundled_model_path(),
        n_threads=settings.embedded_threads,
        n_ctx=settings.embedded_context_tokens,
        temperature=0.0,
        max_tokens=256,
        logprobs=settings.logprobs,
    )


def build_embeddings(settings: Settings, *, purpose: Literal["retrieval", "replies"]) -> MiniLMEmbeddings:
    """Return the embedding model for memory retrieval keys or for the offline judge's replies.

    Both share one loaded model; retrieval keys are cut to the store's key length, replies are
    embedded up to the model's full 256 word pieces, as the population prior was fit.
    """
    from memory.embeddings import MAX_TOKENS, MiniLMEmbeddings
    from memory.retrieval import retrieval_embeddings

    return retrieval_embeddings() if purpose == "retrieval" else MiniLMEmbeddings(max_tokens=MAX_TOKENS)


def build_store(settings: Settings) -> PreferenceStore:
    """Return the memory store: on the `chroma run` server when one is set, else on local disk."""
    from memory.chroma import make_client
    from memory.store import PreferenceStore

    if settings.chroma_server:
        client = make_client(server=settings.chroma_server)
    else:
        client = make_client(path=settings.chroma_dir)
    return PreferenceStore(client, build_embeddings(settings, purpose="retrieval"), limits=settings.limits)


def warm_up(store: PreferenceStore, models: Iterable[BaseChatModel]) -> None:
    """Load the weights the parts otherwise load at first use: the embedded LLM's, the embedding model's.

    The server calls this at start, so that its first request does not wait for them.
    """
    from agent.embedding import Embedder
    from persona_agent.embedded_llm import ChatLlamaCpp

    for model in models:
        if isinstance(model, ChatLlamaCpp):
            model.load()
    embedder = store.embeddings.model
    (embedder.embed if isinstance(embedder, Embedder) else embedder.embed_documents)(["warm-up"])


@asynccontextmanager
async def open_checkpointer(
    path: Path, *, sync: CheckpointSync = "normal"
) -> AsyncIterator[AsyncSqliteSaver]:
    """Open an `AsyncSqliteSaver` on `path` in WAL mode with the given `synchronous` mode."""
    if sync not in get_args(CheckpointSync):
        raise ConfigurationError(f"checkpoint sync must be 'normal' or 'full', got {sync!r}")
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(str(path)) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={sync.upper()}")
        yield AsyncSqliteSaver(conn)


# Serializes `setup()` (the saver's schema migrations) across processes starting at once: two
# concurrent migrations of a fresh database collide on the migrations table.
_TRY_SETUP_LOCK = "SELECT pg_try_advisory_lock(1885696627) AS locked"  # the key spells "pers"


@asynccontextmanager
async def open_postgres_checkpointer(url: str, *, pool_size: int = 10) -> AsyncIterator[AsyncPostgresSaver]:
    """Open an `AsyncPostgresSaver` over a connection pool to `url`, its tables set up; ``async with``.

    Several processes may open one database at once: the first creates or migrates the tables
    under a PostgreSQL advisory lock, the others wait for it and find them ready.
    """
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg import AsyncConnection, OperationalError
    from psycopg.rows import DictRow, dict_row
    from psycopg_pool import AsyncConnectionPool

    # The saver's own settings for its connections (see `AsyncPostgresSaver.from_conn_string`).
    options: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    try:
        async with await AsyncConnection.connect(url, connect_timeout=10, **options) as conn:
            # Poll instead of blocking in pg_advisory_lock: a migration creates an index
            # CONCURRENTLY, which waits for every open transaction, a blocked lock call included.
            while not (await (await conn.execute(_TRY_SETUP_LOCK)).fetchone() or {}).get("locked"):
                await asyncio.sleep(0.05)
            await AsyncPostgresSaver(conn).setup()  # the lock goes with the connection
    except OperationalError as exc:
        raise ConfigurationError(
            f"checkpoint URL: cannot use PostgreSQL at {_without_password(url)}: {exc}"
        ) from None
    async with AsyncConnectionPool(
        url,
        connection_class=AsyncConnection[DictRow],
        min_size=1,
        max_size=pool_size,
        kwargs=options,
        open=False,
    ) as pool:
        yield AsyncPostgresSaver(pool)


def _without_password(url: str) -> str:
    """Return `url` with any password replaced by ``***``, fit for error messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def build_checkpointer(settings: Settings) -> AbstractAsyncContextManager[BaseCheckpointSaver[Any]]:
    """Open the checkpointer of chat threads; use as ``async with``.

    With `checkpoint_url` set, threads live in that PostgreSQL database (`AsyncPostgresSaver` over
    a connection pool), so several app processes serve one user's thread; otherwise in the SQLite
    file under the data directory. Either way the saver needs a running event loop and open
    connections, closed on exit; threads survive restarts.
    """
    if settings.checkpoint_url is not None:
        return open_postgres_checkpointer(
            settings.checkpoint_url.get_secret_value(), pool_size=settings.checkpoint_pool_size
        )
    return open_checkpointer(settings.checkpoint_path, sync=settings.checkpoint_sync)


def chat_options(settings: Settings) -> ChatOptions:
    """Return the chat graph's behaviour from settings."""
    from graphs.chat import ChatOptions

    return ChatOptions(
        candidates=settings.candidates,
        first_synthesis_at=settings.first_synthesis_at,
        resynthesize_every=settings.resynthesize_every,
        synthesis_mode=settings.synthesis_mode,
        demo_k=settings.demo_k,
        similarity_weight=settings.retrieval_similarity_weight,
        informativeness_weight=settings.retrieval_informativeness_weight,
        mmr_lambda=settings.retrieval_mmr_lambda,
        concurrency=settings.concurrency,
        structured_method=settings.structured_output_method,
        max_context_turns=settings.max_context_turns,
        # An attempt makes several calls, each bounded by the request timeout. The embedded model
        # computes in a thread that a timeout cannot stop, and its output is bounded by max_tokens.
        reply_timeout_s=settings.request_timeout_s * 4 if settings.uses_endpoint else None,
    )


@dataclass(frozen=True)
class OfflineParts:
    """The offline reward model's population prior and reply features, shared by its judge and writer.

    `archetypes` are where a new user may choose to start from instead of the prior (`agent.starting`).
    """

    prior: RewardModel
    extractor: FeatureExtractor
    archetypes: tuple[Archetype, ...] = ()


def build_offline_parts(settings: Settings) -> OfflineParts:
    """Load the shipped population prior, its archetypes and a feature extractor over the reply embedder."""
    from agent.archetypes import load_archetypes
    from agent.features import FeatureExtractor
    from agent.reward_model import RewardModel

    extractor = FeatureExtractor(build_embeddings(settings, purpose="replies"))
    return OfflineParts(RewardModel.load(), extractor, load_archetypes())


def build_synthesizer(
    settings: Settings,
    chat_model: BaseChatModel,
    judge_model: BaseChatModel,
    *,
    seed: int = 0,
    offline: OfflineParts | None = None,
    store: PreferenceStore | None = None,
) -> PersonaSynthesizer:
    """Return what `settings.persona_source` names: SynthesizeMe, or the offline reward model's writer.

    With a `store`, the offline writer fits users with the tastes its users share, as the offline
    judge does (`PreferenceStore.taste_masses`).
    """
    if settings.persona_source == "offline":
        from agent.offline_persona import OfflinePersonaWriter

        parts = offline or build_offline_parts(settings)
        return OfflinePersonaWriter(
            parts.prior,
            parts.extractor,
            max_pairs=settings.max_pairs_per_synthesis,
            masses_of=store.taste_masses if store is not None else None,
        )
    return build_synthesize_me(settings, chat_model, judge_model, seed=seed)


def build_synthesize_me(
    settings: Settings,
    chat_model: BaseChatModel,
    judge_model: BaseChatModel,
    *,
    seed: int = 0,
    kind: type[SynthesizeMe] | None = None,
    search: Mapping[str, Any] | None = None,
) -> SynthesizeMe:
    """Return SynthesizeMe (or the subclass `kind`) over the two models, configured from settings.

    The search is the configured one (call budget, pair cap) unless `search` gives other
    arguments of `kind`, as a benchmark's wider search does; ``{}`` keeps the defaults of `kind`.
    """
    from agent.synthesis import SynthesizeMe

    budget = {"max_calls": settings.max_calls_per_synthesis, "max_pairs": settings.max_pairs_per_synthesis}
    return (kind or SynthesizeMe)(
        chat_model,
        judge_model=judge_model,
        structured_method=settings.structured_output_method,
        concurrency=settings.concurrency,
        seed=seed,
        induction_max_tokens=induction_tokens(settings),
        **(budget if search is None else search),
    )


def induction_tokens(settings: Settings) -> int:
    """Return the persona-induction prompt budget: the setting, within the embedded model's context."""
    if settings.uses_endpoint:
        return settings.induction_max_tokens
    return min(settings.induction_max_tokens, settings.embedded_context_tokens // 2)


def build_judges(
    settings: Settings,
    *,
    store: PreferenceStore,
    judge_model: BaseChatModel,
    offline_parts: OfflineParts | None = None,
) -> JudgeFactory:
    """Return the per-turn judge factory that `settings.judge` names (llm, offline or hybrid)."""
    from graphs.judges import HybridJudges, LLMJudges

    llm = LLMJudges(
        judge_model, structured_method=settings.structured_output_method, concurrency=settings.concurrency
    )
    if settings.judge == "llm":
        return llm
    offline = build_offline_judges(settings, store=store, offline_parts=offline_parts)
    return offline if settings.judge == "offline" else HybridJudges(llm, offline)


def build_offline_judges(
    settings: Settings, *, store: PreferenceStore, offline_parts: OfflineParts | None = None
) -> OfflineJudges:
    """Return the offline judges over `store`: each user's model fitted on their newest pairs."""
    from graphs.judges import OfflineJudges

    parts = offline_parts or build_offline_parts(settings)
    return OfflineJudges(
        store,
        parts.prior,
        parts.extractor,
        max_pairs=settings.max_pairs_per_synthesis,
        archetypes=parts.archetypes,
    )


def learn_shared_tastes(
    settings: Settings, *, store: PreferenceStore, offline_parts: OfflineParts | None = None
) -> SharedTastes:
    """Learn the tastes the stored users share from their newest pairs and store them (blocking).

    Users deleted while the tastes were learnt are left out of what is stored.
    """
    judges = build_offline_judges(settings, store=store, offline_parts=offline_parts)
    tastes = store.keep_shared_tastes_of(judges.learn_shared_tastes())
    store.save_shared_tastes(tastes)
    return tastes


def build_chat_graph(
    settings: Settings,
    *,
    store: PreferenceStore | None = None,
    checkpointer: Checkpointer = None,
    chat_model: BaseChatModel | None = None,
    judge_model: BaseChatModel | None = None,
    offline_parts: OfflineParts | None = None,
    synthesizer: PersonaSynthesizer | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the chat graph from settings; parts not passed are built here."""
    from graphs.chat import build_graph

    store = store or build_store(settings)
    chat_model = chat_model or build_chat_model(settings)
    judge_model = judge_model or build_judge_model(settings)
    if offline_parts is None and (settings.judge != "llm" or settings.persona_source == "offline"):
        offline_parts = build_offline_parts(settings)  # one embedder and feature cache for judge and writer
    return build_graph(
        chat_model=chat_model,
        judge_model=judge_model,
        memory=store,
        checkpointer=checkpointer,
        synthesizer=synthesizer
        or build_synthesizer(settings, chat_model, judge_model, offline=offline_parts, store=store),
        judges=build_judges(settings, store=store, judge_model=judge_model, offline_parts=offline_parts),
        options=chat_options(settings),
    )


def build_synthesis_graph(
    settings: Settings,
    *,
    store: PreferenceStore | None = None,
    chat_model: BaseChatModel | None = None,
    judge_model: BaseChatModel | None = None,
    offline_parts: OfflineParts | None = None,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the standalone synthesis graph from settings."""
    from graphs.synthesis import build_graph

    chat_model = chat_model or build_chat_model(settings)
    judge_model = judge_model or build_judge_model(settings)
    options = chat_options(settings)  # the same retries and timeout as a synthesis inside a chat
    store = store or build_store(settings)
    return build_graph(
        synthesizer=build_synthesizer(settings, chat_model, judge_model, offline=offline_parts, store=store),
        memory=store,
        attempts=options.attempts,
        retry_interval_s=options.retry_interval_s,
        timeout_s=options.synthesis_timeout_s,
    )
