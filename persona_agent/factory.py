"""Build the project's parts from `Settings`: chat and judge models, embeddings, memory store.

This is the one place that turns configuration into objects; the CLI, the demo, `server.py` and
the benchmarks call it, and library code receives the objects it builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_core.language_models import BaseChatModel

from persona_agent.settings import Settings

if TYPE_CHECKING:
    from memory.embeddings import MiniLMEmbeddings
    from memory.store import PreferenceStore


def _endpoint_model(settings: Settings, name: str, *, temperature: float, logprobs: bool) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=name,
        base_url=settings.openai_base_url,
        # Local servers accept any key; ChatOpenAI insists on one being set.
        api_key=settings.openai_api_key or "not-needed",  # type: ignore[arg-type]
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


def build_embeddings(settings: Settings) -> MiniLMEmbeddings:
    """Return the embedding model used by memory retrieval and the offline judge."""
    from memory.embeddings import MiniLMEmbeddings

    return MiniLMEmbeddings()


def build_store(settings: Settings) -> PreferenceStore:
    """Return the memory store: on the `chroma run` server when one is set, else on local disk."""
    from memory.chroma import make_client
    from memory.store import PreferenceStore

    if settings.chroma_server:
        client = make_client(server=settings.chroma_server)
    else:
        client = make_client(path=settings.chroma_dir)
    return PreferenceStore(client, build_embeddings(settings), limits=settings.limits)
