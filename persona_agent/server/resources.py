"""What the server builds from settings once and shares between its routes, its auth and its graphs.

Nothing is built at import time: `ServerResources.start` (run by the app's lifespan when the
server starts) reads the tokens, builds the graphs and loads the models' weights, so bad settings
fail the start and no request waits for a build.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from persona_agent.server.tokens import TokenMap, load_token_map
from persona_agent.settings import Settings, load_settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langgraph.pregel import Pregel

    from agent.shared_tastes import SharedTastes
    from graphs.chat import ChatOptions
    from memory.store import PreferenceStore
    from persona_agent.factory import OfflineParts


@dataclass
class ServerResources:
    """What the server needs, built from settings on first use and shared by routes, auth and graphs."""

    settings_factory: Callable[[], Settings] = load_settings
    store_factory: Callable[[Settings], PreferenceStore] | None = None
    graph_factories: dict[str, GraphFactory] = field(default_factory=dict)
    build_at_start: tuple[str, ...] = ()
    _settings: Settings | None = None
    _tokens: TokenMap | None = None
    _store: PreferenceStore | None = None
    _models: tuple[BaseChatModel, BaseChatModel] | None = None
    _offline_parts: OfflineParts | None = None
    _graphs: dict[str, Pregel] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def settings(self) -> Settings:
        """The server's settings, read once."""
        with self._lock:
            if self._settings is None:
                self._settings = self.settings_factory()
            return self._settings

    @property
    def options(self) -> ChatOptions:
        """The chat graph's options from settings: the routes show memory as a chat turn reads it."""
        from persona_agent.factory import chat_options

        return chat_options(self.settings)

    @property
    def tokens(self) -> TokenMap:
        """The bearer-token map, read once from settings."""
        with self._lock:
            if self._tokens is None:
                self._tokens = load_token_map(self.settings)
            return self._tokens

    @property
    def store(self) -> PreferenceStore:
        """The memory store (blocking to build: call from a worker thread)."""
        with self._lock:
            if self._store is None:
                if self.store_factory is None:
                    from persona_agent.factory import build_store

                    self._store = build_store(self.settings)
                else:
                    self._store = self.store_factory(self.settings)
            return self._store

    @property
    def models(self) -> tuple[BaseChatModel, BaseChatModel]:
        """The chat and judge models, built once and shared by both graphs (blocking to build)."""
        with self._lock:
            if self._models is None:
                from persona_agent.factory import build_chat_model, build_judge_model

                self._models = (build_chat_model(self.settings), build_judge_model(self.settings))
            return self._models

    @property
    def offline_parts(self) -> OfflineParts:
        """The offline reward model's prior and feature extractor, loaded once (blocking to build)."""
        with self._lock:
            if self._offline_parts is None:
                from persona_agent.factory import build_offline_parts

                self._offline_parts = build_offline_parts(self.settings)
            return self._offline_parts

    def graph(self, name: str) -> Pregel:
        """Return the named compiled graph, building it on first use (blocking)."""
        with self._lock:
            if name not in self._graphs:
                build = self.graph_factories.get(name) or DEFAULT_GRAPHS[name]
                self._graphs[name] = build(self)
            return self._graphs[name]

    async def agraph(self, name: str) -> Pregel:
        """Return the named graph; one already built comes without waiting for a worker thread."""
        built = self._graphs.get(name)
        return built if built is not None else await asyncio.to_thread(self.graph, name)

    def start(self) -> None:
        """Read the tokens, build the graphs in `build_at_start` and load their models' weights (blocking)."""
        self.tokens  # noqa: B018 - fails here, at start-up, on bad settings or a bad tokens file
        for name in self.build_at_start:
            self.graph(name)
        if self.build_at_start:  # and the weights loaded at first use, so the first turn does not wait
            from persona_agent.factory import warm_up

            warm_up(self.store, self.models)

    def learn_shared_tastes(self) -> SharedTastes:
        """Learn and store the tastes the stored users share, as `memory learn-tastes` does (blocking)."""
        from persona_agent.factory import learn_shared_tastes

        return learn_shared_tastes(self.settings, store=self.store, offline_parts=self.offline_parts)

    def authenticate(self, authorization: str | None) -> str:
        """Return the user id behind an Authorization header, or raise Unauthenticated."""
        return self.tokens.authenticate(authorization)


GraphFactory = Callable[[ServerResources], "Pregel"]


def _build_chat_graph(resources: ServerResources) -> Pregel:
    from persona_agent.factory import build_chat_graph

    chat_model, judge_model = resources.models
    # No checkpointer here: the LangGraph server gives every run its own.
    return build_chat_graph(
        resources.settings,
        store=resources.store,
        checkpointer=None,
        chat_model=chat_model,
        judge_model=judge_model,
    )


def _build_synthesis_graph(resources: ServerResources) -> Pregel:
    from persona_agent.factory import build_synthesis_graph

    chat_model, judge_model = resources.models
    return build_synthesis_graph(
        resources.settings, store=resources.store, chat_model=chat_model, judge_model=judge_model
    )


# The graphs `langgraph.json` names, by name; `ServerResources.graph_factories` may replace one.
DEFAULT_GRAPHS: dict[str, GraphFactory] = {
    "chat": _build_chat_graph,
    "synthesis": _build_synthesis_graph,
}
