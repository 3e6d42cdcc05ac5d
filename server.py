"""The composition root for serving: settings, auth, memory routes and the graphs `langgraph.json` names.

`langgraph dev` (started by ``persona-agent serve``) imports this module as ``server`` for three
things: `chat_graph` and `synthesis_graph` (async graph factories returning the graphs built at
start), `auth` (a langgraph-sdk `Auth`: bearer tokens mapped to user ids, every thread and run
owned by the user that made it) and `app` (Starlette routes mounted beside the graph API: the
memory inspector and its JSON routes). Nothing is built at import time; when the server starts,
`app`'s lifespan has `ServerResources` build the store, models and graphs from `Settings`, so no
request waits for them (and LangGraph does not log a slow graph load).

The memory routes authenticate themselves with the same token map as `auth` (the graph API's
auth middleware is not applied to custom routes, so that the inspector page loads in a browser
without a header). The user id comes only from the token; no route accepts one as input.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph_sdk import Auth
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agent.errors import InvalidPreference, PersonaAgentError
from persona_agent.auth import TokenMap, Unauthenticated, load_token_map
from persona_agent.settings import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from langchain_core.language_models import BaseChatModel
    from langgraph.pregel import Pregel

    from memory.store import PreferenceStore
    from persona_agent.factory import OfflineParts

STATIC_DIR = Path(str(importlib.resources.files("persona_agent") / "static"))
MAX_IMPORT_BYTES = 20 * 1024 * 1024
MAX_PAGE = 200
MAX_DEMOS = 16
OWNER_KEY = "owner"

logger = logging.getLogger(__name__)


# --- resources ---------------------------------------------------------------------------------
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
                build = self.graph_factories.get(name) or _DEFAULT_GRAPHS[name]
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


_DEFAULT_GRAPHS: dict[str, GraphFactory] = {
    "chat": _build_chat_graph,
    "synthesis": _build_synthesis_graph,
}


# --- errors ------------------------------------------------------------------------------------
def error_response(exc: PersonaAgentError) -> JSONResponse:
    """Turn one of the project's errors into a JSON response with its HTTP status."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
    return JSONResponse(
        {"error": type(exc).__name__, "detail": str(exc)}, status_code=exc.http_status, headers=headers
    )


def _int_param(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidPreference(f"{name}: must be an integer, got {raw[:20]!r}") from None
    if not low <= value <= high:
        raise InvalidPreference(f"{name}: must be between {low} and {high}, got {value}")
    return value


Handler = Callable[[Request, str, ServerResources], Awaitable[Response]]


def _authenticated(resources: ServerResources, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a route: resolve the caller from the bearer token, then map project errors to JSON."""

    async def endpoint(request: Request) -> Response:
        try:
            user_id = resources.authenticate(request.headers.get("authorization"))
            return await handler(request, user_id, resources)
        except PersonaAgentError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("memory route %s failed", request.url.path)
            return JSONResponse(
                {"error": "InternalError", "detail": "the server failed; see its log"}, status_code=500
            )

    endpoint.__name__ = handler.__name__
    return endpoint


# --- memory routes -----------------------------------------------------------------------------
def _persona_json(persona: Any) -> dict[str, Any]:
    data: dict[str, Any] = persona.model_dump(mode="json")
    data["verified_reasoning"] = sum(1 for item in persona.reasoning if item.verified)
    return data


async def get_persona(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return the user's current persona and every version, oldest first."""

    def read() -> dict[str, Any]:
        store = resources.store
        current = store.current_persona(user_id)
        history = store.persona_history(user_id)
        return {
            "user_id": user_id,
            "pair_count": store.count_pairs(user_id),
            "current_version": current.version if current else None,
            "current": _persona_json(current) if current else None,
            "history": [_persona_json(persona) for persona in history],
        }

    return JSONResponse(await asyncio.to_thread(read))


async def get_learnt(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return what was learnt: the preference statements, with pairs behind each, and the judge agreement."""
    from persona_agent.learnt import learnt

    def read() -> dict[str, Any]:
        store = resources.store
        max_pairs = resources.settings.max_pairs_per_synthesis
        persona = store.current_persona(user_id)
        view = learnt(store, user_id, persona, lambda: resources.offline_parts, max_pairs=max_pairs)
        return {"user_id": user_id, **view.to_json()}

    return JSONResponse(await asyncio.to_thread(read))


async def list_pairs(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return a page of the user's pairs, newest first, with what the default judge made of each."""
    offset = _int_param(request, "offset", 0, low=0, high=10**9)
    limit = _int_param(request, "limit", 50, low=1, high=MAX_PAGE)
    source = request.query_params.get("source") or None
    if source is not None and source not in ("explicit", "implicit", "import"):
        raise InvalidPreference(f"source: must be explicit, implicit or import, got {source[:20]!r}")

    def read() -> dict[str, Any]:
        store = resources.store
        page = store.list_pairs(user_id, offset=offset, limit=limit + 1, source=source)
        notes = store.annotations(user_id)
        pairs = []
        for pair in page[:limit]:
            note = notes.get(pair.id, {})
            pairs.append(
                {
                    **pair.model_dump(mode="json"),
                    "default_judge_correct": note.get("default_judge_correct"),
                    "has_verified_reasoning": bool(note.get("has_verified_reasoning")),
                    "reasoning": note.get("reasoning"),
                }
            )
        return {
            "user_id": user_id,
            "total": store.count_pairs(user_id),
            "offset": offset,
            "limit": limit,
            "source": source,
            "has_more": len(page) > limit,
            "pairs": pairs,
        }

    return JSONResponse(await asyncio.to_thread(read))


async def retrieve_demos(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return the demos the judge would see for a question, each with why it was picked."""
    query = (request.query_params.get("q") or "").strip()
    if not query:
        raise InvalidPreference("q: give the question to retrieve demos for")
    settings = resources.settings
    k = _int_param(request, "k", max(settings.demo_k, 1), low=1, high=MAX_DEMOS)

    def read() -> dict[str, Any]:
        demos = resources.store.retrieve_demos(
            user_id,
            query,
            k,
            similarity_weight=settings.retrieval_similarity_weight,
            informativeness_weight=settings.retrieval_informativeness_weight,
            mmr_lambda=settings.retrieval_mmr_lambda,
        )
        return {
            "user_id": user_id,
            "query": query,
            "k": k,
            "demos": [d.model_dump(mode="json") for d in demos],
        }

    return JSONResponse(await asyncio.to_thread(read))


def _import_text(body: bytes) -> str:
    """Return JSONL from a body holding JSONL, one JSON object or a JSON array of records."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPreference("body: must be UTF-8 text (JSONL or a JSON array)") from None
    stripped = text.strip()
    if not stripped:
        raise InvalidPreference("body: empty; send JSONL or a JSON array of preference records")
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidPreference(
                f"body: not a valid JSON array ({exc.msg} at line {exc.lineno})"
            ) from None
        except RecursionError:  # a nesting bomb must be refused like any other bad body, not a 500
            raise InvalidPreference("body: the JSON array is nested too deeply") from None
        if not records:
            raise InvalidPreference("body: the JSON array holds no records")
        return "\n".join(json.dumps(record, ensure_ascii=False) for record in records) + "\n"
    return text


async def import_pairs(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Import preference records (JSONL or a JSON array) for the caller; all are validated first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_IMPORT_BYTES:
        return _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_IMPORT_BYTES:
            return _too_large()
    text = _import_text(bytes(body))

    def write() -> dict[str, Any]:
        store = resources.store
        # The caller owns whatever they import: user ids inside the records are not trusted.
        added = store.import_user(text, user_id=user_id)
        return {"user_id": user_id, "imported": added, "total_pairs": store.count_pairs(user_id)}

    return JSONResponse(await asyncio.to_thread(write), status_code=201)


def _too_large() -> JSONResponse:
    return JSONResponse(
        {"error": "PayloadTooLarge", "detail": f"the body is over {MAX_IMPORT_BYTES} bytes"}, status_code=413
    )


async def export_memory(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Return everything stored about the caller as JSONL."""
    text = await asyncio.to_thread(resources.store.export_user, user_id)
    return PlainTextResponse(
        text,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{user_id}.jsonl"'},
    )


async def forget_me(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Delete everything stored about the caller."""
    deleted = await asyncio.to_thread(resources.store.delete_user, user_id)
    return JSONResponse({"user_id": user_id, "deleted": deleted})


async def rollback_persona(request: Request, user_id: str, resources: ServerResources) -> Response:
    """Make an earlier persona version current again."""
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidPreference('body: must be JSON like {"version": 2}') from None
    version = payload.get("version") if isinstance(payload, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidPreference('version: must be a positive integer, as in {"version": 2}')
    persona = await asyncio.to_thread(resources.store.rollback, user_id, version)
    return JSONResponse(
        {"user_id": user_id, "current_version": persona.version, "current": _persona_json(persona)}
    )


# --- inspector page ----------------------------------------------------------------------------
_STATIC_FILES = {
    "inspector.html": "text/html; charset=utf-8",
    "inspector.js": "text/javascript; charset=utf-8",
    "inspector.css": "text/css; charset=utf-8",
}


async def inspector_page(request: Request) -> Response:
    """Serve the memory inspector page or one of its assets."""
    name = request.path_params.get("asset", "inspector.html")
    if name not in _STATIC_FILES:
        return JSONResponse({"error": "NotFound", "detail": f"no asset {name[:40]!r}"}, status_code=404)
    return FileResponse(
        STATIC_DIR / name,
        media_type=_STATIC_FILES[name],
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def create_app(resources: ServerResources) -> Starlette:
    """Build the Starlette app of memory routes and the inspector over the given resources."""

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, _authenticated(resources, handler), methods=[method])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Fail at start-up, not at the first request, on bad settings; no request pays for building.
        await asyncio.to_thread(resources.start)
        yield

    return Starlette(
        routes=[
            route("/memory/persona", get_persona, "GET"),
            route("/memory/persona/rollback", rollback_persona, "POST"),
            route("/memory/learnt", get_learnt, "GET"),
            route("/memory/pairs", list_pairs, "GET"),
            route("/memory/pairs/import", import_pairs, "POST"),
            route("/memory/demos", retrieve_demos, "GET"),
            route("/memory/export", export_memory, "GET"),
            route("/memory", forget_me, "DELETE"),
            Route("/inspector", inspector_page, methods=["GET"]),
            Route("/inspector/{asset}", inspector_page, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


# --- graph API auth ----------------------------------------------------------------------------
def create_auth(resources: ServerResources) -> Auth:
    """Build the graph API's auth: tokens to users, every thread and run owned by its creator."""
    auth = Auth()

    @auth.authenticate
    async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
        try:
            user_id = await asyncio.to_thread(resources.authenticate, authorization)
        except Unauthenticated as exc:
            raise Auth.exceptions.HTTPException(status_code=401, detail=str(exc)) from None
        return {"identity": user_id, "display_name": user_id, "is_authenticated": True}

    def owner_filter(ctx: Auth.types.AuthContext) -> Auth.types.FilterType:
        return {OWNER_KEY: ctx.user.identity}

    @auth.on.threads.create
    async def own_new_thread(ctx: Auth.types.AuthContext, value: Auth.types.ThreadsCreate) -> Any:
        metadata = value.get("metadata")
        if metadata is None:
            metadata = value["metadata"] = {}
        metadata[OWNER_KEY] = ctx.user.identity
        return owner_filter(ctx)

    @auth.on.threads.create_run
    async def run_as_caller(ctx: Auth.types.AuthContext, value: Auth.types.RunsCreate) -> Any:
        identity = ctx.user.identity
        metadata = value.get("metadata")
        if metadata is None:
            metadata = value["metadata"] = {}
        metadata[OWNER_KEY] = identity
        kwargs = value.get("kwargs")
        if kwargs is None:
            kwargs = value["kwargs"] = {}
        # The graph learns who it serves from the token only; a user_id in the request is replaced.
        context = kwargs.get("context")
        kwargs["context"] = {**(context if isinstance(context, dict) else {}), "user_id": identity}
        config = kwargs.get("config")
        if isinstance(config, dict):
            configurable = config.get("configurable")
            if not isinstance(configurable, dict):
                configurable = config["configurable"] = {}
            configurable["user_id"] = identity
        return owner_filter(ctx)

    async def only_own_threads(ctx: Auth.types.AuthContext, value: Any) -> Any:
        return owner_filter(ctx)

    auth.on.threads.read(only_own_threads)
    auth.on.threads.delete(only_own_threads)
    auth.on.threads.search(only_own_threads)

    @auth.on.threads.update
    async def keep_thread_owner(ctx: Auth.types.AuthContext, value: Any) -> Any:
        metadata = value.get("metadata")
        if isinstance(metadata, dict):
            metadata[OWNER_KEY] = ctx.user.identity
        return owner_filter(ctx)

    async def read_shared_assistants(ctx: Auth.types.AuthContext, value: Any) -> Any:
        return None  # the graphs' assistants are the same for everyone

    auth.on.assistants.read(read_shared_assistants)
    auth.on.assistants.search(read_shared_assistants)

    @auth.on.store
    async def own_namespace(ctx: Auth.types.AuthContext, value: Any) -> Any:
        namespace = tuple(value.get("namespace") or ())
        if namespace[:1] != (ctx.user.identity,):
            value["namespace"] = (ctx.user.identity, *namespace)
        return None

    @auth.on
    async def deny_everything_else(ctx: Auth.types.AuthContext, value: Any) -> Any:
        raise Auth.exceptions.HTTPException(
            status_code=403, detail=f"{ctx.resource}.{ctx.action} is not allowed on this server"
        )

    return auth


# --- what langgraph.json names -----------------------------------------------------------------
resources = ServerResources(build_at_start=tuple(_DEFAULT_GRAPHS))
app = create_app(resources)
auth = create_auth(resources)


async def chat_graph() -> Pregel:
    """Return the chat graph (built at start, shared by every run)."""
    return await resources.agraph("chat")


async def synthesis_graph() -> Pregel:
    """Return the persona-synthesis graph (built at start, shared by every run)."""
    return await resources.agraph("synthesis")
